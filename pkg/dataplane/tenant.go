package dataplane

import (
	"context"
	"fmt"
	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgschema"
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
	// SchemaExists is true when a schema named after the tenant exists;
	// SchemaOID is its oid.
	SchemaExists bool
	SchemaOID    int64
	// MissingTables lists required tables the schema lacks.
	MissingTables []string
	// HasCraft is true when the schema has a build_session table.
	HasCraft bool
	// ShardName is the tenant's public.tenant_shard row, "" when it has none.
	ShardName string
	// Record is this pipeline's record of the tenant.
	Record Record
	// Forgotten is true when Inspect forgot the record because the schema
	// of the tenant's name is another copy than the one it was about.
	Forgotten bool
	// Underway is true when the schema whose drop this pipeline began in
	// several transactions still exists, under its quarantine name
	// (Record.Quarantine): the tenant passed the final look then, and that
	// drop is completed without one.
	Underway bool
	Activity Activity
	// Pairs is the number of connector-credential pairs left.
	Pairs int64
}

// Problem says why a drop this pipeline began cannot be completed by
// itself ("" when nothing stands in the way): the schema being dropped is
// gone without this pipeline finishing it (dropped or renamed by someone,
// or a database restored without it), or the drop was begun by an earlier
// version that dropped the batches under the tenant's own name.
func (s Snapshot) Problem() string {
	r := s.Record
	switch {
	case !r.DropStarted() || r.DropFinished() || s.Underway:
		return ""
	case r.legacyUnderway() && !s.SchemaExists:
		return "" // dropped by hand: completed from the record
	case r.legacyUnderway():
		return "a drop begun by an earlier version of this tool was interrupted, under the schema's own name: this version " +
			"cannot tell that schema from a restored copy. Check the schema: if it is the half-dropped tenant, drop it " +
			"(DROP SCHEMA … CASCADE), then request the tenant again to complete its cleanup"
	}
	return "its drop began at " + r.DropStartedAt.UTC().Format(time.RFC3339) + " but the schema being dropped (" +
		r.Quarantine() + ") is gone without this pipeline finishing it (dropped or renamed by someone, or a database " +
		"restored without it): left for review"
}

// Drain is what the drain check looks at, from the same read: a tenant
// without a schema has nothing left to drain.
func (s Snapshot) Drain() tenant.Drain {
	if !s.SchemaExists {
		return tenant.Drain{}
	}
	return tenant.Drain{SchemaExists: true, Pairs: s.Pairs, Documents: s.Activity.Documents}
}

// Inspect reads the tenant's schema, activity, shard placement and record.
// A record about another copy of the schema than the one of the tenant's
// name (see Record.AboutAnotherCopy: a schema restored or recreated after
// its marking, after its drop began, or after an operator confirmed its
// completion) is forgotten, for good: what it says about the earlier copy
// (marked, dropping, confirmed) never counts for this one, even if it is
// renamed away later. Only a drop still under way is kept, to be completed.
func (t *TenantSession) Inspect(ctx context.Context) (Snapshot, error) {
	snap, err := t.inspect(ctx)
	if isGone(err) { // dropped between the catalog read and the activity read
		snap, err = t.inspect(ctx)
	}
	if err == nil && snap.SchemaExists && !snap.Underway && snap.Record.AboutAnotherCopy(snap.SchemaOID) {
		if _, err = t.conn.Exec(ctx, query("forget", ""), string(t.id)); err == nil {
			snap.Record, err = readRecord(ctx, t.conn, t.id)
			snap.Forgotten = true
		}
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("inspect %s: %w", t.id, pgerr.Kind(err))
	}
	return snap, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (t *TenantSession) inspect(ctx context.Context) (Snapshot, error) {
	var (
		snap   Snapshot
		tables []string
		shard  *string
		err    error
	)
	if err := t.conn.QueryRow(ctx, t.store.catalogQuery(), string(t.id)).Scan(&snap.SchemaExists, &snap.SchemaOID, &tables, &shard); err != nil {
		return Snapshot{}, err
	}
	if shard != nil {
		snap.ShardName = *shard
	}
	if snap.Record, err = readRecord(ctx, t.conn, t.id); err != nil {
		return Snapshot{}, err
	}
	if q := snap.Record.Quarantine(); q != "" {
		if err := t.conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", q).Scan(&snap.Underway); err != nil {
			return Snapshot{}, err
		}
	}
	if !snap.SchemaExists || snap.Record.legacyUnderway() {
		return snap, nil // nothing live to read (an old version's drop under way keeps its name)
	}
	snap.HasCraft = slices.Contains(tables, "build_session")
	snap.MissingTables = missing(tables)
	if len(snap.MissingTables) > 0 {
		return snap, nil
	}
	a, pairs, err := readActivity(ctx, t.conn, t.id, snap.HasCraft)
	snap.Activity, snap.Pairs = a, pairs
	return snap, err
}

