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

// locksPerRelation estimates the lock-table entries dropping one relation
// takes: the relation itself plus its row and array types, constraints,
// defaults and triggers (measured: a fixture table of 6 relations takes 18).
const locksPerRelation = 3

// DropResult says what Drop did.
type DropResult struct {
	// AlreadyGone is true when the schema did not exist.
	AlreadyGone bool
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
}

type dropRel struct {
	name         string
	kind         string // pg_class.relkind: r, p, v, m, f, S
	relations    int
	referencedBy []string
}

// Drop removes the tenant's schema and everything in it, and nothing else.
//
// A schema whose relations fit the lock budget is dropped in one
// transaction; a larger one in batches, each its own transaction within the
// budget: views first, then tables in reverse foreign-key order (so that a
// batch never reaches into a table of a later batch), the last batch with
// the schema. Every drop transaction takes one of the drop slots, runs its
// DDL under lock_timeout (a timeout returns a tenant.ErrLater error), locks
// its relations, walks the closure of the schema and refuses the tenant if
// anything outside it would be reached (guard.go), records what it drops in
// the tenant's record, drops, and checks the net before it commits.
//
// The first transaction of a drop that has not begun also makes the final
// look: with the tables it reads locked against writes (chat_message,
// build_session, connector_credential_pair, document, …), it reads the
// activity, documents and pairs and hands them to check, whose error aborts
// it. A table, row or dependency created before that transaction commits is
// therefore either read by the look or makes the transaction fail (the net,
// or a fresh listing of the activity tables): never dropped unseen. A drop
// that already began (the record says so) is completed without a look.
func (t *Tenant) Drop(ctx context.Context, check func(Facts) error) (DropResult, error) {
	res, err := t.drop(ctx, check)
	if err != nil {
		return res, fmt.Errorf("drop schema %s: %w", t.id, later(err, "drop schema"))
	}
	return res, nil
}

