// Package pgschema checks that a table this pipeline keeps (the ledger, the
// holds, its own records) has the shape the code relies on, so that a table
// someone created differently is a startup error that names the problem,
// never a failure after an irreversible step.
package pgschema

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Column is a column the code reads or writes, with the types it accepts (as
// PostgreSQL's format_type names them: "text", "bigint",
// "timestamp with time zone", …).
type Column struct {
	Name  string
	Types []string
}

// Columns are the columns named names, each of the types types (one of
// the type sets below).
func Columns(types []string, names ...string) []Column {
	cols := make([]Column, len(names))
	for i, name := range names {
		cols[i] = Column{Name: name, Types: types}
	}
	return cols
}

// Querier runs a query (a pool, a connection or a transaction).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Verify checks that table (schema-qualified) exists, has every column with
// an accepted type, and that key ("a" or "a, b") is unique as it is (a
// primary key or a unique index without predicate on exactly those
// columns), which ON CONFLICT (key) needs. The error lists
// every problem and what to do.
func Verify(ctx context.Context, q Querier, table, key string, cols []Column) error {
	have := map[string]string{}
	rows, err := q.Query(ctx, `SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
		FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, table)
	if err != nil {
		return fmt.Errorf("check %s: %w", table, err)
	}
	var name, typ string
	if _, err := pgx.ForEachRow(rows, []any{&name, &typ}, func() error { have[name] = typ; return nil }); err != nil {
		return fmt.Errorf("check %s: %w", table, err)
	}
	if len(have) == 0 {
		return fmt.Errorf("table %s does not exist", table)
	}
	var problems []string
	for _, c := range cols {
		t, ok := have[c.Name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("column %s is missing", c.Name))
		case !slices.Contains(c.Types, t):
			problems = append(problems, fmt.Sprintf("column %s is %s, want %s", c.Name, t, strings.Join(c.Types, " or ")))
		}
	}
	var unique bool
	err = q.QueryRow(ctx, `SELECT EXISTS (
		SELECT 1 FROM pg_index i
		WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
		  AND ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
		            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		            WHERE k.n <= i.indnkeyatts ORDER BY k.n) = string_to_array($2, ', '))`, table, key).Scan(&unique)
	if err != nil {
		return fmt.Errorf("check %s: %w", table, err)
	}
	if !unique {
		problems = append(problems, fmt.Sprintf("%s is not unique (no primary key or unique index on it alone)", key))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s: %s; fix or rename the table (this pipeline creates it when it is missing)",
			ErrShape, table, strings.Join(problems, "; "))
	}
	return nil
}

// ErrShape is wrapped by Verify's errors about a table's shape.
var ErrShape = errors.New("table has the wrong shape")

// Common type sets.
var (
	Text        = []string{"text", "character varying"}
	BigInt      = []string{"bigint"}
	Int         = []string{"integer", "bigint"}
	Bool        = []string{"boolean"}
	Timestamptz = []string{"timestamp with time zone"}
	JSONB       = []string{"jsonb"}
	OID         = []string{"oid"}
)

// ErrNotOurs is wrapped by CheckOwned's errors.
var ErrNotOurs = errors.New("owned by another role")

// CheckOwned checks that schema and everything in it (tables, functions,
// types) belong to the current role or to a superuser, and takes every
// privilege on them away from PUBLIC. A schema someone else created first
// (to put their own code or records where the pipeline looks) is an error
// naming the owner: the pipeline refuses to start on it.
func CheckOwned(ctx context.Context, q Querier, schema string) error {
	rows, err := q.Query(ctx, `
		SELECT kind, name, owner FROM (
			SELECT 'schema' AS kind, n.nspname::text AS name, n.nspowner AS ownerid FROM pg_catalog.pg_namespace n WHERE n.nspname = $1
			UNION ALL
			SELECT 'relation', c.relname::text, c.relowner FROM pg_catalog.pg_class c
			JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1
			UNION ALL
			SELECT 'function', p.proname::text, p.proowner FROM pg_catalog.pg_proc p
			JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1
			UNION ALL
			SELECT 'type', t.typname::text, t.typowner FROM pg_catalog.pg_type t
			JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1
		) o CROSS JOIN LATERAL (SELECT r.rolname::text AS owner, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = o.ownerid) r
		WHERE r.owner <> current_user AND NOT r.rolsuper`, schema)
	if err != nil {
		return fmt.Errorf("check the owners in %s: %w", schema, err)
	}
	var kind, name, owner string
	var foreign []string
	if _, err := pgx.ForEachRow(rows, []any{&kind, &name, &owner}, func() error {
		foreign = append(foreign, fmt.Sprintf("%s %s (owner %s)", kind, name, owner))
		return nil
	}); err != nil {
		return fmt.Errorf("check the owners in %s: %w", schema, err)
	}
	if len(foreign) > 0 {
		return fmt.Errorf("%w: in schema %s, %s: this pipeline keeps its records and code there and trusts only its own "+
			"role or a superuser with them; drop or re-own them after checking who created them",
			ErrNotOurs, schema, strings.Join(foreign, ", "))
	}
	return nil
}

// RevokeSQL takes every privilege on schema and the tables in it away from
// PUBLIC (the pipeline's own role keeps its owner's rights).
func RevokeSQL(schema string) string {
	s := pgx.Identifier{schema}.Sanitize()
	return "REVOKE ALL ON SCHEMA " + s + " FROM PUBLIC; REVOKE ALL ON ALL TABLES IN SCHEMA " + s + " FROM PUBLIC"
}

//go:embed foreign_references.sql
var foreignReferencesSQL string

// ForeignRows lists the tables that hold rows referencing, by a foreign
// key, the rows of tables (all in public) whose tenant_id is id: the rows a
// cleanup of id deletes. Deleting them would fail (RESTRICT), cascade into
// those rows or set their columns NULL, so such a tenant is refused. Rows of
// tables itself count too, unless they are id's own (its OAuth accounts
// referencing its users, say): a key between two listed tables reaches the
// rows of other tenants just the same. Each is described as
// "schema.table (foreign key name to table)".
//
// Rows inserted by a transaction that has not committed yet are not seen:
// call it after LockRows, in the same transaction as the delete.
func ForeignRows(ctx context.Context, q Querier, tables []string, id string) ([]string, error) {
	rows, err := q.Query(ctx, foreignReferencesSQL, tables)
	if err != nil {
		return nil, fmt.Errorf("read foreign keys: %w", err)
	}
	type ref struct {
		name, schema, table, target string
		cols, targetCols            []string
		inList                      bool
	}
	refs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ref, error) {
		var f ref
		err := r.Scan(&f.name, &f.schema, &f.table, &f.cols, &f.target, &f.targetCols, &f.inList)
		return f, err
	})
	if err != nil {
		return nil, fmt.Errorf("read foreign keys: %w", err)
	}
	var found []string
	for _, f := range refs {
		others := "" // every referencing row counts
		if f.inList {
			others = " AND r.tenant_id IS DISTINCT FROM $1" // the tenant's own rows go with it
		}
		sql := fmt.Sprintf("SELECT EXISTS (SELECT 1 FROM ONLY %s r WHERE (%s) IN (SELECT %s FROM ONLY %s t WHERE t.tenant_id = $1)%s)",
			pgx.Identifier{f.schema, f.table}.Sanitize(), columns("r", f.cols), columns("t", f.targetCols),
			pgx.Identifier{"public", f.target}.Sanitize(), others)
		var exists bool
		if err := q.QueryRow(ctx, sql, id).Scan(&exists); err != nil {
			return nil, fmt.Errorf("look for rows referencing %s: %w", id, err)
		}
		if exists {
			whose := ""
			if f.inList {
				whose = ", rows of other tenants"
			}
			found = append(found, fmt.Sprintf("%s.%s (foreign key %s to %s%s)", f.schema, f.table, f.name, f.target, whose))
		}
	}
	return found, nil
}

// columns is a quoted, qualified column list.
func columns(alias string, names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = alias + "." + pgx.Identifier{n}.Sanitize()
	}
	return strings.Join(out, ", ")
}
