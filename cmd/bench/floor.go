package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// floorSessions is the number of concurrent sessions of the raw SQL floor, as
// the issue specifies it.
const floorSessions = 2

// floorLedgerDDL is the floor's own ledger, with the columns of the product's
// tenant_cleanup.ledger, created in the floor's control-plane clone before
// the clock starts.
const floorLedgerDDL = `CREATE SCHEMA IF NOT EXISTS bench_floor;
CREATE TABLE IF NOT EXISTS bench_floor.ledger (
    tenant_id text PRIMARY KEY, cleaned_at timestamptz NOT NULL DEFAULT now(), requested_by text,
    marked_at timestamptz, documents_at_marking bigint, users_at_marking bigint, last_activity_at timestamptz,
    tenant_created_at timestamptz, application_status text, stripe_customer_id text, schema_existed boolean,
    relations_dropped integer, public_rows_deleted bigint, control_rows_deleted jsonb, cleaned_by text)`

// The raw statements of one cleanup, in the fewest round trips that still do
// every piece of work the issue lists: 2 on the control plane, 5 on the data
// plane (6 for a tenant with Craft), each its own (implicit) transaction.
const (
	floorStatus = `SELECT application_status, created_at FROM public.tenant WHERE tenant_id = $1`
	// %[1]s: quoted schema
	floorActivity = `SELECT (SELECT max(time_sent) FROM %[1]s.chat_message WHERE message_type = 'USER'),
       (SELECT count(*) FROM %[1]s.document), (SELECT count(*) FROM %[1]s."user"),
       to_regclass($1) IS NOT NULL`
	floorCraft = `SELECT max(last_activity_at) FROM %[1]s.build_session`
	floorMark  = `WITH canceled AS (
    UPDATE %[1]s.index_attempt SET status = 'CANCELED', time_updated = now() WHERE status = 'NOT_STARTED' RETURNING 1
), stopping AS (
    UPDATE %[1]s.index_attempt SET cancellation_requested = true, time_updated = now()
    WHERE status = 'IN_PROGRESS' AND cancellation_requested IS NOT TRUE RETURNING 1
), deleting AS (
    UPDATE %[1]s.connector_credential_pair SET status = 'DELETING' WHERE status <> 'DELETING' RETURNING 1
)
SELECT (SELECT count(*) FROM canceled) + (SELECT count(*) FROM stopping) + (SELECT count(*) FROM deleting)`
	floorDrain = `SELECT (SELECT count(*) FROM %[1]s.connector_credential_pair),
       (SELECT count(*) FROM (SELECT 1 FROM %[1]s.document LIMIT 6) d)`
	floorDrop   = `DROP SCHEMA %[1]s CASCADE`
	floorPublic = `WITH oauth AS (DELETE FROM public.user_tenant_mapping_oauth_account WHERE tenant_id = $1 RETURNING 1),
     mapping AS (DELETE FROM public.user_tenant_mapping WHERE tenant_id = $1 RETURNING 1),
     shard AS (DELETE FROM public.tenant_shard WHERE tenant_id = $1 RETURNING 1),
     anon AS (DELETE FROM public.tenant_anonymous_user_path WHERE tenant_id = $1 RETURNING 1),
     invites AS (DELETE FROM public.tenant_invite_counter WHERE tenant_id = $1 RETURNING 1),
     sso AS (DELETE FROM public.tenant_sso_domain WHERE tenant_id = $1 RETURNING 1)
SELECT (SELECT count(*) FROM oauth) + (SELECT count(*) FROM mapping) + (SELECT count(*) FROM shard)
     + (SELECT count(*) FROM anon) + (SELECT count(*) FROM invites) + (SELECT count(*) FROM sso)`
	// $1 tenant, $2 documents, $3 users, $4 last activity, $5 public rows
	floorControl = `WITH n AS (DELETE FROM public.tenant_notification WHERE tenant_id = $1 RETURNING 1),
     c AS (DELETE FROM public.tenant_config WHERE tenant_id = $1 RETURNING 1),
     s AS (DELETE FROM public.subscription WHERE tenant_id = $1 RETURNING 1),
     t AS (DELETE FROM public.tenant WHERE tenant_id = $1 RETURNING created_at, application_status, stripe_customer_id)
INSERT INTO bench_floor.ledger (tenant_id, requested_by, marked_at, documents_at_marking, users_at_marking,
    last_activity_at, tenant_created_at, application_status, stripe_customer_id, schema_existed,
    public_rows_deleted, control_rows_deleted, cleaned_by)
SELECT $1, 'bench', now(), $2, $3, $4, t.created_at, t.application_status, t.stripe_customer_id, true, $5,
       jsonb_build_object('tenant_notification', (SELECT count(*) FROM n), 'tenant_config', (SELECT count(*) FROM c),
                          'subscription', (SELECT count(*) FROM s), 'tenant', 1),
       'bench-floor'
FROM t`
)