func (t *Tenant) drop(ctx context.Context, check func(Facts) error) (DropResult, error) {
	var res DropResult
	exists, tables, err := schemaTables(ctx, t.conn, t.id)
	if err != nil {
		return res, err
	}
	if !exists {
		res.AlreadyGone = true
		return res, nil
	}
	rec, err := readRecord(ctx, t.conn, t.id)
	if err != nil {
		return res, err
	}
	underway := rec.DropStarted()
	if !underway {
		if m := missing(tables); len(m) > 0 {
			return res, tenant.Refuse(t.id, "schema lacks table(s) %s: not a tenant schema this tool understands", strings.Join(m, ", "))
		}
	}
	rows, err := t.conn.Query(ctx, query("drop_plan", ""), string(t.id))
	if err != nil {
		return res, err
	}
	rels, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (dropRel, error) {
		var d dropRel
		err := r.Scan(&d.name, &d.kind, &d.relations, &d.referencedBy)
		return d, err
	})
	if err != nil {
		return res, err
	}
	batches := planBatches(rels, t.store.opts.LockBudget)
	if len(batches) == 0 {
		batches = [][]dropRel{nil} // an empty schema: one transaction for the checks and the drop
	}
	for i, batch := range batches {
		look := i == 0 && !underway
		last := i == len(batches)-1
		err := t.inDropTx(ctx, func(tx pgx.Tx) error {
			facts, err := t.dropBatch(ctx, tx, batch, tables, look, last, check)
			if look {
				res.Facts, res.Looked = facts, true
			}
			return err
		})
		if err != nil {
			return res, err
		}
		res.Transactions++
		for _, r := range batch {
			res.Relations += r.relations
		}
		if t.store.afterDropTx != nil {
			if err := t.store.afterDropTx(res.Transactions); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// dropBatch is one drop transaction (see Drop); tables are the activity
// tables the schema had when the drop was planned.
func (t *Tenant) dropBatch(ctx context.Context, tx pgx.Tx, batch []dropRel, tables []string, look, last bool,
	check func(Facts) error) (Facts, error) {
	var facts Facts
	lock := lockRelationsSQL(t.id, batch)
	if look {
		lock = append(lock, lockActivitySQL(t.id, tables, "SHARE"))
	}
	if len(lock) > 0 {
		if _, err := tx.Exec(ctx, strings.Join(lock, "; ")); err != nil {
			if isGone(err) {
				return facts, tenant.Later(time.Second, "a table of the schema vanished while it was being locked", err)
			}
			return facts, err
		}
	}
	c, err := walkClosure(ctx, tx, t.id)
	if err != nil {
		return facts, err
	}
	if err := c.refusal(t.id); err != nil {
		return facts, err
	}
	var lastActivity any // NULL: no look in this transaction
	if look {
		hasCraft := isTable(c.relations["build_session"])
		if hasCraft && !slices.Contains(tables, "build_session") { // created since the plan
			if _, err := tx.Exec(ctx, lockActivitySQL(t.id, []string{"build_session"}, "SHARE")); err != nil {
				return facts, err
			}
		}
		a, pairs, err := readActivity(ctx, tx, t.id, hasCraft)
		if err != nil {
			return facts, err
		}
		facts = Facts{Activity: a, Pairs: pairs}
		if err := check(facts); err != nil {
			return facts, err
		}
		if last := a.Last(); !last.IsZero() {
			lastActivity = last
		}
	}
	relations := 0
	for _, r := range batch {
		relations += r.relations
	}
	if _, err := tx.Exec(ctx, query("record_dropped", ""), string(t.id), relations, lastActivity, last); err != nil {
		return facts, err
	}
	if err := armGuard(ctx, tx, t.id); err != nil {
		return facts, err
	}
	if t.store.beforeDrop != nil {
		if err := t.store.beforeDrop(); err != nil {
			return facts, err
		}
	}
	drop := dropStatements(t.id, batch)
	if last {
		drop += "DROP SCHEMA " + schema(t.id) + " CASCADE"
	}
	if _, err := tx.Exec(ctx, drop); err != nil {
		if isGuardTrigger(err) {
			return facts, fmt.Errorf("%w: %v", errNet, err)
		}
		return facts, err
	}
	if err := checkNet(ctx, tx, c); err != nil {
		return facts, err
	}
	if look && !last {
		// The schema survives this transaction: an activity table created
		// since the look would be dropped unseen by a later batch.
		_, after, err := schemaTables(ctx, tx, t.id)
		if err != nil {
			return facts, err
		}
		if !isTable(c.relations["build_session"]) && slices.Contains(after, "build_session") {
			return facts, tenant.Later(time.Second, "a build_session table was created while the tenant was being dropped", nil)
		}
	}
	return facts, nil
}

// isTable reports whether relkind is a table's (plain or partitioned).
func isTable(relkind string) bool { return relkind == "r" || relkind == "p" }

// inDropTx runs fn in a transaction that first takes one of the drop slots
// (waiting up to SlotWait for one if all are busy: a wait that ends is a
// tenant.ErrLater error) and then sets lock_timeout, so that at most
// DropSlots drop transactions hold their locks at any time.
func (t *Tenant) inDropTx(ctx context.Context, fn func(pgx.Tx) error) error {
	begin := pgx.TxOptions{BeginQuery: "BEGIN; " + lockTimeoutSQL(t.store.opts.SlotWait)}
	return pgx.BeginTxFunc(ctx, t.conn, begin, func(tx pgx.Tx) error {
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

// planBatches orders the relations for dropping (views first, then tables
// that no remaining table references, then sequences no table owns) and cuts
// them into batches whose estimated lock count stays within budget. Tables in
// a foreign-key cycle share a batch.
func planBatches(rels []dropRel, budget int) [][]dropRel {
	var units [][]dropRel // each dropped in one batch, in this order
	remaining := map[string]dropRel{}
	var sequences [][]dropRel
	for _, r := range rels {
		switch r.kind {
		case "v", "m":
			units = append(units, []dropRel{r})
		case "S": // after the tables whose defaults may use them
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
			for _, r := range remaining {
				cycle = append(cycle, r)
			}
			units = append(units, cycle)
			break
		}
		slices.Sort(ready)
		for _, name := range ready {
			units = append(units, []dropRel{remaining[name]})
			delete(remaining, name)
		}
	}
	units = append(units, sequences...)

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

// lockRelationsSQL locks the batch's tables and views ACCESS EXCLUSIVE (LOCK
// TABLE takes no materialized view, foreign table or sequence: their DROP
// locks them).
func lockRelationsSQL(id tenant.ID, batch []dropRel) []string {
	var names []string
	for _, r := range batch {
		if r.kind == "r" || r.kind == "p" || r.kind == "v" {
			names = append(names, schema(id)+"."+pgx.Identifier{r.name}.Sanitize())
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
func dropStatements(id tenant.ID, batch []dropRel) string {
	byKind := map[string][]string{}
	for _, r := range batch {
		byKind[r.kind] = append(byKind[r.kind], schema(id)+"."+pgx.Identifier{r.name}.Sanitize())
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
