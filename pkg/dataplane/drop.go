package dataplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// locksPerRelation estimates the lock-table entries dropping one relation
// takes: the relation itself plus its row and array types, constraints,
// defaults and triggers (measured: a fixture table of 6 relations takes 18).
const locksPerRelation = 3

// DropResult says what Drop did.
type DropResult struct {
	// AlreadyGone is true when there was no schema to drop.
	AlreadyGone bool
	// Underway is true when the call completed a drop that had begun
	// earlier (and did nothing else).
	Underway bool
	// Relations is the number of tables, views and their indexes, TOAST
	// tables and sequences dropped by this call.
	Relations int
	// Transactions is the number of drop transactions it took.
	Transactions int
	// Facts are what the final look read under lock; Looked is false when
	// there was no final look because the drop was already under way (the
	// tenant passed its final look then).
	Facts  Facts
	Looked bool
	// PublicRows are the public rows the look transaction deleted.
	PublicRows PublicRows
}

// DropChecks are the caller's part of a drop.
type DropChecks struct {
	// Look judges the final look's facts, read in the first drop transaction
	// under locks that keep them from changing until it commits; an error
	// aborts it and is returned.
	Look func(Facts) error
	// Before, when set, runs before each drop transaction and again right
	// before it commits: the cleaner checks there that its control-plane
	// transaction, which holds the tenant's row (its status and hold), is
	// still alive.
	Before func(context.Context) error
	// Committed, when set, receives how long each drop transaction's
	// COMMIT took (the pacer reads the server's health from it).
	Committed func(time.Duration)
}

type dropRel struct {
	name         string
	kind         string // pg_class.relkind: r, p, v, m, f, S
	relations    int
	parent       string // the table of the schema it is a partition or child of
	referencedBy []string
}

// target is the schema a drop works on: the tenant's, found by its oid
// (the look transaction checks that it still has the tenant's name), or the
// one whose drop is under way, found by its quarantine name.
type target struct {
	oid  int64
	name string
}

// Drop removes the tenant's schema and everything in it, its rows in the
// shared public tables, and nothing else.
//
// A schema whose relations fit the lock budget is dropped in one
// transaction; a larger one in batches, each its own transaction within the
// budget: views first, then tables in reverse foreign-key order (a partition
// tree too big for one batch leaves first), the last batch with the schema.
// Every drop transaction runs checks.Before, takes one of the drop slots,
// runs its DDL under lock_timeout (a timeout returns a tenant.ErrLater
// error), locks its relations, walks the closure of the schema and refuses
// the tenant if anything outside it would be reached (guard.go), records
// what it drops in the tenant's record, drops, and checks the net before it
// commits.
//
// The first transaction of a drop that has not begun also makes the final
// look: with the tables it reads locked against writes (chat_message,
// build_session, connector_credential_pair, document, …), it reads the
// activity, documents and pairs and hands them to checks.Look, whose error
// aborts it; it deletes the tenant's public rows (refusing the tenant if a
// table this pipeline does not know, or another tenant's rows, reference them, or
// another role's trigger would run). A table, row or
// dependency created before that transaction commits is therefore either
// read by the look or makes the transaction fail (the net, or a fresh
// listing of the activity tables): never dropped unseen. When more
// transactions follow, the look transaction also renames the schema to a
// quarantine name (QuarantinePrefix and a random token kept in the record),
// so that from its commit nothing (Onyx, a user) can reach the tenant's data
// any more; the later transactions find the schema by that name, which
// nobody can take beforehand and which survives a dump and restore. A drop
// under way is completed without a look (Underway), and the call ends there:
// a schema that has taken the tenant's name meanwhile is another copy, for
// the caller to look at from the start.
func (t *TenantSession) Drop(ctx context.Context, checks DropChecks) (DropResult, error) {
	t.committed = checks.Committed
	defer func() { t.committed = nil }()
	res, err := t.drop(ctx, checks)
	if err != nil {
		return res, fmt.Errorf("drop schema %s: %w", t.id, pgerr.Kind(err))
	}
	return res, nil
}

