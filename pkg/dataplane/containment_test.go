package dataplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// catalogDigest sums up the whole database's catalog: equal before and after
// a drop means it removed or changed nothing anywhere.
func catalogDigest(t *testing.T, dbs *testenv.Databases) string {
	t.Helper()
	var d string
	err := dbs.Data.QueryRow(context.Background(), `SELECT concat_ws(',',
		(SELECT count(*) FROM pg_class), (SELECT count(*) FROM pg_type), (SELECT count(*) FROM pg_proc),
		(SELECT count(*) FROM pg_constraint), (SELECT count(*) FROM pg_trigger), (SELECT count(*) FROM pg_rewrite),
		(SELECT count(*) FROM pg_policy), (SELECT count(*) FROM pg_depend), (SELECT count(*) FROM pg_inherits),
		(SELECT count(*) FROM pg_attribute WHERE NOT attisdropped), (SELECT count(*) FROM pg_attrdef),
		(SELECT count(*) FROM pg_publication_rel), (SELECT count(*) FROM pg_publication_namespace),
		(SELECT count(*) FROM pg_cast), (SELECT count(*) FROM pg_operator), (SELECT count(*) FROM pg_statistic_ext),
		(SELECT count(*) FROM pg_extension), (SELECT count(*) FROM pg_ts_config), (SELECT count(*) FROM pg_collation),
		(SELECT count(*) FROM pg_namespace))`).Scan(&d)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestContainmentRefusesEveryPath builds, for each path by which
// PostgreSQL's DROP … CASCADE can reach outside a tenant's schema, an object
// outside it on that path. The drop must refuse the tenant, name the object,
// and change nothing anywhere; once the object is gone, the same tenant is
// cleaned and the other tenant is untouched. Both the one-transaction drop
// and the batched drop of huge schemas are tried.
func TestContainmentRefusesEveryPath(t *testing.T) {
	a := `"` + idA + `"`
	b := `"` + idB + `"`
	cases := []struct {
		name, create, remove, want string
	}{
		{"partition in public", `CREATE TABLE ` + a + `.pt (id int, k int) PARTITION BY RANGE (id);
			CREATE TABLE public.pt_1 PARTITION OF ` + a + `.pt FOR VALUES FROM (0) TO (10)`,
			`DROP TABLE public.pt_1`, "table public.pt_1"},
		{"partition in another tenant", `CREATE TABLE ` + a + `.pt (id int) PARTITION BY RANGE (id);
			CREATE TABLE ` + b + `.pt_b PARTITION OF ` + a + `.pt FOR VALUES FROM (0) TO (10)`,
			`ALTER TABLE ` + a + `.pt DETACH PARTITION ` + b + `.pt_b`, idB + `".pt_b`},
		{"sub-partition in public", `CREATE TABLE ` + a + `.pt (id int, k int) PARTITION BY RANGE (id);
			CREATE TABLE ` + a + `.pt_1 PARTITION OF ` + a + `.pt FOR VALUES FROM (0) TO (10) PARTITION BY LIST (k);
			CREATE TABLE public.pt_1_1 PARTITION OF ` + a + `.pt_1 FOR VALUES IN (1)`,
			`DROP TABLE public.pt_1_1`, "table public.pt_1_1"},
		{"inheritance child in public", `CREATE TABLE public.kid () INHERITS (` + a + `.document)`,
			`DROP TABLE public.kid`, "table public.kid"},
		{"view in public", `CREATE VIEW public.v AS SELECT id FROM ` + a + `.document`,
			`DROP VIEW public.v`, "view public.v"},
		{"materialized view in public", `CREATE MATERIALIZED VIEW public.mv AS SELECT id FROM ` + a + `.document`,
			`DROP MATERIALIZED VIEW public.mv`, "materialized view public.mv"},
		{"foreign key from public", `CREATE TABLE public.refs (d varchar REFERENCES ` + a + `.document (id))`,
			`DROP TABLE public.refs`, "public.refs"},
		{"foreign key to public", `CREATE TABLE public.target (id int PRIMARY KEY);
			CREATE TABLE ` + a + `.pointer (t int REFERENCES public.target (id))`,
			`DROP TABLE ` + a + `.pointer`, "public.target"},
		{"trigger calling a tenant function", `CREATE FUNCTION ` + a + `.f() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
			CREATE TABLE public.trig (x int); CREATE TRIGGER t BEFORE INSERT ON public.trig FOR EACH ROW EXECUTE FUNCTION ` + a + `.f()`,
			`DROP TABLE public.trig`, "trigger t on public.trig"},
		{"rule referencing a tenant table", `CREATE TABLE public.ruled (x int);
			CREATE RULE r AS ON INSERT TO public.ruled DO ALSO DELETE FROM ` + a + `.document`,
			`DROP TABLE public.ruled`, "rule r on public.ruled"},
		{"policy referencing a tenant table", `CREATE TABLE public.pol (x int);
			CREATE POLICY p ON public.pol USING (EXISTS (SELECT 1 FROM ` + a + `.document))`,
			`DROP TABLE public.pol`, "policy p on public.pol"},
		{"publication of a tenant table", `CREATE PUBLICATION pub_t FOR TABLE ` + a + `.document`,
			`DROP PUBLICATION pub_t`, "publication pub_t"},
		{"publication of the schema", `CREATE PUBLICATION pub_s FOR TABLES IN SCHEMA ` + a,
			`DROP PUBLICATION pub_s`, "publication pub_s"},
		{"domain used by an outside column", `CREATE DOMAIN ` + a + `.dom AS int; CREATE TABLE public.typed (x ` + a + `.dom)`,
			`DROP TABLE public.typed`, "public.typed.x"},
		{"enum used by an outside column", `CREATE TYPE ` + a + `.mood AS ENUM ('ok'); CREATE TABLE public.typed (x ` + a + `.mood)`,
			`DROP TABLE public.typed`, "public.typed.x"},
		{"composite type used by an outside column", `CREATE TYPE ` + a + `.pair AS (l int, r int); CREATE TABLE public.typed (x ` + a + `.pair)`,
			`DROP TABLE public.typed`, "public.typed.x"},
		{"row type of a tenant table used outside", `CREATE TABLE public.typed (x ` + a + `.connector)`,
			`DROP TABLE public.typed`, "public.typed.x"},
		{"sequence used by an outside default", `CREATE TABLE public.seqd (x bigint DEFAULT nextval('` + a + `.connector_credential_pair_id_seq'))`,
			`DROP TABLE public.seqd`, "default value for public.seqd.x"},
		{"function used by an outside default, check and index", `CREATE FUNCTION ` + a + `.g(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT $1';
			CREATE TABLE public.fx (x int DEFAULT ` + a + `.g(1) CHECK (` + a + `.g(x) > 0)); CREATE INDEX fx_i ON public.fx (` + a + `.g(x))`,
			`DROP TABLE public.fx`, "index public.fx_i"},
		{"extension member", `CREATE TABLE ` + a + `.ext_t (x int); ALTER EXTENSION pgcrypto ADD TABLE ` + a + `.ext_t`,
			`ALTER EXTENSION pgcrypto DROP TABLE ` + a + `.ext_t`, "extension pgcrypto"},
		{"cast between outside types by a tenant function", `CREATE TYPE public.pt AS (v int);
			CREATE FUNCTION ` + a + `.cf(public.pt) RETURNS int LANGUAGE sql AS 'SELECT 1';
			CREATE CAST (public.pt AS int) WITH FUNCTION ` + a + `.cf(public.pt)`,
			`DROP CAST (public.pt AS int)`, "cast (public.pt AS integer)"},
		{"operator", `CREATE FUNCTION ` + a + `.op(int, int) RETURNS bool LANGUAGE sql AS 'SELECT true';
			CREATE OPERATOR public.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = ` + a + `.op)`,
			`DROP OPERATOR public.=== (int, int)`, "operator public.==="},
		{"aggregate", `CREATE FUNCTION ` + a + `.acc(int, int) RETURNS int LANGUAGE sql AS 'SELECT $1 + $2';
			CREATE AGGREGATE public.total(int) (SFUNC = ` + a + `.acc, STYPE = int)`,
			`DROP AGGREGATE public.total(int)`, "aggregate public.total"},
		{"statistics object", `CREATE STATISTICS public.st ON id, semantic_id FROM ` + a + `.document`,
			`DROP STATISTICS public.st`, "statistics object public.st"},
		{"collation used by an outside column", `CREATE COLLATION ` + a + `.c (locale = 'C'); CREATE TABLE public.coll (x text COLLATE ` + a + `.c)`,
			`DROP TABLE public.coll`, "public.coll.x"},
		{"text search dictionary", `CREATE TEXT SEARCH DICTIONARY ` + a + `.dict (TEMPLATE = simple);
			CREATE TEXT SEARCH CONFIGURATION public.cfg (COPY = english);
			ALTER TEXT SEARCH CONFIGURATION public.cfg ALTER MAPPING FOR asciiword WITH ` + a + `.dict`,
			`DROP TEXT SEARCH CONFIGURATION public.cfg`, "text search configuration public.cfg"},
		{"tenant table partition of an outside table", `CREATE TABLE public.parent (id int, k int) PARTITION BY LIST (k);
			CREATE TABLE ` + a + `.part PARTITION OF public.parent FOR VALUES IN (1)`,
			`ALTER TABLE public.parent DETACH PARTITION ` + a + `.part`, "table public.parent (its partition part"},
		{"tenant table child of an outside table", `CREATE TABLE public.base (x int); CREATE TABLE ` + a + `.kid () INHERITS (public.base)`,
			`ALTER TABLE ` + a + `.kid NO INHERIT public.base`, "table public.base (its inheritance child kid"},
	}
	for _, path := range []struct {
		name   string
		budget int
	}{{"one transaction", 0}, {"batched", 60}} {
		t.Run(path.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					dbs, s := setup(t, Options{LockBudget: path.budget})
					ctx := context.Background()
					dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 6, Pairs: 1, DocsPerPair: 2})
					dbs.CreateTenant(t, testenv.Tenant{ID: idB, Filler: 1, Pairs: 1, DocsPerPair: 2})
					dbs.ExecData(t, c.create)
					before, catalog, other := dbs.Fingerprint(t, idA), catalogDigest(t, dbs), dbs.Fingerprint(t, idB)

					_, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) })
					var refused *tenant.RefusedError
					if !errors.As(err, &refused) || !strings.Contains(refused.Reason, c.want) {
						t.Fatalf("drop: %v; want a refusal naming %q", err, c.want)
					}
					if dbs.Fingerprint(t, idA) != before || catalogDigest(t, dbs) != catalog || dbs.Fingerprint(t, idB) != other {
						t.Fatal("a refused drop changed something")
					}
					if rec, _ := s.Record(ctx, idA); rec.DropStarted() {
						t.Fatal("a refused drop was recorded as started")
					}

					dbs.ExecData(t, c.remove)
					other = dbs.Fingerprint(t, idB)
					if _, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) }); err != nil {
						t.Fatalf("drop once the outside object is gone: %v", err)
					}
					if dbs.SchemaExists(t, idA) || dbs.Fingerprint(t, idB) != other {
						t.Fatal("the tenant was not dropped, or the other tenant changed")
					}
				})
			}
		})
	}
}

