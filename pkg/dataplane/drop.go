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
	kind         string // pg_class.relkind: r, p, v, m, f
	relations    int
	referencedBy []string
}

// Drop removes the tenant's schema and everything in it, and nothing else.
//
// A schema whose relations fit the lock budget is dropped in one
// transaction: the activity tables are locked and recheck is called with a
// fresh read of the tenant's activity, every relation is locked, nothing
// outside the schema may depend on anything in it, then DROP SCHEMA CASCADE.
// A larger schema is dropped in batches, each its own transaction within the
// budget: views first, then tables in reverse foreign-key order (so a batch
// never reaches into a table of a later batch). The first batch makes the
// same checks and marks the schema as being dropped; later batches drop
// RESTRICT (see dropRestrict); the last one checks for outside dependents
// again and drops the schema. DDL runs under lock_timeout; a timeout returns
// a tenant.ErrLater error.
func (t *Tenant) Drop(ctx context.Context, recheck func(Activity) error) (DropResult, error) {
	res, err := t.drop(ctx, recheck)
	if err != nil {
		return res, fmt.Errorf("drop schema %s: %w", t.id, later(err, "drop schema"))
	}
	return res, nil
}

func (t *Tenant) drop(ctx context.Context, recheck func(Activity) error) (DropResult, error) {
	var res DropResult
	snap, err := inspect(ctx, t.conn, t.id)
	if err != nil && !isGone(err) {
		return res, err
	}
	if !snap.SchemaExists {
		res.AlreadyGone = true
		return res, nil
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
			if first {
				if err := t.recheckLocked(ctx, tx, snap, recheck); err != nil {
					return err
				}
			}
			if err := lockRelations(ctx, tx, t.id, batch); err != nil {
				return err
			}
			switch {
			case first:
				// The one full check before anything is dropped: nothing is
				// dropped if anything outside depends on the schema.
				if err := t.refuseOutsideDependents(ctx, tx); err != nil {
					return err
				}
				if !last {
					if _, err := tx.Exec(ctx, "COMMENT ON SCHEMA "+schema(t.id)+" IS '"+dropStartedComment+" "+
						time.Now().UTC().Format(time.RFC3339)+"'"); err != nil {
						return err
					}
					return dropRelations(ctx, tx, t.id, batch, "CASCADE")
				}
			default:
				if err := t.dropRestrict(ctx, tx, batch); err != nil {
					return err
				}
				if !last {
					return nil
				}
				if err := t.refuseOutsideDependents(ctx, tx); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema(t.id)+" CASCADE")
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

// recheckLocked locks the activity tables against writes (those that first,
// the read before the transaction, found), then reads the activity afresh
// and hands it to recheck. A schema whose drop already began has no activity
// to check.
func (t *Tenant) recheckLocked(ctx context.Context, tx pgx.Tx, first Snapshot, recheck func(Activity) error) error {
	if len(first.MissingTables) > 0 {
		return tenant.Refuse(t.id, "schema lacks table(s) %s", strings.Join(first.MissingTables, ", "))
	}
	hasCraft := first.HasCraft
	for {
		if !first.DropStarted {
			if err := lockActivityTables(ctx, tx, t.id, hasCraft); isGone(err) {
				return tenant.Later(time.Second, "a table of the schema vanished while it was checked", err)
			} else if err != nil {
				return err
			}
		}
		snap, err := inspect(ctx, tx, t.id)
		if err != nil {
			return err
		}
		if !snap.SchemaExists || snap.DropStarted {
			return recheck(Activity{})
		}
		if first.DropStarted { // cannot happen: only this pipeline sets or clears the mark
			return fmt.Errorf("schema %s lost its drop-started mark", t.id)
		}
		if len(snap.MissingTables) > 0 {
			return tenant.Refuse(t.id, "schema lacks table(s) %s", strings.Join(snap.MissingTables, ", "))
		}
		if snap.HasCraft && !hasCraft { // build_session appeared since the first read: lock it too
			hasCraft = true
			continue
		}
		return recheck(snap.Activity)
	}
}

func lockActivityTables(ctx context.Context, tx pgx.Tx, id tenant.ID, hasCraft bool) error {
	tables := schema(id) + ".chat_message"
	if hasCraft {
		tables += ", " + schema(id) + ".build_session"
	}
	_, err := tx.Exec(ctx, "LOCK TABLE "+tables+" IN SHARE MODE")
	return err
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
// (waiting for one if all are busy) and then sets lock_timeout, so that at
// most DropSlots drop transactions hold their locks at any time.
func (t *Tenant) inDropTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, t.conn, func(tx pgx.Tx) error {
		if err := takeDropSlot(ctx, tx, t.id, t.store.opts.DropSlots); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, lockTimeoutSQL(t.store.opts.LockTimeout)); err != nil {
			return err
		}
		return fn(tx)
	})
}

