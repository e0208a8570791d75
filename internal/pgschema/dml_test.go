package pgschema

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

var counter = pgx.Identifier{"public", "tenant_invite_counter"}.Sanitize()

// begin opens a transaction on pool, rolled back when the test ends.
func begin(t *testing.T, dbs *testenv.Databases) pgx.Tx {
	t.Helper()
	tx, err := dbs.Data.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

// elsewhere runs sql in a transaction of its own that waits for locks at
// most 100ms, and returns its error.
func elsewhere(t *testing.T, dbs *testenv.Databases, sql string) error {
	t.Helper()
	tx := begin(t, dbs)
	ctx := context.Background()
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = 100"); err != nil {
		t.Fatal(err)
	}
	_, err := tx.Exec(ctx, sql)
	_ = tx.Rollback(ctx)
	return err
}

func isLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}

// Between CheckCode and the end of its transaction, nobody can add a
// trigger to a table it checked (nor enable one), nor make a SECURITY
// DEFINER function it trusted SECURITY INVOKER: they wait for its locks.
func TestCheckCodeKeepsWhatItChecked(t *testing.T) {
	dbs := testenv.NewDatabases(t)
	ctx := context.Background()
	role := dbs.Role(t)
	dbs.ExecData(t, `CREATE FUNCTION public.f() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS 'BEGIN RETURN NULL; END';
		ALTER FUNCTION public.f() OWNER TO `+role+`;
		ALTER TABLE `+counter+` OWNER TO `+role+`;
		CREATE TRIGGER f AFTER DELETE ON `+counter+` FOR EACH ROW EXECUTE FUNCTION public.f();
		CREATE TRIGGER off AFTER DELETE ON `+counter+` FOR EACH ROW EXECUTE FUNCTION public.f();
		ALTER TABLE `+counter+` DISABLE TRIGGER off`)
	tx := begin(t, dbs)
	g, err := CheckCode(ctx, tx, DML{Delete: []string{counter}})
	if err != nil || len(g.Untrusted) != 0 {
		t.Fatalf("CheckCode = %+v, %v; want the SECURITY DEFINER trigger trusted", g, err)
	}
	for _, sql := range []string{
		"CREATE TRIGGER g AFTER DELETE ON " + counter + " FOR EACH ROW EXECUTE FUNCTION public.f()",
		"ALTER TABLE " + counter + " ENABLE TRIGGER off",
		"ALTER FUNCTION public.f() SECURITY INVOKER",
		"CREATE OR REPLACE FUNCTION public.f() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'",
	} {
		if err := elsewhere(t, dbs, sql); !isLockTimeout(err) {
			t.Errorf("%s while CheckCode's transaction runs: %v; want a lock timeout", sql, err)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := elsewhere(t, dbs, "ALTER FUNCTION public.f() SECURITY INVOKER"); err != nil {
		t.Fatalf("after CheckCode's transaction: %v", err)
	}
}

// A pipeline role that is no superuser cannot lock pg_proc rows, so it
// trusts no SECURITY DEFINER function of another role (which could be made
// SECURITY INVOKER before the DML runs); and a table a cascade reaches that
// it may not lock against new triggers is reported.
func TestCheckCodeWithoutSuperuser(t *testing.T) {
	dbs := testenv.NewDatabases(t)
	ctx := context.Background()
	pipeline, other := dbs.Role(t), dbs.Role(t)
	dbs.ExecData(t, `GRANT ALL ON `+counter+` TO `+pipeline+`;
		CREATE FUNCTION public.f() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS 'BEGIN RETURN NULL; END';
		ALTER FUNCTION public.f() OWNER TO `+other+`;
		CREATE TRIGGER f AFTER DELETE ON `+counter+` FOR EACH ROW EXECUTE FUNCTION public.f();
		CREATE TABLE public.counter_note (tenant_id varchar REFERENCES `+counter+` ON DELETE CASCADE);
		ALTER TABLE public.counter_note OWNER TO `+other)
	tx := begin(t, dbs)
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+pipeline); err != nil {
		t.Fatal(err)
	}
	g, err := CheckCode(ctx, tx, DML{Delete: []string{counter}})
	if err != nil {
		t.Fatal(err)
	}
	found := strings.Join(g.Untrusted, "\n")
	if !strings.Contains(found, "trigger f on public.tenant_invite_counter (function public.f() (owner "+other+"))") ||
		!strings.Contains(found, "table public.counter_note, which a cascading foreign key reaches") || len(g.Untrusted) != 2 {
		t.Fatalf("untrusted = %q; want the trigger of %s and public.counter_note", g.Untrusted, other)
	}
}

// The expressions a DML evaluates are vetted like triggers: an index
// expression or predicate and a generated column calling a function of
// another role (an UPDATE evaluates them on the new row), and, for a role
// that row-level security applies to, a policy calling one; a CHECK
// constraint of built-in immutable functions is trusted whoever owns the
// table, one that can run SQL (query_to_xml) is not.
func TestCheckCodeVetsExpressions(t *testing.T) {
	dbs := testenv.NewDatabases(t)
	ctx := context.Background()
	pipeline, other := dbs.Role(t), dbs.Role(t)
	dbs.ExecData(t, `CREATE TABLE public.vetted (id int, email text, flag boolean);
		CREATE FUNCTION public.f(int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 > 0';
		ALTER FUNCTION public.f(int) OWNER TO `+other+`;
		CREATE INDEX by_f ON public.vetted ((public.f(id)));
		CREATE INDEX partial ON public.vetted (id) WHERE public.f(id);
		ALTER TABLE public.vetted ADD COLUMN g boolean GENERATED ALWAYS AS (public.f(id)) STORED;
		ALTER TABLE public.vetted ADD CONSTRAINT lower_email CHECK (email = lower(email));
		ALTER TABLE public.vetted ADD CONSTRAINT runs_sql CHECK (query_to_xml('SELECT 1', true, true, '') IS NOT NULL);
		ALTER TABLE public.vetted ENABLE ROW LEVEL SECURITY;
		CREATE POLICY mine ON public.vetted USING (public.f(id));
		ALTER TABLE public.vetted OWNER TO `+other+`;
		GRANT ALL ON public.vetted TO `+pipeline)
	tx := begin(t, dbs)
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+pipeline); err != nil {
		t.Fatal(err)
	}
	g, err := CheckCode(ctx, tx, DML{Update: []string{"public.vetted"}})
	if err != nil {
		t.Fatal(err)
	}
	found := strings.Join(g.Untrusted, "\n")
	for _, want := range []string{
		"index by_f on public.vetted (function public.f(integer) (owner " + other + ")",
		"index partial on public.vetted (function public.f(integer) (owner " + other + ")",
		"generated column g on public.vetted (function public.f(integer) (owner " + other + ")",
		"policy mine on public.vetted (function public.f(integer) (owner " + other + ")",
		"check constraint runs_sql on public.vetted (table owned by, or open to triggers of, " + other + ")",
	} {
		if !strings.Contains(found, want) {
			t.Errorf("untrusted = %q; want %q", g.Untrusted, want)
		}
	}
	if strings.Contains(found, "lower_email") || len(g.Untrusted) != 5 {
		t.Errorf("untrusted = %q; want exactly the five above (lower_email is built-in and immutable)", g.Untrusted)
	}
}