// missing lists the required tables that tables lacks.
func missing(tables []string) []string {
	var out []string
	for _, r := range requiredTables {
		if !slices.Contains(tables, r) {
			out = append(out, r)
		}
	}
	return out
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
	sch := schema(id)
	craft := "NULL::timestamptz"
	if hasCraft {
		craft = "(SELECT max(last_activity_at) FROM " + sch + ".build_session)"
	}
	var b strings.Builder
	for _, part := range activitySQL() {
		switch part {
		case "{{schema}}":
			b.WriteString(sch)
		case "{{craft}}":
			b.WriteString(craft)
		default:
			b.WriteString(part)
		}
	}
	return b.String()
}

// activitySQL is sql/activity.sql without its comments (it is sent once per
// tenant), cut before and after each {{schema}} and {{craft}}.
var activitySQL = sync.OnceValue(func() []string {
	var lines []string
	for _, line := range strings.Split(query("activity", ""), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "--") {
			lines = append(lines, t)
		}
	}
	var parts []string
	rest := strings.Join(lines, " ")
	for rest != "" {
		i := strings.Index(rest, "{{")
		if i < 0 {
			parts = append(parts, rest)
			break
		}
		j := strings.Index(rest[i:], "}}") + i + 2
		if name := rest[i:j]; name == "{{schema}}" || name == "{{craft}}" {
			parts = append(parts, rest[:i], name)
		} else {
			parts = append(parts, rest[:j]) // {{pairs}}: the caller's
		}
		rest = rest[j:]
	}
	return parts
})

// CheckContained refuses the tenant (a tenant.RefusedError naming them) if
// a DROP SCHEMA … CASCADE would remove or change objects outside its schema
// (see guard.go). It takes no lock: every drop transaction checks again.
func (t *TenantSession) CheckContained(ctx context.Context) error {
	exists, oid, _, err := liveSchema(ctx, t.conn, t.id)
	if err != nil || !exists {
		return err
	}
	c, err := walkClosure(ctx, t.conn, oid)
	if err != nil {
		return fmt.Errorf("dependencies of %s: %w", t.id, pgerr.Kind(err))
	}
	return c.refusal(t.id)
}

type rowsQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// MarkResult counts what marking changed.
type MarkResult struct {
	CanceledAttempts int64 // NOT_STARTED → CANCELED
	StoppingAttempts int64 // IN_PROGRESS, cancellation requested
	DeletingPairs    int64 // pairs newly set to DELETING
	Pairs            int64 // pairs in the tenant
	// Facts are what the final look read under lock.
	Facts Facts
	// SchemaGone is true when there was no schema to mark.
	SchemaGone bool
}

// Facts are what a final look reads, under locks that keep them from
// changing until the step it guards commits.
type Facts struct {
	Activity Activity
	// Pairs is the number of connector-credential pairs.
	Pairs int64
}

// activityTables are the tables whose rows the final look reads: locked in
// SHARE mode (no writes until commit) by marking and by the first drop
// transaction, build_session only where it exists.
var activityTables = []string{"chat_message", "build_session", "connector_credential_pair", "document", "index_attempt", "user"}