func takeDropSlot(ctx context.Context, tx pgx.Tx, id tenant.ID, slots int) error {
	for slot := range slots {
		var got bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1, $2)", lockKeyDropSlot, slot).Scan(&got); err != nil {
			return err
		}
		if got {
			return nil
		}
	}
	slot := int(uint32(lockKey(id)) % uint32(slots))
	_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, $2)", lockKeyDropSlot, slot)
	return err
}

// planBatches orders the relations for dropping (views first, then tables
// that no remaining table references) and cuts them into batches whose
// estimated lock count stays within budget. Tables in a foreign-key cycle
// share a batch.
func planBatches(rels []dropRel, budget int) [][]dropRel {
	var order []dropRel
	remaining := map[string]dropRel{}
	for _, r := range rels {
		if r.kind == "v" || r.kind == "m" {
			order = append(order, r)
		} else {
			remaining[r.name] = r
		}
	}
	var cycle []dropRel
	for len(remaining) > 0 {
		var ready []string
		for name, r := range remaining {
			if !slices.ContainsFunc(r.referencedBy, func(ref string) bool { _, ok := remaining[ref]; return ok }) {
				ready = append(ready, name)
			}
		}
		if len(ready) == 0 { // a foreign-key cycle: drop what is left together
			for _, r := range remaining {
				cycle = append(cycle, r)
			}
			break
		}
		slices.Sort(ready)
		for _, name := range ready {
			order = append(order, remaining[name])
			delete(remaining, name)
		}
	}

	var batches [][]dropRel
	var cur []dropRel
	used := 0
	for _, r := range order {
		cost := r.relations * locksPerRelation
		if len(cur) > 0 && used+cost > budget {
			batches = append(batches, cur)
			cur, used = nil, 0
		}
		cur = append(cur, r)
		used += cost
	}
	cur = append(cur, cycle...)
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	return batches
}

func lockRelations(ctx context.Context, tx pgx.Tx, id tenant.ID, batch []dropRel) error {
	if len(batch) == 0 {
		return nil
	}
	names := make([]string, len(batch))
	for i, r := range batch {
		names[i] = schema(id) + "." + pgx.Identifier{r.name}.Sanitize()
	}
	_, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(names, ", ")+" IN ACCESS EXCLUSIVE MODE")
	return err
}

// dropRestrict drops a batch with RESTRICT: in reverse foreign-key order
// nothing else depends on it, and if something does (an object of the schema
// depending on it another way, or one outside created since the first batch)
// the drop fails instead of cascading. Then, and only if nothing outside the
// schema depends on it, the batch is dropped with CASCADE.
func (t *Tenant) dropRestrict(ctx context.Context, tx pgx.Tx, batch []dropRel) error {
	if _, err := tx.Exec(ctx, "SAVEPOINT restrict_drop"); err != nil {
		return err
	}
	err := dropRelations(ctx, tx, t.id, batch, "RESTRICT")
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
	return dropRelations(ctx, tx, t.id, batch, "CASCADE")
}

func dropRelations(ctx context.Context, tx pgx.Tx, id tenant.ID, batch []dropRel, behavior string) error {
	byKind := map[string][]string{}
	for _, r := range batch {
		byKind[r.kind] = append(byKind[r.kind], schema(id)+"."+pgx.Identifier{r.name}.Sanitize())
	}
	for _, k := range []struct{ kind, stmt string }{
		{"v", "DROP VIEW IF EXISTS"},
		{"m", "DROP MATERIALIZED VIEW IF EXISTS"},
		{"f", "DROP FOREIGN TABLE IF EXISTS"},
		{"r", "DROP TABLE IF EXISTS"},
		{"p", "DROP TABLE IF EXISTS"},
	} {
		if names := byKind[k.kind]; len(names) > 0 {
			if _, err := tx.Exec(ctx, k.stmt+" "+strings.Join(names, ", ")+" "+behavior); err != nil {
				return err
			}
		}
	}
	return nil
}
