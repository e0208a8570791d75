package dataplane

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// requiredTables are the tables the pipeline reads or changes in a tenant
// schema; a schema lacking one is not a tenant schema we understand.
var requiredTables = []string{"chat_message", "connector_credential_pair", "document", "index_attempt", "user"}

// Activity is what a tenant did and holds.
type Activity struct {
	// LastQuery is the newest USER chat message; zero if none.
	LastQuery time.Time
	// LastCraft is the newest Craft build session activity; zero if none.
	LastCraft time.Time
	Documents int64
	Users     int64
}

// Last is the tenant's last activity: the later of LastQuery and LastCraft.
func (a Activity) Last() time.Time {
	if a.LastCraft.After(a.LastQuery) {
		return a.LastCraft
	}
	return a.LastQuery
}

// Snapshot is one tenant as the data plane has it.
type Snapshot struct {
	SchemaExists bool
	// MissingTables lists required tables the schema lacks.
	MissingTables []string
	// HasCraft is true when the schema has a build_session table.
	HasCraft bool
	// ShardName is the tenant's public.tenant_shard row, "" when it has none.
	ShardName string
	// DropStarted is true when this pipeline began dropping the schema and
	// was interrupted: the tenant passed every check then, and what is left
	// of it is completed without reading its (partly dropped) tables.
	DropStarted bool
	Activity    Activity
	// Pairs is the number of connector-credential pairs left.
	Pairs int64
}

// Drain is what the drain check looks at, from the same read: a schema whose
// drop began has nothing left to drain.
func (s Snapshot) Drain() tenant.Drain {
	if !s.SchemaExists || s.DropStarted {
		return tenant.Drain{}
	}
	return tenant.Drain{SchemaExists: true, Pairs: s.Pairs, Documents: s.Activity.Documents}
}