func (t *TenantSession) drop(ctx context.Context, checks DropChecks) (DropResult, error) {
	var res DropResult
	rec, err := readRecord(ctx, t.conn, t.id)
	if err != nil {
		return res, err
	}
	// A drop that began and did not finish is completed, and nothing else.
	if q := rec.Quarantine(); q != "" {
		var exists bool
		if err := t.conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", q).Scan(&exists); err != nil {
			return res, err
		}
		if exists {
			res.Underway = true
			if err := t.dropSchema(ctx, target{name: q}, false, checks, &res); err != nil {
				return res, err
			}
			// A schema that has taken the tenant's name meanwhile is another
			// copy: the caller must not go on as if the tenant were gone.
			if again, _, _, err := liveSchema(ctx, t.conn, t.id); err != nil || !again {
				return res, err
			}
			return res, tenant.Later(time.Second, "completed the drop of an earlier copy of its schema ("+q+
				"); a schema of its name exists now, to be looked at from the start", nil)
		}
	}
	exists, oid, tables, err := liveSchema(ctx, t.conn, t.id)
	if err != nil {
		return res, err
	}
	if p := (Snapshot{Record: rec, SchemaExists: exists}).Problem(); p != "" {
		return res, tenant.Refuse(t.id, "%s", p)
	}
	if !exists {
		res.AlreadyGone = true
		return res, nil
	}
	if rec.AboutAnotherCopy(oid) {
		return res, tenant.Later(time.Second, "the tenant's schema was replaced by another copy since it was looked at", nil)
	}
	if m := missing(tables); len(m) > 0 {
		return res, tenant.Refuse(t.id, "schema lacks table(s) %s: not a tenant schema this tool understands", strings.Join(m, ", "))
	}
	return res, t.dropSchema(ctx, target{oid: oid, name: string(t.id)}, true, checks, &res)
}

// liveSchema is the schema named after the tenant: whether it exists, its
// oid, and which of the tables the cleanup reads it has.
func liveSchema(ctx context.Context, q querier, id tenant.ID) (exists bool, oid int64, tables []string, err error) {
	var shard *string
	err = q.QueryRow(ctx, schemaQuery(), string(id)).Scan(&exists, &oid, &tables, &shard)
	return exists, oid, tables, err
}

// dropSchema drops the schema s in one or more transactions (see Drop);
// with look, the first one makes the final look.
func (t *TenantSession) dropSchema(ctx context.Context, s target, look bool, checks DropChecks, res *DropResult) error {
	if s.oid == 0 {
		if err := t.conn.QueryRow(ctx, "SELECT oid::int8 FROM pg_namespace WHERE nspname = $1", s.name).Scan(&s.oid); err != nil {
			return err
		}
	}
	rows, err := t.conn.Query(ctx, query("drop_plan", ""), s.oid)
	if err != nil {
		return err
	}
	rels, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (dropRel, error) {
		var (
			d      dropRel
			parent *string
		)
		err := r.Scan(&d.name, &d.kind, &d.relations, &parent, &d.referencedBy)
		if parent != nil {
			d.parent = *parent
		}
		return d, err
	})
	if err != nil {
		return err
	}
	var first []string
	if look { // the look transaction drops the activity tables itself
		first = lookedTables
	}
	batches := planBatches(rels, t.store.opts.LockBudget, first)
	if len(batches) == 0 {
		batches = [][]dropRel{nil} // an empty schema: one transaction for the checks and the drop
	}
	var tables []string
	if look {
		_, _, tables, err = liveSchema(ctx, t.conn, t.id)
		if err != nil {
			return err
		}
	}
	for i, batch := range batches {
		b := dropBatch{t: t, schema: s, rels: batch, tables: tables, look: look && i == 0, last: i == len(batches)-1,
			alive: checks.Before}
		if checks.Before != nil {
			if err := checks.Before(ctx); err != nil {
				return err
			}
		}
		err := t.inDropTx(ctx, func(tx pgx.Tx) error { return b.run(ctx, tx, checks.Look, res) })
		if err != nil {
			return err
		}
		if b.look && b.quarantine != "" {
			s = target{name: b.quarantine} // found by this name from now on
		}
		res.Transactions++
		for _, r := range batch {
			res.Relations += r.relations
		}
		if t.store.afterDropTx != nil {
			if err := t.store.afterDropTx(res.Transactions); err != nil {
				return err
			}
		}
	}
	return nil
}

// lookedTables are the activity tables: a batched drop drops them in its
// look transaction, so that one found in the schema later was created after
// the look.
var lookedTables = []string{"chat_message", "build_session"}

// dropBatch is one drop transaction (see Drop).
type dropBatch struct {
	t      *TenantSession
	schema target
	rels   []dropRel
	// tables are the activity tables the schema had when the drop was
	// planned (for the look).
	tables     []string
	look, last bool
	// quarantine is the name the look transaction gives the schema when
	// more transactions follow.
	quarantine string
	// alive, when set, runs again right before the commit (DropChecks.Before).
	alive func(context.Context) error
}