// TestContainedKindsAreCleaned: a tenant whose schema holds every kind of
// relation and object, all contained in it, is dropped whole, in one
// transaction and in batches.
func TestContainedKindsAreCleaned(t *testing.T) {
	a := `"` + idA + `"`
	kinds := `
		CREATE MATERIALIZED VIEW ` + a + `.mv AS SELECT id FROM ` + a + `.document;
		CREATE VIEW ` + a + `.v AS SELECT id FROM ` + a + `.mv;
		CREATE TABLE ` + a + `.pt (id int, k int) PARTITION BY RANGE (id);
		CREATE TABLE ` + a + `.pt_1 PARTITION OF ` + a + `.pt FOR VALUES FROM (0) TO (10) PARTITION BY LIST (k);
		CREATE TABLE ` + a + `.pt_1_1 PARTITION OF ` + a + `.pt_1 FOR VALUES IN (1);
		CREATE TABLE ` + a + `.pt_2 PARTITION OF ` + a + `.pt FOR VALUES FROM (10) TO (20);
		CREATE INDEX ON ` + a + `.pt (k);
		CREATE TABLE ` + a + `.base (x int); CREATE TABLE ` + a + `.kid () INHERITS (` + a + `.base);
		CREATE TYPE ` + a + `.mood AS ENUM ('ok'); CREATE DOMAIN ` + a + `.dom AS int CHECK (VALUE > 0);
		CREATE TYPE ` + a + `.pair AS (l int, r int);
		CREATE TABLE ` + a + `.typed (m ` + a + `.mood, d ` + a + `.dom, p ` + a + `.pair);
		CREATE FUNCTION ` + a + `.f() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
		CREATE TRIGGER t BEFORE INSERT ON ` + a + `.typed FOR EACH ROW EXECUTE FUNCTION ` + a + `.f();
		CREATE RULE r AS ON UPDATE TO ` + a + `.typed DO ALSO NOTIFY typed;
		ALTER TABLE ` + a + `.typed ENABLE ROW LEVEL SECURITY; CREATE POLICY p ON ` + a + `.typed USING (d > 0);
		CREATE STATISTICS ` + a + `.st ON id, semantic_id FROM ` + a + `.document;
		CREATE SEQUENCE ` + a + `.loose;
		CREATE TYPE ` + a + `.span AS RANGE (subtype = int);
		CREATE TYPE ` + a + `.t1 AS (v int); CREATE TYPE ` + a + `.t2 AS (v int);
		CREATE CAST (` + a + `.t1 AS ` + a + `.t2) WITH INOUT;
		CREATE FUNCTION ` + a + `.cf(` + a + `.t1) RETURNS int LANGUAGE sql AS 'SELECT 1';
		CREATE CAST (` + a + `.t1 AS int) WITH FUNCTION ` + a + `.cf(` + a + `.t1);
		CREATE FUNCTION ` + a + `.cmp(int, int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT CASE WHEN $1 < $2 THEN -1 WHEN $1 > $2 THEN 1 ELSE 0 END';
		CREATE OPERATOR CLASS ` + a + `.myops FOR TYPE int USING btree AS OPERATOR 1 <, OPERATOR 3 =, OPERATOR 5 >, FUNCTION 1 ` + a + `.cmp(int, int);
		CREATE EXTENSION IF NOT EXISTS file_fdw; CREATE SERVER IF NOT EXISTS files FOREIGN DATA WRAPPER file_fdw;
		CREATE FOREIGN TABLE ` + a + `.ft (x int) SERVER files OPTIONS (filename '/dev/null');`
	for _, budget := range []int{0, 60} {
		t.Run(map[int]string{0: "one transaction", 60: "batched"}[budget], func(t *testing.T) {
			dbs, s := setup(t, Options{LockBudget: budget})
			ctx := context.Background()
			if _, err := s.Ensure(ctx, true); err != nil { // the event trigger checks the drop too
				t.Fatal(err)
			}
			dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 6, Pairs: 1, DocsPerPair: 2})
			dbs.CreateTenant(t, testenv.Tenant{ID: idB, Filler: 1})
			dbs.ExecData(t, kinds)
			other := dbs.Fingerprint(t, idB)
			res, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) })
			if err != nil {
				t.Fatal(err)
			}
			if dbs.SchemaExists(t, idA) || dbs.Fingerprint(t, idB) != other ||
				(budget > 0 && res.Transactions < 3) || (budget == 0 && res.Transactions != 1) {
				t.Fatalf("drop = %+v; want the schema gone, nothing else changed", res)
			}
			if dbs.CountData(t, "SELECT count(*) FROM pg_foreign_server WHERE srvname = 'files'") != 1 {
				t.Fatal("the foreign server outside the schema is gone")
			}
		})
	}
}