type floorResult struct {
	// RoundsPerMinute is every round's figure; the result is the best round.
	RoundsPerMinute []float64 `json:"rounds_tenants_per_minute"`
	Tenants         int       `json:"tenants"`
	Sessions        int       `json:"sessions"`
	Seconds         float64   `json:"seconds"`
	PerMinute       float64   `json:"tenants_per_minute"`
	DropRetries     int64     `json:"drop_retries"`
	StatementsPer   float64   `json:"statements_per_tenant"`
	// StatementSeconds is the time spent in each kind of statement, summed
	// over both sessions.
	StatementSeconds map[string]float64 `json:"statement_seconds"`
	CPU              cpuUse             `json:"cpu"`
}

// runFloor is (a): two sessions (a data-plane and a control-plane connection
// each) take tenants from a shared queue and do the raw SQL of a cleanup.
func (b *bench) runFloor(ctx context.Context) error {
	step("(a) raw SQL floor: %d sessions, %d tenants", floorSessions, len(b.fleet.ids))
	data, control, err := b.clone(ctx, "a", b.fleet.data, b.fleet.control)
	if err != nil {
		return err
	}
	defer b.dropDatabases(data, control)
	if err := execOnce(ctx, b.dbURL(control), floorLedgerDDL); err != nil {
		return err
	}

	type session struct {
		data, control *pgx.Conn
		stmt          map[string]time.Duration
		count         int64
	}
	sessions := make([]*session, floorSessions)
	for i := range sessions {
		s := &session{stmt: map[string]time.Duration{}}
		if s.data, err = floorConn(ctx, b.dbURL(data)); err != nil {
			return err
		}
		defer s.data.Close(context.Background())
		if s.control, err = floorConn(ctx, b.dbURL(control)); err != nil {
			return err
		}
		defer s.control.Close(context.Background())
		sessions[i] = s
	}
	queue := make(chan string, len(b.fleet.ids))
	for _, id := range b.fleet.ids {
		queue <- id
	}
	close(queue)
	var (
		retries  atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	pg0, pgAll0 := b.backendCPU(ctx, data, control), postgresCPU()
	cpu0 := sampleCPU()
	start := time.Now()
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range queue {
				n, err := floorCleanup(ctx, s.data, s.control, id, s.stmt, &retries)
				s.count += int64(n)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("%s: %w", id, err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	cpu := sampleCPU().since(cpu0)
	cpu.addPostgres(backendCPUSince(pg0, b.backendCPU(ctx, data, control)), backendCPUSince(pgAll0, postgresCPU()))
	if firstErr != nil {
		return firstErr
	}
	if err := b.verifyGone(ctx, data, control, "bench_floor.ledger", len(b.fleet.ids)); err != nil {
		return err
	}
	r := &floorResult{Tenants: len(b.fleet.ids), Sessions: floorSessions, Seconds: took.Seconds(),
		PerMinute: float64(len(b.fleet.ids)) / took.Minutes(), DropRetries: retries.Load(),
		StatementSeconds: map[string]float64{}, CPU: cpu}
	var stmts int64
	for _, s := range sessions {
		stmts += s.count
		for k, v := range s.stmt {
			r.StatementSeconds[k] += v.Seconds()
		}
	}
	r.StatementsPer = float64(stmts) / float64(len(b.fleet.ids))
	// This round's figures are logged; the results keep the best round.
	info("%d tenants in %s: %.0f tenants/min (%.1f statements per tenant, %d DROP retries)",
		r.Tenants, took.Round(100*time.Millisecond), r.PerMinute, r.StatementsPer, r.DropRetries)
	info("CPU: machine %.0f%% busy; PostgreSQL backends %.1f s, other PostgreSQL processes %.1f s, bench %.1f s, other %.1f s", cpu.BusyPercent,
		cpu.PostgresSeconds, cpu.PostgresOtherSeconds, cpu.BenchSeconds, cpu.OtherSeconds)
	for _, k := range sortedKeys(r.StatementSeconds) {
		info("  %-8s %6.1f s  (%.1f ms per tenant)", k, r.StatementSeconds[k], r.StatementSeconds[k]*1000/float64(r.Tenants))
	}
	r.RoundsPerMinute = []float64{r.PerMinute}
	if best := b.res.Floor; best != nil { // an earlier round: keep the better one
		r.RoundsPerMinute = append(best.RoundsPerMinute, r.PerMinute)
		if best.PerMinute > r.PerMinute {
			best.RoundsPerMinute = r.RoundsPerMinute
			r = best
		}
	}
	b.res.Floor = r
	return nil
}

// floorConn sends each statement in one round trip (Parse/Bind/Execute
// without a named prepared statement): the statements differ per tenant, so
// preparing them would only add a round trip.
func floorConn(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	return pgx.ConnectConfig(ctx, cfg)
}

// floorCleanup does the raw work of one cleanup and returns the number of
// statements it sent.
func floorCleanup(ctx context.Context, data, control *pgx.Conn, id string, stmt map[string]time.Duration, retries *atomic.Int64) (int, error) {
	s := quoteIdent(id)
	n := 0
	timed := func(name string, fn func() error) error {
		t := time.Now()
		err := fn()
		stmt[name] += time.Since(t)
		n++
		return err
	}
	var (
		status     string
		created    time.Time
		lastQuery  *time.Time
		lastCraft  *time.Time
		docs, user int64
		hasCraft   bool
	)
	if err := timed("status", func() error {
		return control.QueryRow(ctx, floorStatus, id).Scan(&status, &created)
	}); err != nil {
		return n, err
	}
	if err := timed("activity", func() error {
		return data.QueryRow(ctx, fmt.Sprintf(floorActivity, s), s+".build_session").Scan(&lastQuery, &docs, &user, &hasCraft)
	}); err != nil {
		return n, err
	}
	if hasCraft {
		if err := timed("activity", func() error {
			return data.QueryRow(ctx, fmt.Sprintf(floorCraft, s)).Scan(&lastCraft)
		}); err != nil {
			return n, err
		}
	}
	cutoff := time.Now().Add(-90 * 24 * time.Hour)
	last := lastQuery
	if lastCraft != nil && (last == nil || lastCraft.After(*last)) {
		last = lastCraft
	}
	if status != "GATED_ACCESS" || !created.Before(cutoff) || (last != nil && !last.Before(cutoff)) {
		return n, fmt.Errorf("not eligible (status %s, created %s, last activity %v)", status, created, last)
	}
	var changed int64
	if err := timed("mark", func() error { return data.QueryRow(ctx, fmt.Sprintf(floorMark, s)).Scan(&changed) }); err != nil {
		return n, err
	}
	var pairs, left int64
	if err := timed("drain", func() error { return data.QueryRow(ctx, fmt.Sprintf(floorDrain, s)).Scan(&pairs, &left) }); err != nil {
		return n, err
	}
	if pairs > 0 || left > 5 {
		return n, fmt.Errorf("not drained: %d pairs, %d documents", pairs, left)
	}
	if err := timed("drop", func() error {
		for attempt := 0; ; attempt++ {
			_, err := data.Exec(ctx, fmt.Sprintf(floorDrop, s))
			var pgErr *pgconn.PgError
			// out of shared memory: the lock table is shared with whatever
			// else runs on the server; try again.
			if err != nil && errors.As(err, &pgErr) && pgErr.Code == "53200" && attempt < 20 {
				retries.Add(1)
				time.Sleep(200 * time.Millisecond)
				continue
			}
			return err
		}
	}); err != nil {
		return n, err
	}
	var public int64
	if err := timed("public", func() error { return data.QueryRow(ctx, floorPublic, id).Scan(&public) }); err != nil {
		return n, err
	}
	var lastAct any
	if last != nil {
		lastAct = *last
	}
	if err := timed("control", func() error {
		tag, err := control.Exec(ctx, floorControl, id, docs, user, lastAct, public)
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("ledger insert wrote %d rows", tag.RowsAffected())
		}
		return err
	}); err != nil {
		return n, err
	}
	return n, nil
}

func execOnce(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// verifyGone checks that every tenant of the fleet is gone from both planes
// and has its ledger row.
func (b *bench) verifyGone(ctx context.Context, data, control, ledger string, n int) error {
	d, err := pgx.Connect(ctx, b.dbURL(data))
	if err != nil {
		return err
	}
	defer d.Close(ctx)
	var schemas, public int64
	if err := d.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\_%'),
		(SELECT count(*) FROM public.user_tenant_mapping) + (SELECT count(*) FROM public.user_tenant_mapping_oauth_account)
		+ (SELECT count(*) FROM public.tenant_shard) + (SELECT count(*) FROM public.tenant_anonymous_user_path)
		+ (SELECT count(*) FROM public.tenant_invite_counter) + (SELECT count(*) FROM public.tenant_sso_domain)`).Scan(&schemas, &public); err != nil {
		return err
	}
	c, err := pgx.Connect(ctx, b.dbURL(control))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var tenants, rows, ledgerRows int64
	if err := c.QueryRow(ctx, `SELECT (SELECT count(*) FROM public.tenant),
		(SELECT count(*) FROM public.subscription) + (SELECT count(*) FROM public.tenant_config) + (SELECT count(*) FROM public.tenant_notification),
		(SELECT count(*) FROM `+ledger+`)`).Scan(&tenants, &rows, &ledgerRows); err != nil {
		return err
	}
	if schemas != 0 || public != 0 || tenants != 0 || rows != 0 || ledgerRows != int64(n) {
		return fmt.Errorf("verification failed: %d tenant schemas, %d public rows, %d control-plane tenants and %d dependent rows left; %d ledger rows (want %d)",
			schemas, public, tenants, rows, ledgerRows, n)
	}
	info("verified: no tenant schema, public row or control-plane row left; %d ledger rows", ledgerRows)
	return nil
}