// Mark marks the tenant for Onyx's background deletion, in one transaction
// that makes its final look atomic with the marking: it lists the schema's
// tables afresh, locks the tables it reads against writes, reads the
// activity, documents and pairs, and hands them to check (an error from it
// aborts the transaction and is returned); then it marks, records the marking
// (requested by requestedBy) in the tenant's record, and lists the tables
// again: an activity table created meanwhile (say build_session) was not
// looked at, so the transaction is rolled back and "later" returned. A tenant
// whose schema is gone has nothing to mark (SchemaGone, no error).
func (t *TenantSession) Mark(ctx context.Context, requestedBy string, check func(Facts) error) (MarkResult, error) {
	var res MarkResult
	err := pgx.BeginTxFunc(ctx, t.conn, t.beginWithLockTimeout(), func(tx pgx.Tx) error {
		exists, oid, tables, err := liveSchema(ctx, tx, t.id)
		if err != nil || !exists {
			res.SchemaGone = !exists
			return err
		}
		if m := missing(tables); len(m) > 0 {
			return tenant.Refuse(t.id, "schema lacks table(s) %s: not a tenant schema this tool understands", strings.Join(m, ", "))
		}
		if rec, err := readRecord(ctx, tx, t.id); err != nil {
			return err
		} else if rec.AboutAnotherCopy(oid) || rec.Quarantine() != "" {
			return tenant.Later(time.Second, "the tenant's schema was replaced by another copy since it was looked at", nil)
		}
		hasCraft := slices.Contains(tables, "build_session")
		if _, err := tx.Exec(ctx, lockActivitySQL(string(t.id), tables, "SHARE")); err != nil {
			return err
		}
		a, pairs, err := readActivity(ctx, tx, t.id, hasCraft)
		if err != nil {
			return err
		}
		res.Facts = Facts{Activity: a, Pairs: pairs}
		if err := check(res.Facts); err != nil {
			return err
		}
		if err := t.markRows(ctx, tx, &res); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, query("record_marked", ""), string(t.id), requestedBy, a.Documents, a.Users, oid); err != nil {
			return err
		}
		_, _, after, err := liveSchema(ctx, tx, t.id)
		if err != nil {
			return err
		}
		if !hasCraft && slices.Contains(after, "build_session") {
			return tenant.Later(time.Second, "a build_session table was created while the tenant was being marked", nil)
		}
		return nil
	})
	if err != nil {
		return MarkResult{}, fmt.Errorf("mark %s: %w", t.id, pgerr.Kind(err))
	}
	return res, nil
}

// markedTables are the tables mark.sql updates.
var markedTables = []string{"index_attempt", "connector_credential_pair"}

// markRows runs mark.sql in tx, refusing the tenant first if the updates
// would run code of another role (a trigger on the tenant's tables, say) with
// the pipeline's privileges, and after if a trigger changed the session (see
// pgschema.CheckCode).
func (t *TenantSession) markRows(ctx context.Context, tx pgx.Tx, res *MarkResult) error {
	names := make([]string, len(markedTables))
	for i, name := range markedTables {
		names[i] = pgx.Identifier{string(t.id), name}.Sanitize()
	}
	guard, err := pgschema.CheckCode(ctx, tx, pgschema.DML{Update: names})
	if err != nil {
		return err
	}
	if len(guard.Untrusted) > 0 {
		return tenant.Refuse(t.id, "marking the tenant would run %s: %s",
			tenant.CleanText(strings.Join(guard.Untrusted, ", "), 1000), pgschema.Advice)
	}
	if err := tx.QueryRow(ctx, query("mark", t.id), oneShot).Scan(
		&res.CanceledAttempts, &res.StoppingAttempts, &res.DeletingPairs, &res.Pairs); err != nil {
		return err
	}
	changed, err := guard.Changed(ctx, tx)
	if err != nil || changed == "" {
		return err
	}
	return tenant.Refuse(t.id, "a trigger that ran when the tenant was marked changed the session: %s; nothing was marked: "+
		"review the triggers of the tenant's %s, then request the tenant again",
		tenant.CleanText(changed, 300), strings.Join(markedTables, " and "))
}