// TestNetCatchesWhatTheLookDidNot: objects created from another session
// after a drop transaction's checks and before its DROP (a new activity
// table in the schema, an outside column of one of its types) are caught by
// the net inside the transaction, which rolls back: nothing is dropped. The
// next attempt sees them. With the sql_drop event trigger (a superuser
// role), PostgreSQL itself makes the same check.
func TestNetCatchesWhatTheLookDidNot(t *testing.T) {
	a := `"` + idA + `"`
	for _, c := range []struct {
		name, late, want string
		guard, batched   bool
	}{
		{"new activity table, locks", `CREATE TABLE ` + a + `.build_session (id int, last_activity_at timestamptz DEFAULT now());
			INSERT INTO ` + a + `.build_session (id) VALUES (1)`, "relation", false, false},
		{"new activity table, event trigger", `CREATE TABLE ` + a + `.build_session (id int, last_activity_at timestamptz DEFAULT now());
			INSERT INTO ` + a + `.build_session (id) VALUES (1)`, "relation", true, false},
		{"new activity table, batched", `CREATE TABLE ` + a + `.build_session (id int, last_activity_at timestamptz DEFAULT now());
			INSERT INTO ` + a + `.build_session (id) VALUES (1)`, "build_session", false, true},
		{"outside column of a tenant type, locks", `CREATE TABLE public.late (x ` + a + `.dom)`, "public.late", false, false},
		{"outside column of a tenant type, event trigger", `CREATE TABLE public.late (x ` + a + `.dom)`, "public.late", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			budget := 0
			if c.batched {
				budget = 60
			}
			dbs, s := setup(t, Options{LockBudget: budget})
			ctx := context.Background()
			if guarded, err := s.Ensure(ctx, c.guard); err != nil || guarded != c.guard {
				t.Fatalf("Ensure(guard %v) = %v, %v", c.guard, guarded, err)
			}
			dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 6, Pairs: 1, DocsPerPair: 2, LastQuery: testenv.DaysAgo(200)})
			dbs.ExecData(t, `CREATE DOMAIN `+a+`.dom AS int`)
			s.beforeDrop = onceBeforeDrop(ctx, dbs, c.late)
			check := func(f Facts) error {
				if time.Since(f.Activity.Last()) < 90*24*time.Hour {
					return tenant.Refuse(idA, "active %s", f.Activity.Last())
				}
				return nil
			}
			_, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: check}) })
			if err == nil || errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("drop with %s created between the look and the DROP: %v; want the net to name it", c.name, err)
			}
			t.Log(err)
			if !dbs.SchemaExists(t, idA) || dbs.CountData(t, "SELECT count(*) FROM pg_class WHERE relname IN ('build_session', 'late')") != 1 {
				t.Fatal("the net did not roll the drop back")
			}
			if rec, _ := s.Record(ctx, idA); rec.DropStarted() {
				t.Fatal("a rolled-back drop was recorded")
			}
			// The next attempt's look sees it: the new activity refuses the tenant.
			_, err = locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: check}) })
			if strings.Contains(c.late, "build_session") {
				if !errors.Is(err, tenant.ErrRefused) {
					t.Fatalf("the next attempt: %v; want refused for the new activity", err)
				}
			} else if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("the next attempt: %v; want refused, naming %s", err, c.want)
			}
		})
	}
}

