package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// dropStartedComment marks a schema whose drop has begun (written in the
// first drop transaction, inside the tenant's own schema), so that a cleanup
// interrupted part-way is recognised and completed rather than refused for
// the tables it already dropped.
const dropStartedComment = "tenant-cleanup: drop started"

// locksPerRelation estimates the lock-table entries dropping one relation
// takes: the relation itself plus its row and array types, constraints,
// defaults and triggers (measured: a fixture table of 6 relations takes 18).
const locksPerRelation = 3

// DropResult says what Drop did.
type DropResult struct {
	// AlreadyGone is true when the schema did not exist.
	AlreadyGone bool
	// Relations is the number of tables, views and their indexes, TOAST
	// tables and sequences dropped.
	Relations int
	// Transactions is the number of drop transactions it took.
	Transactions int
}

type dropRel struct {
	name         string
	kind         string // pg_class.relkind: r, p, v, m, f, S
	relations    int
	referencedBy []string
}

// Drop removes the tenant's schema and everything in it, and nothing else.
// pre is the tenant as Inspect read it under this same lock.
//
// A schema whose relations fit the lock budget is dropped in one
// transaction: its activity tables and relations are locked, recheck is
// called with a fresh read of the tenant's activity, nothing outside the
// schema may depend on anything in it, then DROP SCHEMA CASCADE. A larger
// schema is dropped in batches, each its own transaction within the budget:
// views first, then tables in reverse foreign-key order (so a batch never
// reaches into a table of a later batch). The first batch makes the same
// checks and marks the schema as being dropped; later batches drop RESTRICT
// (see dropRestrict), the last one the schema too. DDL runs under
// lock_timeout; a timeout returns a tenant.ErrLater error.
func (t *Tenant) Drop(ctx context.Context, pre Snapshot, recheck func(Activity) error) (DropResult, error) {
	res, err := t.drop(ctx, pre, recheck)
	if err != nil {
		return res, fmt.Errorf("drop schema %s: %w", t.id, later(err, "drop schema"))
	}
	return res, nil
}