func (b *dropBatch) run(ctx context.Context, tx pgx.Tx, judge func(Facts) error, res *DropResult) error {
	t := b.t
	// The schema is the one the drop planned: the look transaction's still
	// has the tenant's name and the oid looked at; a later one's still has
	// its quarantine name.
	var err error
	if b.look {
		var name string
		err = tx.QueryRow(ctx, "SELECT nspname::text FROM pg_namespace WHERE oid = $1::oid", b.schema.oid).Scan(&name)
		if err == nil && name != b.schema.name {
			err = pgx.ErrNoRows
		}
	} else {
		err = tx.QueryRow(ctx, "SELECT oid::int8 FROM pg_namespace WHERE nspname = $1", b.schema.name).Scan(&b.schema.oid)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return tenant.Later(time.Second, "the schema was renamed or dropped by someone else while it was being dropped", err)
	} else if err != nil {
		return err
	}
	name := b.schema.name
	if !b.look {
		// Its look dropped the activity tables: one here now was created
		// after the look (before the schema was quarantined), unseen.
		if late, err := activityTablesIn(ctx, tx, b.schema.oid); err != nil {
			return err
		} else if len(late) > 0 {
			return tenant.Refuse(t.id, "activity table(s) %s appeared in its schema (now %s) after the final look, while it was "+
				"being dropped: the rest of it is left for review", strings.Join(late, ", "), name)
		}
	}
	lock := lockRelationsSQL(name, b.rels)
	if b.look {
		lock = append(lock, lockActivitySQL(name, b.tables, "SHARE"))
	}
	if len(lock) > 0 {
		if _, err := tx.Exec(ctx, strings.Join(lock, "; ")); err != nil {
			if isGone(err) {
				return tenant.Later(time.Second, "a table of the schema vanished while it was being locked", err)
			}
			return err
		}
	}
	c, err := walkClosure(ctx, tx, b.schema.oid)
	if err != nil {
		return err
	}
	if err := c.refusal(t.id); err != nil {
		return err
	}
	var lastActivity any // NULL: no look in this transaction
	if b.look {
		facts, err := b.finalLook(ctx, tx, c, judge)
		if err != nil {
			return err
		}
		res.Facts, res.Looked = facts, true
		if l := facts.Activity.Last(); !l.IsZero() {
			lastActivity = l
		}
		if t.store.Catalog() { // elsewhere the catalog's store deletes them (DeletePublicRows)
			if res.PublicRows, err = deletePublicRows(ctx, tx, t.id); err != nil {
				return err
			}
		}
	}
	relations := 0
	for _, r := range b.rels {
		relations += r.relations
	}
	var token any // NULL: unchanged
	if b.look && !b.last {
		tok, err := newToken()
		if err != nil {
			return err
		}
		token = tok
		b.quarantine = QuarantinePrefix + tok
	}
	if _, err := tx.Exec(ctx, query("record_dropped", ""), string(t.id), relations, lastActivity, b.last, b.schema.oid, token); err != nil {
		return err
	}
	if b.look && isTable(c.relations["file_content"]) {
		if err := recordLargeObjects(ctx, tx, t.id); err != nil {
			return err
		}
	}
	if b.look && isTable(c.relations["file_record"]) {
		if err := recordFileKeys(ctx, tx, t.id); err != nil {
			return err
		}
	}
	if err := armGuard(ctx, tx, name); err != nil {
		return err
	}
	if t.store.beforeDrop != nil {
		if err := t.store.beforeDrop(); err != nil {
			return err
		}
	}
	drop := dropStatements(name, b.rels)
	if b.last {
		drop += "DROP SCHEMA " + pgx.Identifier{name}.Sanitize() + " CASCADE"
	} else if b.look {
		// From this commit on, nothing can reach the tenant's data under its
		// name; the next transactions find the schema by its quarantine name.
		drop += "ALTER SCHEMA " + pgx.Identifier{name}.Sanitize() + " RENAME TO " + pgx.Identifier{b.quarantine}.Sanitize()
	}
	if _, err := tx.Exec(ctx, drop); err != nil {
		if isGuardTrigger(err) {
			return fmt.Errorf("%w: %v", errNet, err)
		}
		return err
	}
	if err := checkNet(ctx, tx, c); err != nil {
		return err
	}
	if b.alive != nil { // what the caller holds must still hold at the commit
		if err := b.alive(ctx); err != nil {
			return err
		}
	}
	if b.look && !b.last {
		// This transaction dropped the activity tables: one in the schema now
		// was created while it ran, and the look did not read it.
		if late, err := activityTablesIn(ctx, tx, b.schema.oid); err != nil {
			return err
		} else if len(late) > 0 {
			return tenant.Later(time.Second, "activity table(s) "+strings.Join(late, ", ")+" created while the tenant was being dropped", nil)
		}
	}
	return nil
}