// lockActivitySQL locks, in mode, the activity tables among tables (of the
// schema named schemaName).
func lockActivitySQL(schemaName string, tables []string, mode string) string {
	var names []string
	for _, name := range activityTables {
		if slices.Contains(tables, name) {
			names = append(names, pgx.Identifier{schemaName, name}.Sanitize())
		}
	}
	return "LOCK TABLE " + strings.Join(names, ", ") + " IN " + mode + " MODE"
}

// beginWithLockTimeout begins a transaction and sets its lock_timeout in one
// round trip.
func (t *TenantSession) beginWithLockTimeout() pgx.TxOptions {
	return pgx.TxOptions{BeginQuery: "BEGIN; " + lockTimeoutSQL(t.store.opts.LockTimeout)}
}

// oneShot runs a statement whose text names one tenant's schema (so it is
// never sent twice) in one round trip, without preparing it and without
// filling the connection's statement cache.
const oneShot = pgx.QueryExecModeExec

func lockTimeoutSQL(d time.Duration) string {
	return fmt.Sprintf("SET LOCAL lock_timeout = %d", d.Milliseconds())
}

// PublicRows counts the rows deleted from each public table.
type PublicRows struct {
	OAuthAccounts, UserMappings, Shard, AnonymousPath, InviteCounter, SSODomains int64
}

// DeletePublicRows deletes the tenant's rows from the shared public tables in
// one transaction, and adds their number to the tenant's record in the same
// statement. Deleting rows that are already gone is not an error. (A drop
// deletes them in its look transaction; this completes a tenant whose
// schema is gone.)
func (t *TenantSession) DeletePublicRows(ctx context.Context) (PublicRows, error) {
	var r PublicRows
	if !t.store.Catalog() {
		return r, fmt.Errorf("delete public rows of %s: shard %q is not the catalog", t.id, t.store.Shard())
	}
	// None left, and the record says they were deleted (by the drop's look
	// transaction, or an earlier attempt): no transaction, no COMMIT.
	var (
		left     int64
		recorded bool
	)
	err := t.conn.QueryRow(ctx, publicRowsLeftSQL, string(t.id)).Scan(&left, &recorded)
	if err == nil && left == 0 && recorded {
		return r, nil
	}
	if err == nil {
		err = pgx.BeginTxFunc(ctx, t.conn, t.beginWithLockTimeout(), func(tx pgx.Tx) (err error) {
			r, err = deletePublicRows(ctx, tx, t.id)
			return err
		})
	}
	if err != nil {
		return PublicRows{}, fmt.Errorf("delete public rows of %s: %w", t.id, pgerr.Kind(err))
	}
	return r, nil
}

// publicRowsLeftSQL is how many public rows tenant $1 has, and whether its
// record says they were deleted once.
var publicRowsLeftSQL = "SELECT (\n" + query("public_row_count", "") + "\n), EXISTS (SELECT FROM tenant_cleanup.progress " +
	"WHERE tenant_id = $1 AND public_rows_deleted_at IS NOT NULL)"

