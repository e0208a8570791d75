package testenv

import (
	"context"
	"testing"
	"time"
)

// Tenant describes one fixture tenant to create on both planes.
type Tenant struct {
	ID string
	// Filler is the number of filler tables (a real tenant has about 130).
	Filler int
	// Users, Pairs and DocsPerPair are passed to fixture.seed_tenant.
	Users, Pairs, DocsPerPair int
	// LastQuery and LastCraft are the newest USER chat message and Craft
	// session; zero means none (and, for Craft, no build_session table).
	LastQuery, LastCraft time.Time
	// Status is the control-plane application_status; empty means no
	// control-plane row at all.
	Status string
	// Created is the control-plane created_at.
	Created time.Time
	// NoSchema skips the data-plane schema (public rows are still seeded).
	NoSchema bool
}

// DaysAgo is now minus n days.
func DaysAgo(n int) time.Time { return time.Now().Add(-time.Duration(n) * 24 * time.Hour) }

// CreateTenant builds tn with the fixture's own functions.
func (d *Databases) CreateTenant(t testing.TB, tn Tenant) {
	t.Helper()
	ctx := context.Background()
	if tn.Users == 0 {
		tn.Users = 2
	}
	if tn.Created.IsZero() {
		tn.Created = DaysAgo(400)
	}
	var lastQuery, lastCraft any
	if !tn.LastQuery.IsZero() {
		lastQuery = tn.LastQuery
	}
	if !tn.LastCraft.IsZero() {
		lastCraft = tn.LastCraft
	}
	if _, err := d.Data.Exec(ctx, "SELECT fixture.create_tenant($1, $2)", tn.ID, tn.Filler); err != nil {
		t.Fatalf("create tenant %s: %v", tn.ID, err)
	}
	if _, err := d.Data.Exec(ctx, "SELECT fixture.seed_tenant($1, $2, $3, $4, $5, $6)",
		tn.ID, tn.Users, tn.Pairs, tn.DocsPerPair, lastQuery, lastCraft); err != nil {
		t.Fatalf("seed tenant %s: %v", tn.ID, err)
	}
	if tn.NoSchema {
		d.ExecData(t, `DROP SCHEMA "`+tn.ID+`" CASCADE`)
	}
	if tn.Status != "" {
		if _, err := d.Control.Exec(ctx, "SELECT fixture_control_tenant($1, $2, $3)", tn.ID, tn.Status, tn.Created); err != nil {
			t.Fatalf("control-plane tenant %s: %v", tn.ID, err)
		}
	}
}

// ExecData runs sql on the data plane, failing the test on error.
func (d *Databases) ExecData(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := d.Data.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("data plane: %s: %v", sql, err)
	}
}

// ExecControl runs sql on the control plane, failing the test on error.
func (d *Databases) ExecControl(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := d.Control.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("control plane: %s: %v", sql, err)
	}
}

// DrainStep runs one round of the fixture's simulation of Onyx's background
// deletion and returns the documents left.
func (d *Databases) DrainStep(t testing.TB, id string, maxDocs int) int64 {
	t.Helper()
	var left int64
	if err := d.Data.QueryRow(context.Background(), "SELECT fixture.drain_step($1, $2)", id, maxDocs).Scan(&left); err != nil {
		t.Fatalf("drain_step %s: %v", id, err)
	}
	return left
}

// Fingerprint is fixture.fingerprint: equal before and after means untouched.
func (d *Databases) Fingerprint(t testing.TB, id string) string {
	t.Helper()
	var fp string
	if err := d.Data.QueryRow(context.Background(), "SELECT fixture.fingerprint($1)", id).Scan(&fp); err != nil {
		t.Fatalf("fingerprint %s: %v", id, err)
	}
	return fp
}

// ControlRows is a digest of the tenant's control-plane rows in every table.
func (d *Databases) ControlRows(t testing.TB, id string) string {
	t.Helper()
	var digest string
	err := d.Control.QueryRow(context.Background(), `
		SELECT coalesce((SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM tenant x WHERE tenant_id = $1), '-')
		    || coalesce((SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM subscription x WHERE tenant_id = $1), '-')
		    || coalesce((SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM tenant_config x WHERE tenant_id = $1), '-')
		    || coalesce((SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM tenant_notification x WHERE tenant_id = $1), '-')`,
		id).Scan(&digest)
	if err != nil {
		t.Fatalf("control rows %s: %v", id, err)
	}
	return digest
}

// Count runs a count query on pool-less SQL against the data plane.
func (d *Databases) CountData(t testing.TB, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := d.Data.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("data plane: %s: %v", sql, err)
	}
	return n
}

// CountControl runs a count query against the control plane.
func (d *Databases) CountControl(t testing.TB, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := d.Control.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("control plane: %s: %v", sql, err)
	}
	return n
}

// PublicRows counts the tenant's rows in every public table the cleanup deletes.
func (d *Databases) PublicRows(t testing.TB, id string) int64 {
	t.Helper()
	return d.CountData(t, `SELECT
		(SELECT count(*) FROM public.user_tenant_mapping WHERE tenant_id = $1) +
		(SELECT count(*) FROM public.user_tenant_mapping_oauth_account WHERE tenant_id = $1) +
		(SELECT count(*) FROM public.tenant_shard WHERE tenant_id = $1) +
		(SELECT count(*) FROM public.tenant_anonymous_user_path WHERE tenant_id = $1) +
		(SELECT count(*) FROM public.tenant_invite_counter WHERE tenant_id = $1) +
		(SELECT count(*) FROM public.tenant_sso_domain WHERE tenant_id = $1)`, id)
}

// SchemaExists reports whether the tenant's schema is on the data plane.
func (d *Databases) SchemaExists(t testing.TB, id string) bool {
	t.Helper()
	return d.CountData(t, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", id) == 1
}

// RecordDroppedSchema writes, as this pipeline does when it drops a schema,
// the tenant's record of a drop on the data plane: the evidence that lets
// the pipeline complete a tenant whose schema is gone. Use it with
// Tenant.NoSchema for an interrupted cleanup; the pipeline's table must
// exist (dataplane.Store.Ensure, as the services run at start).
func (d *Databases) RecordDroppedSchema(t testing.TB, id string) {
	t.Helper()
	d.ExecData(t, `INSERT INTO tenant_cleanup.progress (tenant_id, requested_by, marked_at, last_marked_at,
		documents_at_marking, users_at_marking, drop_started_at, drop_finished_at, relations_dropped)
		VALUES ($1, 'analyzer', now() - interval '1 hour', now() - interval '1 hour', 0, 2, now(), now(), 40)`, id)
}