// Inspect reads the tenant's schema, activity and shard placement.
func (t *Tenant) Inspect(ctx context.Context) (Snapshot, error) {
	snap, err := inspect(ctx, t.conn, t.id)
	if isGone(err) { // dropped between the catalog read and the activity read
		snap, err = inspect(ctx, t.conn, t.id)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("inspect %s: %w", t.id, err)
	}
	return snap, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func inspect(ctx context.Context, q querier, id tenant.ID) (Snapshot, error) {
	var (
		snap   Snapshot
		tables []string
		shard  *string
	)
	if err := q.QueryRow(ctx, query("catalog", ""), string(id)).Scan(
		&snap.SchemaExists, &tables, &shard, &snap.DropStarted); err != nil {
		return Snapshot{}, err
	}
	if shard != nil {
		snap.ShardName = *shard
	}
	if !snap.SchemaExists || snap.DropStarted {
		return snap, nil
	}
	snap.HasCraft = slices.Contains(tables, "build_session")
	for _, r := range requiredTables {
		if !slices.Contains(tables, r) {
			snap.MissingTables = append(snap.MissingTables, r)
		}
	}
	if len(snap.MissingTables) > 0 {
		return snap, nil
	}
	a, pairs, err := readActivity(ctx, q, id, snap.HasCraft)
	snap.Activity, snap.Pairs = a, pairs
	return snap, err
}

// readActivity reads one tenant's activity and its connector-credential
// pairs in one statement.
func readActivity(ctx context.Context, q querier, id tenant.ID, hasCraft bool) (Activity, int64, error) {
	var (
		a                    Activity
		pairs                int64
		lastQuery, lastCraft *time.Time
	)
	err := q.QueryRow(ctx, tenantActivityQuery(id, hasCraft), oneShot).Scan(&lastQuery, &lastCraft, &a.Documents, &a.Users, &pairs)
	if lastQuery != nil {
		a.LastQuery = *lastQuery
	}
	if lastCraft != nil {
		a.LastCraft = *lastCraft
	}
	return a, pairs, err
}

// activityQuery is the analyzer's activity read of one tenant (four columns).
func activityQuery(id tenant.ID, hasCraft bool) string {
	return strings.ReplaceAll(activityTemplate(id, hasCraft), "{{pairs}}", "")
}

// tenantActivityQuery adds the tenant's pair count as a fifth column.
func tenantActivityQuery(id tenant.ID, hasCraft bool) string {
	return strings.ReplaceAll(activityTemplate(id, hasCraft), "{{pairs}}",
		", (SELECT count(*) FROM "+schema(id)+".connector_credential_pair)")
}

func activityTemplate(id tenant.ID, hasCraft bool) string {
	craft := "NULL::timestamptz"
	if hasCraft {
		craft = "(SELECT max(last_activity_at) FROM " + schema(id) + ".build_session)"
	}
	return strings.ReplaceAll(query("activity", id), "{{craft}}", craft)
}

// OutsideDependents lists (up to 20) objects outside the tenant's schema that
// depend on something inside it, described as Postgres describes them
// ("view public.v", "constraint x on table public.t"). Such a tenant is never
// marked or dropped: a DROP ... CASCADE would take those objects with it.
func (t *Tenant) OutsideDependents(ctx context.Context) ([]string, error) {
	deps, err := outsideDependents(ctx, t.conn, t.id)
	if err != nil {
		return nil, fmt.Errorf("dependencies of %s: %w", t.id, err)
	}
	return deps, nil
}

type rowsQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func outsideDependents(ctx context.Context, q rowsQuerier, id tenant.ID) ([]string, error) {
	rows, err := q.Query(ctx, query("outside_dependents", ""), string(id))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// MarkResult counts what marking changed.
type MarkResult struct {
	CanceledAttempts int64 // NOT_STARTED → CANCELED
	StoppingAttempts int64 // IN_PROGRESS, cancellation requested
	DeletingPairs    int64 // pairs newly set to DELETING
	Pairs            int64 // pairs in the tenant
}

// Mark marks the tenant for Onyx's background deletion in one transaction.
// pre is the tenant as Inspect read it (under this same lock); recheck runs
// inside the transaction on a fresh read of the tenant's activity, and an
// error from it aborts the transaction and is returned. A tenant whose schema
// is gone, or whose drop began, has nothing to mark (zero result, no error).
func (t *Tenant) Mark(ctx context.Context, pre Snapshot, recheck func(Activity) error) (MarkResult, error) {
	var res MarkResult
	if !pre.SchemaExists || pre.DropStarted {
		return res, nil
	}
	if len(pre.MissingTables) > 0 {
		return res, tenant.Refuse(t.id, "schema lacks table(s) %s", strings.Join(pre.MissingTables, ", "))
	}
	err := pgx.BeginTxFunc(ctx, t.conn, t.beginWithLockTimeout(), func(tx pgx.Tx) error {
		a, _, err := readActivity(ctx, tx, t.id, pre.HasCraft)
		if err != nil {
			return err
		}
		if err := recheck(a); err != nil {
			return err
		}
		return tx.QueryRow(ctx, query("mark", t.id), oneShot).Scan(
			&res.CanceledAttempts, &res.StoppingAttempts, &res.DeletingPairs, &res.Pairs)
	})
	if isGone(err) {
		return MarkResult{}, nil
	}
	if err != nil {
		return MarkResult{}, fmt.Errorf("mark %s: %w", t.id, later(err, "mark"))
	}
	return res, nil
}

// beginWithLockTimeout begins a transaction and sets its lock_timeout in one
// round trip.
func (t *Tenant) beginWithLockTimeout() pgx.TxOptions {
	return pgx.TxOptions{BeginQuery: "BEGIN; " + lockTimeoutSQL(t.store.opts.LockTimeout)}
}

// oneShot runs a statement whose text names one tenant's schema (so it is
// never sent twice) in one round trip, without preparing it and without
// filling the connection's statement cache.
const oneShot = pgx.QueryExecModeExec

func lockTimeoutSQL(d time.Duration) string {
	return fmt.Sprintf("SET LOCAL lock_timeout = %d", d.Milliseconds())
}

// Drain reads how far Onyx's background deletion has got: pairs left and
// documents left (counted up to maxLeftoverDocs+1).
func (t *Tenant) Drain(ctx context.Context, maxLeftoverDocs int64) (tenant.Drain, error) {
	d := tenant.Drain{SchemaExists: true}
	err := t.conn.QueryRow(ctx, query("drain", t.id), oneShot, maxLeftoverDocs+1).Scan(&d.Pairs, &d.Documents)
	if isGone(err) {
		return tenant.Drain{}, nil
	}
	if err != nil {
		return tenant.Drain{}, fmt.Errorf("drain check %s: %w", t.id, err)
	}
	return d, nil
}

// PublicRows counts the rows deleted from each public table.
type PublicRows struct {
	OAuthAccounts, UserMappings, Shard, AnonymousPath, InviteCounter, SSODomains int64
}

// DeletePublicRows deletes the tenant's rows from the shared public tables in
// one transaction. Deleting rows that are already gone is not an error.
func (t *Tenant) DeletePublicRows(ctx context.Context) (PublicRows, error) {
	var r PublicRows
	err := pgx.BeginTxFunc(ctx, t.conn, t.beginWithLockTimeout(), func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, query("delete_public_rows", ""), string(t.id)).Scan(
			&r.OAuthAccounts, &r.UserMappings, &r.Shard, &r.AnonymousPath, &r.InviteCounter, &r.SSODomains)
	})
	if err != nil {
		return PublicRows{}, fmt.Errorf("delete public rows of %s: %w", t.id, later(err, "delete public rows"))
	}
	return r, nil
}

// Total is the number of public rows deleted.
func (r PublicRows) Total() int64 {
	return r.OAuthAccounts + r.UserMappings + r.Shard + r.AnonymousPath + r.InviteCounter + r.SSODomains
}