// deletePublicRows deletes the tenant's public rows in tx. It refuses the
// tenant first if the delete would run code of another role (a trigger) with
// the pipeline's privileges, or if rows other than the tenant's (of a table
// this pipeline does not know, or of another tenant) reference them: with
// the tables locked against new triggers and the rows locked against new
// references (see pgschema.CheckCode and LockRows), so that neither can
// change before the delete. A row of the tenant that appeared since it was
// locked, or a trigger that changed the session, rolls the delete back.
func deletePublicRows(ctx context.Context, tx pgx.Tx, id tenant.ID) (PublicRows, error) {
	var r PublicRows
	guard, err := pgschema.CheckCode(ctx, tx, pgschema.DML{Delete: publicTableNames()})
	if err != nil {
		return r, err
	}
	if len(guard.Untrusted) > 0 {
		return r, tenant.Refuse(id, "deleting the tenant's public rows would run %s: %s",
			tenant.CleanText(strings.Join(guard.Untrusted, ", "), 1000), pgschema.Advice)
	}
	locked, err := pgschema.LockRows(ctx, tx, PublicTables, string(id))
	if err != nil {
		return r, err
	}
	found, err := pgschema.ForeignRows(ctx, tx, PublicTables, string(id))
	if err != nil {
		return r, err
	}
	if len(found) > 0 {
		return r, tenant.Refuse(id, "data-plane rows that are not the tenant's (of tables this pipeline does not know, or of other "+
			"tenants) reference the tenant's public rows: %s; review those rows, then request the tenant again",
			tenant.CleanText(strings.Join(found, ", "), 1000))
	}
	err = tx.QueryRow(ctx, query("delete_public_rows", ""), string(id)).Scan(
		&r.OAuthAccounts, &r.UserMappings, &r.Shard, &r.AnonymousPath, &r.InviteCounter, &r.SSODomains)
	if err != nil {
		return r, err
	}
	for table, n := range r.byTable() {
		if n > locked[table] {
			return r, tenant.Later(time.Second, "rows of the tenant appeared in public."+table+" while they were being deleted", nil)
		}
	}
	if changed, err := guard.Changed(ctx, tx); err != nil || changed != "" {
		if err == nil {
			err = tenant.Refuse(id, "a trigger that ran when the tenant's public rows were deleted changed the session: %s; "+
				"nothing was deleted: review the triggers of %s, then request the tenant again",
				tenant.CleanText(changed, 300), strings.Join(PublicTables, ", "))
		}
		return r, err
	}
	return r, nil
}

// publicTableNames are PublicTables, quoted and qualified.
func publicTableNames() []string {
	names := make([]string, len(PublicTables))
	for i, t := range PublicTables {
		names[i] = pgx.Identifier{"public", t}.Sanitize()
	}
	return names
}

// byTable maps each of PublicTables to its count.
func (r PublicRows) byTable() map[string]int64 {
	return map[string]int64{
		"user_tenant_mapping": r.UserMappings, "user_tenant_mapping_oauth_account": r.OAuthAccounts,
		"tenant_shard": r.Shard, "tenant_anonymous_user_path": r.AnonymousPath,
		"tenant_invite_counter": r.InviteCounter, "tenant_sso_domain": r.SSODomains,
	}
}

// Total is the number of public rows deleted.
func (r PublicRows) Total() int64 {
	return r.OAuthAccounts + r.UserMappings + r.Shard + r.AnonymousPath + r.InviteCounter + r.SSODomains
}

// FullyMarked reports whether marking the tenant again would change
// nothing: every pair DELETING, no index attempt left to cancel. It takes no
// lock (the marker uses it to leave a marked tenant alone); a tenant whose
// schema is gone or not understood is not fully marked.
func (s *Store) FullyMarked(ctx context.Context, id tenant.ID) (bool, error) {
	exists, _, tables, err := liveSchema(ctx, s.pool, id)
	if err != nil {
		return false, fmt.Errorf("data plane: look at %s: %w", id, pgerr.Kind(err))
	}
	if !exists || len(missing(tables)) > 0 {
		return false, nil
	}
	var left int64
	err = s.pool.QueryRow(ctx, query("unmarked", id), oneShot).Scan(&left)
	if isGone(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("data plane: look at %s: %w", id, pgerr.Kind(err))
	}
	return left == 0, nil
}

// SchemaExists reports whether a schema of the tenant's name is on this
// database, without locking anything.
func (s *Store) SchemaExists(ctx context.Context, id tenant.ID) (bool, error) {
	exists, _, _, err := liveSchema(ctx, s.pool, id)
	if err != nil {
		return false, fmt.Errorf("data plane: look at %s: %w", id, pgerr.Kind(err))
	}
	return exists, nil
}