// TestGuardTriggerLeavesOtherDropsAlone: the sql_drop event trigger only
// checks this pipeline's drop transactions.
func TestGuardTriggerLeavesOtherDropsAlone(t *testing.T) {
	dbs, s := setup(t, Options{})
	if guarded, err := s.Ensure(context.Background(), true); err != nil || !guarded {
		t.Fatalf("Ensure = %v, %v; want the trigger installed (the tests connect as a superuser)", guarded, err)
	}
	// Installing it twice is fine.
	if _, err := s.Ensure(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	dbs.ExecData(t, "CREATE TABLE public.scratch (x int); CREATE SCHEMA other; CREATE TABLE other.t (x int)")
	dbs.ExecData(t, "DROP TABLE public.scratch; DROP SCHEMA other CASCADE")
}

// The pipeline's statements resolve nothing through a schema someone else
// can write to: an operator planted in public that would be picked for the
// closure's comparisons (and run as the pipeline's role) is never called.
func TestPlantedOperatorIsNeverCalled(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 2, Pairs: 1, DocsPerPair: 2})
	dbs.ExecData(t, `CREATE TABLE public.calls (at timestamptz DEFAULT now());
		CREATE FUNCTION public.trap(oid, regclass) RETURNS bool LANGUAGE plpgsql AS $$
			BEGIN INSERT INTO public.calls DEFAULT VALUES; RETURN $1 = $2::oid; END $$;
		CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.trap);
		CREATE FUNCTION public.trap2(name, text) RETURNS bool LANGUAGE plpgsql AS $$
			BEGIN INSERT INTO public.calls DEFAULT VALUES; RETURN $1::text = $2; END $$;
		CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = text, FUNCTION = public.trap2)`)
	if _, err := locked(t, s, idA, func(tt *TenantSession) (bool, error) { return true, tt.CheckContained(ctx) }); err != nil {
		t.Fatal(err)
	}
	if _, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) }); err != nil {
		t.Fatal(err)
	}
	if n := dbs.CountData(t, "SELECT count(*) FROM public.calls"); n != 0 {
		t.Fatalf("a planted operator was called %d times by the pipeline's statements", n)
	}
}