// activityTablesIn lists the activity tables of the schema whose oid is nsOID.
func activityTablesIn(ctx context.Context, tx pgx.Tx, nsOID int64) ([]string, error) {
	rows, err := tx.Query(ctx, "SELECT relname::text FROM pg_class WHERE relnamespace = $1::oid AND relname = ANY ($2) ORDER BY 1",
		nsOID, lookedTables)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// finalLook reads, under the locks of the look transaction, what the rules
// depend on and hands it to judge.
func (b *dropBatch) finalLook(ctx context.Context, tx pgx.Tx, c closure, judge func(Facts) error) (Facts, error) {
	hasCraft := isTable(c.relations["build_session"])
	if hasCraft && !slices.Contains(b.tables, "build_session") { // created since the plan
		if _, err := tx.Exec(ctx, lockActivitySQL(b.schema.name, []string{"build_session"}, "SHARE")); err != nil {
			return Facts{}, err
		}
	}
	a, pairs, err := readActivity(ctx, tx, tenant.ID(b.schema.name), hasCraft)
	if err != nil {
		return Facts{}, err
	}
	facts := Facts{Activity: a, Pairs: pairs}
	return facts, judge(facts)
}

// isTable reports whether relkind is a table's (plain or partitioned).
func isTable(relkind string) bool { return relkind == "r" || relkind == "p" }

// inDropTx runs fn in a transaction that first takes one of the drop slots
// (waiting up to SlotWait for one if all are busy: a wait that ends is a
// tenant.ErrLater error) and then sets lock_timeout, so that at most
// DropSlots drop transactions hold their locks at any time.
func (t *TenantSession) inDropTx(ctx context.Context, fn func(pgx.Tx) error) error {
	begin := pgx.TxOptions{BeginQuery: "BEGIN; " + lockTimeoutSQL(t.store.opts.SlotWait)}
	return t.timedTx(ctx, begin, func(tx pgx.Tx) error {
		// Any free slot, else wait for the tenant's own.
		_, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $4, true) FROM (
			SELECT coalesce(
				(SELECT s FROM generate_series(0, $2 - 1) s WHERE pg_try_advisory_xact_lock($1, s) LIMIT 1),
				(SELECT $3 FROM pg_advisory_xact_lock($1, $3)))
			OFFSET 0) slot`,
			lockKeyDropSlot, int32(t.store.opts.DropSlots), int32(uint32(lockKey(t.id))%uint32(t.store.opts.DropSlots)),
			fmt.Sprint(t.store.opts.LockTimeout.Milliseconds()))
		if isLockTimeout(err) {
			return tenant.Later(5*time.Second, "every drop slot stayed busy", err)
		}
		if err != nil {
			return err
		}
		return fn(tx)
	})
}

// timedTx is pgx.BeginTxFunc that also hands the duration of the COMMIT to
// the store's Committed hook (the pacer learns the server's health from it).
func (t *TenantSession) timedTx(ctx context.Context, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	tx, err := t.conn.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }() // a no-op after the commit
	if err := fn(tx); err != nil {
		return err
	}
	start := time.Now()
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	if t.committed != nil {
		t.committed(time.Since(start))
	}
	return nil
}

// planBatches orders the relations for dropping (views first, then tables
// that no remaining table references, then sequences no table owns) and cuts
// them into batches whose estimated lock count stays within budget. Tables in
// a foreign-key cycle share a batch. A partition tree or inheritance tree
// goes with its table (one DROP takes it all) when it fits the budget;
// otherwise its leaves are dropped first, a batch at a time. The tables
// named in first (with what hangs from them) come before everything else.
func planBatches(rels []dropRel, budget int, first []string) [][]dropRel {
	children := map[string][]dropRel{}
	for _, r := range rels {
		if r.parent != "" {
			children[r.parent] = append(children[r.parent], r)
		}
	}
	var treeCost func(r dropRel) int
	treeCost = func(r dropRel) int {
		n := r.relations
		for _, c := range children[r.name] {
			n += treeCost(c)
		}
		return n
	}
	// unitsOf is how a table and what hangs from it are dropped.
	var unitsOf func(r dropRel) [][]dropRel
	unitsOf = func(r dropRel) [][]dropRel {
		whole := r
		whole.relations = treeCost(r)
		if whole.relations*locksPerRelation <= budget || len(children[r.name]) == 0 {
			return [][]dropRel{{whole}}
		}
		var units [][]dropRel
		for _, c := range children[r.name] {
			units = append(units, unitsOf(c)...)
		}
		return append(units, []dropRel{r})
	}

	var units [][]dropRel // each dropped in one batch, in this order
	remaining := map[string]dropRel{}
	var sequences [][]dropRel
	for _, r := range rels {
		switch {
		case r.parent != "":
			// dropped with (or before) its parent
		case r.kind == "v", r.kind == "m":
			units = append(units, []dropRel{r})
		case r.kind == "S": // after the tables whose defaults may use them
			sequences = append(sequences, []dropRel{r})
		default:
			remaining[r.name] = r
		}
	}
	for len(remaining) > 0 {
		var ready []string
		for name, r := range remaining {
			if !slices.ContainsFunc(r.referencedBy, func(ref string) bool { _, ok := remaining[ref]; return ok }) {
				ready = append(ready, name)
			}
		}
		if len(ready) == 0 { // a foreign-key cycle: drop what is left together
			var cycle []dropRel
			for _, name := range slices.Sorted(maps.Keys(remaining)) {
				cycle = append(cycle, remaining[name])
			}
			units = append(units, cycle)
			break
		}
		slices.Sort(ready)
		for _, name := range ready {
			units = append(units, unitsOf(remaining[name])...)
			delete(remaining, name)
		}
	}
	units = append(units, sequences...)
	var front, rest [][]dropRel
	for _, u := range units {
		if slices.ContainsFunc(u, func(r dropRel) bool { return slices.Contains(first, r.name) }) {
			front = append(front, u)
		} else {
			rest = append(rest, u)
		}
	}
	units = append(front, rest...)

	var batches [][]dropRel
	var cur []dropRel
	used := 0
	for _, u := range units {
		cost := 0
		for _, r := range u {
			cost += r.relations * locksPerRelation
		}
		if len(cur) > 0 && used+cost > budget {
			batches = append(batches, cur)
			cur, used = nil, 0
		}
		cur = append(cur, u...)
		used += cost
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	return batches
}

// lockRelationsSQL locks the batch's tables and views (of the schema named
// schemaName) ACCESS EXCLUSIVE (LOCK TABLE takes no materialized view,
// foreign table or sequence: their DROP locks them).
func lockRelationsSQL(schemaName string, batch []dropRel) []string {
	var names []string
	for _, r := range batch {
		if r.kind == "r" || r.kind == "p" || r.kind == "v" {
			names = append(names, pgx.Identifier{schemaName, r.name}.Sanitize())
		}
	}
	if len(names) == 0 {
		return nil
	}
	return []string{"LOCK TABLE " + strings.Join(names, ", ") + " IN ACCESS EXCLUSIVE MODE"}
}

// dropStatements is the DROP … CASCADE statements of a batch, each ending in
// "; ". CASCADE is safe here: the closure of the whole schema was walked in
// the same transaction and lies inside it, and the net checks the result.
func dropStatements(schemaName string, batch []dropRel) string {
	byKind := map[string][]string{}
	for _, r := range batch {
		byKind[r.kind] = append(byKind[r.kind], pgx.Identifier{schemaName, r.name}.Sanitize())
	}
	var sql strings.Builder
	for _, k := range []struct{ kind, stmt string }{
		{"v", "DROP VIEW IF EXISTS"},
		{"m", "DROP MATERIALIZED VIEW IF EXISTS"},
		{"f", "DROP FOREIGN TABLE IF EXISTS"},
		{"r", "DROP TABLE IF EXISTS"},
		{"p", "DROP TABLE IF EXISTS"},
		{"S", "DROP SEQUENCE IF EXISTS"},
	} {
		if names := byKind[k.kind]; len(names) > 0 {
			sql.WriteString(k.stmt + " " + strings.Join(names, ", ") + " CASCADE; ")
		}
	}
	return sql.String()
}

// newToken is a random token for a quarantine name: 32 hex digits.
func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}
