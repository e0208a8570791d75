package pgschema

import (
	"context"
	_ "embed"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Tx runs statements in one transaction (a pgx.Tx).
type Tx interface {
	Querier
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// LockRows locks FOR UPDATE the rows whose tenant_id is id in each of tables
// (all in public), and returns how many it locked in each. A transaction
// inserting a row that references one of them (its foreign key check takes
// FOR KEY SHARE on it) either committed before, and a later statement of
// this transaction sees its row, or waits until this transaction ends, and
// then finds the row gone and fails. Call it before ForeignRows, in the
// transaction that deletes the rows: nothing can then come to reference them
// unseen. Rows of id inserted after it ran were not looked at: the caller
// compares what it deleted with the counts, and rolls back when it deleted
// more. It waits for the rows at most lock_timeout (SQLSTATE 55P03). FOR
// UPDATE needs the UPDATE privilege on the tables (a superuser has it).
//
// It needs READ COMMITTED, where every statement sees what committed before
// it began (in REPEATABLE READ, ForeignRows would read the snapshot of the
// transaction's first statement and miss a row committed while LockRows
// waited), and returns an error in any other isolation level.
func LockRows(ctx context.Context, q Querier, tables []string, id string) (map[string]int64, error) {
	var isolation string
	if err := q.QueryRow(ctx, "SELECT current_setting('transaction_isolation')").Scan(&isolation); err != nil {
		return nil, fmt.Errorf("lock the rows of %s: %w", id, err)
	}
	if isolation != "read committed" {
		return nil, fmt.Errorf("lock the rows of %s: the transaction is %s; the foreign-key check needs read committed "+
			"(set default_transaction_isolation to read committed for the pipeline's role)", id, isolation)
	}
	parts := make([]string, len(tables))
	for i, table := range tables {
		parts[i] = fmt.Sprintf("SELECT %d, count(*) FROM (SELECT 1 FROM %s WHERE tenant_id = $1 FOR UPDATE) r",
			i, pgx.Identifier{"public", table}.Sanitize())
	}
	rows, err := q.Query(ctx, strings.Join(parts, " UNION ALL "), id)
	if err != nil {
		return nil, fmt.Errorf("lock the rows of %s: %w", id, err)
	}
	locked := make(map[string]int64, len(tables))
	var (
		i int
		n int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&i, &n}, func() error { locked[tables[i]] = n; return nil }); err != nil {
		return nil, fmt.Errorf("lock the rows of %s: %w", id, err)
	}
	return locked, nil
}

// DML names the tables a transaction is about to change, as quoted,
// schema-qualified names (pgx.Identifier{schema, table}.Sanitize()); a table
// that does not exist is skipped.
type DML struct {
	Delete, Update []string
}

//go:embed reached_tables.sql
var reachedTablesSQL string

//go:embed untrusted_code.sql
var untrustedCodeSQL string

// Guard is what CheckCode found: what makes the DML unsafe to run, and the
// session's search_path before it.
type Guard struct {
	// Untrusted describes each trigger or rule of another role that the DML
	// would run with the pipeline's privileges, and each table it would
	// reach but cannot lock against new triggers.
	Untrusted  []string
	searchPath string
}

// CheckCode readies the transaction for the DML d, and says whether it can
// run the code that DML would run: the triggers and rules of every table it
// changes, directly or through a cascading foreign-key action (see
// untrusted_code.sql for what is trusted). Call it first, in the
// transaction of the DML (then LockRows and ForeignRows, for a delete);
// refuse when Untrusted is not empty, and call Changed after the DML.
//
// So that nobody can add a trigger between the check and the DML, it first
// locks every such table in ROW EXCLUSIVE mode, the mode the DML takes
// anyway: it conflicts with the SHARE ROW EXCLUSIVE lock of CREATE TRIGGER,
// ALTER TABLE … ENABLE TRIGGER and CREATE RULE (and with what ALTER TABLE
// OWNER and ADD FOREIGN KEY take on the referenced table), which locking
// the rows FOR UPDATE (ROW SHARE) does not. The tables a cascade reaches are
// found again once those it reached are locked, until no new one appears.
// When only a SECURITY DEFINER function of another role stands in the way,
// a superuser locks FOR SHARE the pg_proc rows of the functions that code
// calls, so that none can be made SECURITY INVOKER (nor replaced) until the
// transaction ends, and trusts those; another role cannot, so it trusts no
// SECURITY DEFINER function of another role.
// Every wait is bounded by the transaction's lock_timeout (SQLSTATE 55P03).
func CheckCode(ctx context.Context, tx Tx, d DML) (*Guard, error) {
	g := &Guard{}
	tables, err := lockReached(ctx, tx, d, g)
	if err != nil {
		return nil, err
	}
	var super bool
	if err := tx.QueryRow(ctx, "SELECT rolsuper, current_setting('search_path') FROM pg_roles WHERE rolname = current_user").
		Scan(&super, &g.searchPath); err != nil {
		return nil, fmt.Errorf("read the pipeline's role: %w", err)
	}
	// Read first trusting no SECURITY DEFINER function of another role: the
	// verdict of code that owes its trust to nothing else cannot change (a
	// trusted role's function only a trusted role can alter). Only when that
	// reading finds something untrusted, as a superuser, are the functions
	// pinned and the code read again, trusting those pinned.
	code, err := readCode(ctx, tx, tables, false)
	if err != nil {
		return nil, err
	}
	if super && len(untrusted(code)) > 0 {
		if err := pinFunctions(ctx, tx, code); err != nil {
			return nil, err
		}
		if code, err = readCode(ctx, tx, tables, true); err != nil {
			return nil, err
		}
	}
	g.Untrusted = append(g.Untrusted, untrusted(code)...)
	return g, nil
}

// pinFunctions locks FOR SHARE the pg_proc rows of the functions code
// calls: ALTER FUNCTION and CREATE OR REPLACE FUNCTION wait for such a lock
// (it takes a superuser to take it).
func pinFunctions(ctx context.Context, tx Tx, code []code) error {
	var funcs []int64
	for _, c := range code {
		funcs = append(funcs, c.funcs...)
	}
	if len(funcs) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, "SELECT 1 FROM pg_catalog.pg_proc WHERE oid = ANY ($1::oid[]) FOR SHARE", funcs); err != nil {
		return fmt.Errorf("lock the functions of triggers and rules: %w", err)
	}
	return nil
}