func (t *Tenant) drop(ctx context.Context, pre Snapshot, recheck func(Activity) error) (DropResult, error) {
	var res DropResult
	if !pre.SchemaExists {
		res.AlreadyGone = true
		return res, nil
	}
	if len(pre.MissingTables) > 0 {
		return res, tenant.Refuse(t.id, "schema lacks table(s) %s", strings.Join(pre.MissingTables, ", "))
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
		first, last := i == 0, i == len(batches)-1
		err := t.inDropTx(ctx, func(tx pgx.Tx) error {
			if !first {
				if err := lockRelations(ctx, tx, t.id, batch, ""); err != nil {
					return err
				}
				return t.dropRestrict(ctx, tx, batch, last)
			}
			if err := t.recheckLocked(ctx, tx, pre, batch, recheck); err != nil {
				return err
			}
			// The one full check before anything is dropped: nothing is
			// dropped if anything outside depends on the schema.
			if err := t.refuseOutsideDependents(ctx, tx); err != nil {
				return err
			}
			if last {
				_, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema(t.id)+" CASCADE")
				return err
			}
			_, err := tx.Exec(ctx, "COMMENT ON SCHEMA "+schema(t.id)+" IS '"+dropStartedComment+" "+
				time.Now().UTC().Format(time.RFC3339)+"'; "+dropStatements(t.id, batch, "CASCADE"))
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

// recheckLocked locks the batch's relations, and the activity tables against
// writes, in one round trip, then reads the activity afresh and hands it to
// recheck. A schema whose drop already began has no activity to check.
func (t *Tenant) recheckLocked(ctx context.Context, tx pgx.Tx, pre Snapshot, batch []dropRel, recheck func(Activity) error) error {
	if pre.DropStarted {
		if err := lockRelations(ctx, tx, t.id, batch, ""); err != nil {
			return err
		}
		return recheck(Activity{})
	}
	activity := []string{"chat_message"}
	if pre.HasCraft {
		activity = append(activity, "build_session")
	}
	var share strings.Builder
	share.WriteString("LOCK TABLE ")
	for i, name := range activity {
		if i > 0 {
			share.WriteString(", ")
		}
		share.WriteString(schema(t.id) + "." + pgx.Identifier{name}.Sanitize())
	}
	share.WriteString(" IN SHARE MODE")
	if err := lockRelations(ctx, tx, t.id, batch, share.String()+"; "); isGone(err) {
		return tenant.Later(time.Second, "a table of the schema vanished while it was checked", err)
	} else if err != nil {
		return err
	}
	a, _, err := readActivity(ctx, tx, t.id, pre.HasCraft)
	if err != nil {
		return err
	}
	return recheck(a)
}

func (t *Tenant) refuseOutsideDependents(ctx context.Context, tx pgx.Tx) error {
	deps, err := outsideDependents(ctx, tx, t.id)
	if err != nil {
		return err
	}
	if len(deps) > 0 {
		return tenant.Refuse(t.id, "objects outside its schema depend on it: %s", strings.Join(deps, "; "))
	}
	return nil
}

// inDropTx runs fn in a transaction that first takes one of the drop slots
// (waiting for one if all are busy) and then sets lock_timeout, in one round
// trip, so that at most DropSlots drop transactions hold their locks at any
// time.
func (t *Tenant) inDropTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, t.conn, func(tx pgx.Tx) error {
		// Any free slot, else wait for the tenant's own (the wait is not
		// bounded by lock_timeout, which is set only once a slot is held).
		_, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $4, true) FROM (
			SELECT coalesce(
				(SELECT s FROM generate_series(0, $2 - 1) s WHERE pg_try_advisory_xact_lock($1, s) LIMIT 1),
				(SELECT $3 FROM pg_advisory_xact_lock($1, $3)))
			OFFSET 0) slot`,
			lockKeyDropSlot, int32(t.store.opts.DropSlots), int32(uint32(lockKey(t.id))%uint32(t.store.opts.DropSlots)),
			fmt.Sprint(t.store.opts.LockTimeout.Milliseconds()))
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

// lockRelations locks the batch's tables and views ACCESS EXCLUSIVE, after running
// prefix (more statements for the same round trip) if any.
func lockRelations(ctx context.Context, tx pgx.Tx, id tenant.ID, batch []dropRel, prefix string) error {
	sql := prefix
	var names []string
	for _, r := range batch {
		if r.kind != "S" { // LOCK TABLE cannot lock a sequence; the DROP locks it
			names = append(names, schema(id)+"."+pgx.Identifier{r.name}.Sanitize())
		}
	}
	if len(names) > 0 {
		sql += "LOCK TABLE " + strings.Join(names, ", ") + " IN ACCESS EXCLUSIVE MODE"
	}
	if sql == "" {
		return nil
	}
	_, err := tx.Exec(ctx, sql)
	return err
}

// dropRestrict drops a batch (and with last, then the schema) with RESTRICT:
// in reverse foreign-key order nothing else depends on it, and if something
// does (an object of the schema depending on it another way, or one outside
// created since the first batch) the drop fails instead of cascading. Then,
// and only if nothing outside the schema depends on it, the batch (and the
// schema) is dropped with CASCADE.
func (t *Tenant) dropRestrict(ctx context.Context, tx pgx.Tx, batch []dropRel, last bool) error {
	drop := func(behavior string) string {
		sql := dropStatements(t.id, batch, behavior)
		if last {
			sql += "DROP SCHEMA IF EXISTS " + schema(t.id) + " " + behavior
		}
		return sql
	}
	_, err := tx.Exec(ctx, "SAVEPOINT restrict_drop; "+drop("RESTRICT"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "2BP01" { // dependent_objects_still_exist
		return err
	}
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT restrict_drop"); err != nil {
		return err
	}
	if err := t.refuseOutsideDependents(ctx, tx); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, drop("CASCADE"))
	return err
}

// dropStatements is the DROP statements of a batch, each ending in "; ".
func dropStatements(id tenant.ID, batch []dropRel, behavior string) string {
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
			sql.WriteString(k.stmt + " " + strings.Join(names, ", ") + " " + behavior + "; ")
		}
	}
	return sql.String()
}