// A policy's subquery reading a view of another role runs the view's
// functions as the pipeline's role: refused (so is one reading a table of
// another role, who may give it a policy meanwhile).
func TestCheckCodeFollowsPolicySubqueries(t *testing.T) {
	dbs := testenv.NewDatabases(t)
	ctx := context.Background()
	pipeline, other := dbs.Role(t), dbs.Role(t)
	dbs.ExecData(t, `CREATE TABLE public.vetted (id int);
		CREATE FUNCTION public.f() RETURNS boolean LANGUAGE plpgsql AS 'BEGIN RETURN true; END';
		ALTER FUNCTION public.f() OWNER TO `+other+`;
		CREATE VIEW public.v AS SELECT 1 AS x WHERE public.f();
		ALTER VIEW public.v OWNER TO `+other+`;
		ALTER TABLE public.vetted ENABLE ROW LEVEL SECURITY;
		CREATE POLICY mine ON public.vetted USING (EXISTS (SELECT 1 FROM public.v));
		ALTER TABLE public.vetted OWNER TO `+other+`;
		GRANT ALL ON public.vetted TO `+pipeline+`; GRANT SELECT ON public.v TO `+pipeline)
	tx := begin(t, dbs)
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+pipeline); err != nil {
		t.Fatal(err)
	}
	g, err := CheckCode(ctx, tx, DML{Update: []string{"public.vetted"}, Delete: []string{"public.vetted"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "policy reading mine (v) on public.vetted (a relation whose code is not vetted, owned by " + other + ")"
	if !strings.Contains(strings.Join(g.Untrusted, "\n"), want) {
		t.Fatalf("untrusted = %q; want %q", g.Untrusted, want)
	}
}

// ON DELETE SET DEFAULT evaluates the defaults of the foreign key's columns
// (as the referencing table's owner, here a superuser): one calling a
// function of another role is refused.
func TestCheckCodeVetsSetDefault(t *testing.T) {
	dbs := testenv.NewDatabases(t)
	ctx := context.Background()
	other := dbs.Role(t)
	dbs.ExecData(t, `CREATE TABLE public.parent (id int PRIMARY KEY);
		CREATE FUNCTION public.f() RETURNS int LANGUAGE plpgsql AS 'BEGIN RETURN 0; END';
		ALTER FUNCTION public.f() OWNER TO `+other+`;
		CREATE TABLE public.child (pid int DEFAULT public.f() REFERENCES public.parent ON DELETE SET DEFAULT)`)
	tx := begin(t, dbs)
	g, err := CheckCode(ctx, tx, DML{Delete: []string{"public.parent"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "column default pid on public.child (function public.f() (owner " + other + ")"
	if !strings.Contains(strings.Join(g.Untrusted, "\n"), want) {
		t.Fatalf("untrusted = %q; want %q", g.Untrusted, want)
	}
}