// A tenant_cleanup schema created first by another role (to plant its own
// records or event-trigger code there) stops the pipeline at start.
func TestSchemaOfAnotherRoleIsRefused(t *testing.T) {
	dbs := testenv.NewDatabases(t)
	ctx := context.Background()
	role := fmt.Sprintf("tc_squatter_%d_%d", os.Getpid(), time.Now().UnixNano())
	dbs.ExecData(t, `CREATE ROLE `+role+` NOLOGIN`)
	t.Cleanup(func() { _, _ = dbs.Data.Exec(context.Background(), "DROP OWNED BY "+role+"; DROP ROLE "+role) })
	dbs.ExecData(t, `CREATE SCHEMA tenant_cleanup AUTHORIZATION `+role)
	s, err := New(ctx, dbs.Data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Ensure(ctx, true)
	if err == nil || !strings.Contains(err.Error(), "owner "+role) {
		t.Fatalf("Ensure on a schema another role owns: %v; want a refusal naming the owner", err)
	}
}

// A batched drop quarantines the schema in its look transaction: from then
// on nothing reaches the tenant's data under its name, and an activity table
// that appears in the quarantined schema anyway (created in the instant
// before the rename) stops the drop instead of being dropped unseen. A
// schema that takes the tenant's name meanwhile is not the one being dropped.
func TestBatchedDropQuarantinesTheSchema(t *testing.T) {
	dbs, s := setup(t, Options{LockBudget: 60})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 12, Pairs: 1, DocsPerPair: 2, LastQuery: testenv.DaysAgo(200)})
	dbs.CreateTenant(t, testenv.Tenant{ID: idB, Filler: 2, Pairs: 1, DocsPerPair: 2})
	quarantined := func() (name string) {
		_ = dbs.Data.QueryRow(ctx, `SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\_cleanup\_dropping\_%'`).Scan(&name)
		return name
	}
	s.afterDropTx = func(n int) error {
		if n != 1 {
			return nil
		}
		// The application can no longer write to the tenant.
		if _, err := dbs.Data.Exec(ctx, `INSERT INTO "`+idA+`".chat_message (chat_session_id, message, message_type)
			VALUES (gen_random_uuid(), 'late', 'USER')`); err == nil {
			return errors.New("a chat message was written to a tenant after its look")
		}
		// Another schema takes the tenant's name.
		if _, err := dbs.Data.Exec(ctx, `ALTER SCHEMA "`+idB+`" RENAME TO "`+idA+`"`); err != nil {
			return err
		}
		return nil
	}
	res, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) })
	if err != nil || res.Transactions < 3 {
		t.Fatalf("batched drop = %+v, %v", res, err)
	}
	if quarantined() != "" || !dbs.SchemaExists(t, idA) || dbs.CountData(t, `SELECT count(*) FROM "`+idA+`".document`) != 2 {
		t.Fatal("the drop did not end with its own schema, or it touched the schema that took the tenant's name")
	}

	// The race the quarantine closes: an activity table created in the
	// instant before the rename is found by the next transaction.
	dbs.ExecData(t, `ALTER SCHEMA "`+idA+`" RENAME TO "`+idB+`"`)
	dbs.CreateTenant(t, testenv.Tenant{ID: idC, Filler: 12, Pairs: 1, DocsPerPair: 2})
	s.afterDropTx = inQuarantineAfter(dbs, 1, `CREATE TABLE %I.build_session (last_activity_at timestamptz DEFAULT now())`)
	_, err = locked(t, s, idC, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) })
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "build_session appeared in its schema") {
		t.Fatalf("drop with an activity table created after the look: %v; want the rest left for review", err)
	}
	if name := quarantined(); name == "" || dbs.CountData(t, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = 'build_session'`, name) != 1 {
		t.Fatal("the late activity table was dropped")
	}
}

// A partition tree larger than the lock budget is dropped leaves first, a
// batch at a time, instead of failing "out of shared memory" for ever.
func TestHugePartitionTreeIsDroppedInBatches(t *testing.T) {
	dbs, s := setup(t, Options{LockBudget: 120})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Pairs: 1, DocsPerPair: 2})
	dbs.ExecData(t, `CREATE TABLE "`+idA+`".events (id int, k int) PARTITION BY LIST (k);
		DO $$ BEGIN FOR i IN 1..60 LOOP
			EXECUTE format('CREATE TABLE %I.events_%s PARTITION OF %I.events FOR VALUES IN (%s)', '`+idA+`', i, '`+idA+`', i);
		END LOOP; END $$`)
	res, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) })
	if err != nil || res.Transactions < 3 || dbs.SchemaExists(t, idA) {
		t.Fatalf("drop of a partition tree beyond the budget = %+v, %v", res, err)
	}
}

// The net compares in SQL now (net.sql: the transaction's ACCESS EXCLUSIVE
// locks EXCEPT the closure): objects a DROP reaches that are locked as
// objects (classid set: functions, types, operators, casts), not as
// relations, and that were created outside the schema after the look, are
// still caught and roll the drop back.
func TestNetCatchesLateObjectLocks(t *testing.T) {
	a := `"` + idA + `"`
	for _, c := range []struct{ name, late, kind string }{
		{"function in public over a tenant type", `CREATE FUNCTION public.late_fn(x ` + a + `.dom) RETURNS int LANGUAGE sql AS 'SELECT 1'`,
			"function "},
		{"domain in public over a tenant type", `CREATE DOMAIN public.late_dom AS ` + a + `.dom`, "type "},
		{"cast between a tenant type and text", `CREATE FUNCTION public.late_cast(` + a + `.comp) RETURNS text LANGUAGE sql AS 'SELECT ''x''';
			CREATE CAST (` + a + `.comp AS text) WITH FUNCTION public.late_cast(` + a + `.comp)`, "function "},
		{"operator in public over a tenant type", `CREATE FUNCTION public.late_eq(` + a + `.comp, ` + a + `.comp) RETURNS bool LANGUAGE sql AS 'SELECT true';
			CREATE OPERATOR public.=== (LEFTARG = ` + a + `.comp, RIGHTARG = ` + a + `.comp, FUNCTION = public.late_eq)`, "function "},
	} {
		t.Run(c.name, func(t *testing.T) {
			dbs, s := setup(t, Options{})
			ctx := context.Background()
			dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 2, LastQuery: testenv.DaysAgo(200)})
			dbs.ExecData(t, `CREATE DOMAIN `+a+`.dom AS int; CREATE TYPE `+a+`.comp AS (x int)`)
			s.beforeDrop = onceBeforeDrop(ctx, dbs, c.late)
			_, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) })
			if !errors.Is(err, errNet) || errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), c.kind) {
				t.Fatalf("drop with %s created between the look and the DROP: %v; want the net to catch it", c.name, err)
			}
			if !dbs.SchemaExists(t, idA) {
				t.Fatal("the net did not roll the drop back")
			}
			// What the DROP removed is gone in the transaction that checks it:
			// a function, type, cast or operator is named by its oid only.
			t.Log(err)
			if n := dbs.CountData(t, `SELECT count(*) FROM pg_proc WHERE proname LIKE 'late\_%'`) +
				dbs.CountData(t, `SELECT count(*) FROM pg_type WHERE typname = 'late_dom'`); n == 0 {
				t.Fatal("the late object is gone")
			}
		})
	}
}

// onceBeforeDrop is a beforeDrop hook that runs sql once, at the first drop.
func onceBeforeDrop(ctx context.Context, dbs *testenv.Databases, sql string) func() error {
	done := false
	return func() error {
		if done {
			return nil
		}
		done = true
		_, err := dbs.Data.Exec(ctx, sql)
		return err
	}
}