// Changed says what the code the DML ran changed in the session that would
// outlive it (empty: nothing): a trigger function, even one running as its
// owner, can set search_path for the session (set_config(…, false)), so
// that the pipeline's next statements, in this transaction or a later one
// on the same connection, would call that role's functions. Rolling the
// transaction back undoes it: the caller refuses.
func (g *Guard) Changed(ctx context.Context, q Querier) (string, error) {
	var now string
	if err := q.QueryRow(ctx, "SELECT current_setting('search_path')").Scan(&now); err != nil {
		return "", fmt.Errorf("read search_path: %w", err)
	}
	if now != g.searchPath {
		return fmt.Sprintf("search_path became %q (was %q)", now, g.searchPath), nil
	}
	return "", nil
}

// reachedTable is one table of reached_tables.sql.
type reachedTable struct {
	oid               int64
	schema, name      string
	del, upd, mayLock bool
}

// lockReached locks every table d reaches (see CheckCode) and returns them;
// those it may not lock are added to g.Untrusted.
func lockReached(ctx context.Context, tx Tx, d DML, g *Guard) ([]reachedTable, error) {
	locked := map[int64]bool{}
	for {
		rows, err := tx.Query(ctx, reachedTablesSQL, d.Delete, d.Update)
		if err != nil {
			return nil, fmt.Errorf("find the tables a change reaches: %w", err)
		}
		tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (reachedTable, error) {
			var t reachedTable
			err := r.Scan(&t.oid, &t.schema, &t.name, &t.del, &t.upd, &t.mayLock)
			return t, err
		})
		if err != nil {
			return nil, fmt.Errorf("find the tables a change reaches: %w", err)
		}
		var names []string
		for _, t := range tables {
			if locked[t.oid] {
				continue
			}
			locked[t.oid] = true
			if !t.mayLock {
				g.Untrusted = append(g.Untrusted, fmt.Sprintf("the triggers anyone may add meanwhile to table %s.%s, which a "+
					"cascading foreign key reaches (the pipeline's role may not lock it: it needs a write privilege on it)",
					t.schema, t.name))
				continue
			}
			names = append(names, pgx.Identifier{t.schema, t.name}.Sanitize())
		}
		if len(names) == 0 {
			return tables, nil
		}
		if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(names, ", ")+" IN ROW EXCLUSIVE MODE"); err != nil {
			return nil, fmt.Errorf("lock %s: %w", strings.Join(names, ", "), err)
		}
	}
}

// code is one trigger, rule, expression or domain of untrusted_code.sql.
type code struct {
	kind, schema, table, name string
	funcs                     []int64
	untrustedFuncs, owners    []string
}

func readCode(ctx context.Context, q Querier, tables []reachedTable, pinned bool) ([]code, error) {
	oids := make([]int64, len(tables))
	del := make([]bool, len(tables))
	upd := make([]bool, len(tables))
	for i, t := range tables {
		oids[i], del[i], upd[i] = t.oid, t.del, t.upd
	}
	rows, err := q.Query(ctx, untrustedCodeSQL, oids, del, upd, pinned)
	if err != nil {
		return nil, fmt.Errorf("read triggers and rules: %w", err)
	}
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (code, error) {
		var c code
		err := r.Scan(&c.kind, &c.schema, &c.table, &c.name, &c.funcs, &c.untrustedFuncs, &c.owners)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("read triggers and rules: %w", err)
	}
	return found, nil
}

// untrusted describes the code that is not trusted.
func untrusted(found []code) []string {
	var out []string
	for _, c := range found {
		var why []string
		if len(c.untrustedFuncs) > 0 {
			why = append(why, "function "+strings.Join(c.untrustedFuncs, ", "))
		}
		if len(c.owners) > 0 && c.kind == "domain" {
			why = append(why, "domain owned by "+strings.Join(c.owners, ", ")+", who may give it a constraint at any time")
		} else if len(c.owners) > 0 && strings.HasSuffix(c.kind, " reading") {
			why = append(why, "a relation whose code is not vetted, owned by "+strings.Join(c.owners, ", "))
		} else if len(c.owners) > 0 && c.kind == "type" {
			why = append(why, "type owned by "+strings.Join(c.owners, ", ")+", who may give it an attribute of a domain at any time")
		} else if len(c.owners) > 0 {
			why = append(why, "table owned by, or open to triggers of, "+strings.Join(c.owners, ", "))
		}
		if len(why) > 0 {
			out = append(out, fmt.Sprintf("%s %s on %s.%s (%s)", c.kind, c.name, c.schema, c.table, strings.Join(why, "; ")))
		}
	}
	return out
}

// Advice says what to do about Untrusted.
const Advice = "that code would run with the pipeline's privileges: review it; make its functions SECURITY DEFINER " +
	"(they then run as their owner), or have the pipeline's role or a superuser own the functions and the table, " +
	"or drop it; then request the tenant again"
