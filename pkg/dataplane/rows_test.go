package dataplane

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// A foreign key between two of the public tables the cleanup deletes from
// (users invited by a user) is checked like any other: rows of another
// tenant referencing the tenant's rows refuse it, and nothing is deleted;
// the tenant's own rows referencing each other (and its OAuth accounts, the
// fixture's key between two listed tables) go with it.
func TestForeignRowsAmongPublicTables(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Users: 3})
	dbs.CreateTenant(t, testenv.Tenant{ID: idB, Users: 2})
	dbs.ExecData(t, `ALTER TABLE public.user_tenant_mapping ADD COLUMN invited_by_email varchar, ADD COLUMN invited_by_tenant varchar,
		ADD FOREIGN KEY (invited_by_email, invited_by_tenant) REFERENCES public.user_tenant_mapping (email, tenant_id) ON DELETE CASCADE`)
	invite := func(from, to string) {
		dbs.ExecData(t, `UPDATE public.user_tenant_mapping SET (invited_by_email, invited_by_tenant) =
			(SELECT email, tenant_id FROM public.user_tenant_mapping WHERE tenant_id = $1 ORDER BY email LIMIT 1)
			WHERE tenant_id = $2 AND email <> (SELECT min(email) FROM public.user_tenant_mapping WHERE tenant_id = $1)`, from, to)
	}
	invite(idA, idA) // the tenant's own users invited each other
	invite(idA, idB) // and users of another tenant
	publicA, publicB := dbs.PublicRows(t, idA), dbs.PublicRows(t, idB)
	deletePublic := func() (PublicRows, error) {
		return locked(t, s, idA, func(tt *TenantSession) (PublicRows, error) { return tt.DeletePublicRows(ctx) })
	}
	_, err := deletePublic()
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "public.user_tenant_mapping") ||
		!strings.Contains(err.Error(), "other tenants") {
		t.Fatalf("delete with another tenant's users referencing the tenant's: %v; want refused naming public.user_tenant_mapping", err)
	}
	if dbs.PublicRows(t, idA) != publicA || dbs.PublicRows(t, idB) != publicB {
		t.Fatal("a refused delete changed public rows")
	}
	// Once the other tenant's users no longer point at the tenant's, its
	// rows go, its own references among them included.
	dbs.ExecData(t, "UPDATE public.user_tenant_mapping SET invited_by_email = NULL, invited_by_tenant = NULL WHERE tenant_id = $1", idB)
	rows, err := deletePublic()
	if err != nil {
		t.Fatal(err)
	}
	if rows.UserMappings != 3 || rows.OAuthAccounts != 1 || dbs.PublicRows(t, idA) != 0 || dbs.PublicRows(t, idB) != publicB {
		t.Fatalf("deleted %+v; %d rows of %s left, %d of %s (had %d)", rows, dbs.PublicRows(t, idA), idA,
			dbs.PublicRows(t, idB), idB, publicB)
	}
}

// referenceUncommitted makes another session insert, without committing,
// rows of public.user_audit referencing the tenant's users (ON DELETE
// CASCADE); the returned transaction commits or rolls them back.
func referenceUncommitted(t *testing.T, dbs *testenv.Databases, id string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	dbs.ExecData(t, `CREATE TABLE public.user_audit (email varchar, tenant_id varchar, note text,
		FOREIGN KEY (email, tenant_id) REFERENCES public.user_tenant_mapping (email, tenant_id) ON DELETE CASCADE)`)
	other, err := dbs.Data.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Rollback(context.Background()) })
	if _, err := other.Exec(ctx, `INSERT INTO public.user_audit
		SELECT email, tenant_id, 'compliance export' FROM public.user_tenant_mapping WHERE tenant_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	return other
}

// waitForRowLock waits until a session waits for a lock in a statement
// locking rows FOR UPDATE.
func waitForRowLock(t *testing.T, dbs *testenv.Databases) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool {
		return dbs.CountData(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'`) > 0
	}, "the delete waits for the tenant's rows")
}

// rowRace is a tenant (idA) whose public rows another session references
// without committing (referenceUncommitted), locked by a store.
type rowRace struct {
	dbs    *testenv.Databases
	tt     *TenantSession // idA, locked until the test ends
	other  pgx.Tx         // the other session's transaction
	public int64          // idA's public rows at the start
}

// setupRowRace makes a rowRace with a store whose lock_timeout is lockTimeout.
func setupRowRace(t *testing.T, lockTimeout time.Duration) rowRace {
	t.Helper()
	dbs, s := setup(t, Options{LockTimeout: lockTimeout})
	dbs.CreateTenant(t, testenv.Tenant{ID: idA})
	r := rowRace{dbs: dbs, public: dbs.PublicRows(t, idA), other: referenceUncommitted(t, dbs, idA)}
	r.tt = lock(t, s, idA)
	t.Cleanup(r.tt.Release)
	return r
}

// A row referencing the tenant's public rows, inserted by a transaction that
// has not committed when the delete begins, cannot slip past the foreign-key
// check: the delete locks the tenant's rows first and waits for that
// transaction; once it commits, the check sees its rows and refuses the
// tenant, and the rows survive (rather than being deleted by the cascade).
func TestForeignRowsCannotBeRaced(t *testing.T) {
	r := setupRowRace(t, time.Minute)
	dbs, tt, other, public := r.dbs, r.tt, r.other, r.public
	ctx := context.Background()
	result := make(chan error, 1)
	go func() {
		_, err := tt.DeletePublicRows(ctx)
		result <- err
	}()
	waitForRowLock(t, dbs)
	if err := other.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-result:
	case <-time.After(30 * time.Second):
		t.Fatal("the delete did not finish")
	}
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "public.user_audit") {
		t.Fatalf("delete racing a referencing insert: %v; want refused naming public.user_audit", err)
	}
	if n := dbs.CountData(t, "SELECT count(*) FROM public.user_audit"); n != 2 || dbs.PublicRows(t, idA) != public {
		t.Fatalf("%d rows of public.user_audit left (2 inserted), %d public rows of the tenant (had %d)", n, dbs.PublicRows(t, idA), public)
	}
}

// Waiting for the rows of a tenant longer than the lock timeout is "later",
// not a failure, and changes nothing; once the other transaction is gone
// (rolled back), the delete goes through.
func TestRowLockTimeoutIsLater(t *testing.T) {
	r := setupRowRace(t, 200*time.Millisecond)
	dbs, tt, other, public := r.dbs, r.tt, r.other, r.public
	ctx := context.Background()
	if _, err := tt.DeletePublicRows(ctx); !errors.Is(err, tenant.ErrLater) {
		t.Fatalf("delete while another transaction references the rows: %v; want later", err)
	}
	if _, err := tt.Drop(ctx, DropChecks{Look: noCheck}); !errors.Is(err, tenant.ErrLater) {
		t.Fatalf("drop while another transaction references the public rows: %v; want later", err)
	}
	if !dbs.SchemaExists(t, idA) || dbs.PublicRows(t, idA) != public {
		t.Fatal("a delete that timed out changed the tenant")
	}
	if err := other.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tt.Drop(ctx, DropChecks{Look: noCheck}); err != nil {
		t.Fatal(err)
	}
	if dbs.SchemaExists(t, idA) || dbs.PublicRows(t, idA) != 0 {
		t.Fatal("the tenant was not cleaned")
	}
}

// escalateSQL creates public.escalate(), a trigger function that makes role
// a superuser when a superuser runs it, owned by owner.
func escalateSQL(role, owner string) string {
	return `CREATE FUNCTION public.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
				EXECUTE 'ALTER ROLE ` + role + ` SUPERUSER';
			END IF;
			RETURN NULL;
		END $$;
		ALTER FUNCTION public.escalate() OWNER TO ` + owner
}

// tenantAndRole creates tenant idA (a pair, two documents) and a role, and
// runs sql(role) on the data plane.
func tenantAndRole(t *testing.T, sql func(role string) string) (*testenv.Databases, *Store, string) {
	t.Helper()
	dbs, s := setup(t, Options{})
	role := dbs.Role(t)
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Pairs: 1, DocsPerPair: 2})
	dbs.ExecData(t, sql(role))
	return dbs, s, role
}

func isSuperuser(t *testing.T, dbs *testenv.Databases, role string) bool {
	t.Helper()
	return dbs.CountData(t, "SELECT count(*) FROM pg_roles WHERE rolname = $1 AND rolsuper", role) == 1
}

// The triggers of another role on a table the cleanup changes (the public
// tables it deletes from, the tables of the tenant marking updates, a table
// a cascade reaches) would run with the pipeline's privileges (a superuser's
// here): the tenant is refused, naming the trigger, its table and the role,
// and nothing changes. A SECURITY DEFINER function runs as its owner, and
// the pipeline's own triggers are its own: those do not refuse.
func TestTriggersOfOtherRoles(t *testing.T) {
	const counter = "public.tenant_invite_counter"
	cases := []struct {
		name  string
		setup func(role string) string
		mark  bool // the marking is refused, not the drop
		ok    bool
	}{
		{"function and table of another role", func(r string) string {
			return escalateSQL(r, r) + "; ALTER TABLE " + counter + " OWNER TO " + r +
				"; CREATE TRIGGER escalate AFTER DELETE ON " + counter + " FOR EACH ROW EXECUTE FUNCTION public.escalate()"
		}, false, false},
		{"function of another role", func(r string) string {
			return escalateSQL(r, r) + "; CREATE TRIGGER escalate AFTER DELETE ON " + counter + " FOR EACH ROW EXECUTE FUNCTION public.escalate()"
		}, false, false},
		{"the pipeline's function on a table of another role", func(r string) string {
			return escalateSQL(r, "CURRENT_USER") + "; ALTER TABLE " + counter + " OWNER TO " + r +
				"; CREATE TRIGGER escalate AFTER DELETE ON " + counter + " FOR EACH ROW EXECUTE FUNCTION public.escalate()"
		}, false, false},
		{"a table a cascade reaches, statement trigger, no rows", func(r string) string {
			return escalateSQL(r, r) + `; CREATE TABLE public.user_note (email varchar, tenant_id varchar,
				FOREIGN KEY (email, tenant_id) REFERENCES public.user_tenant_mapping (email, tenant_id) ON DELETE CASCADE);
				ALTER TABLE public.user_note OWNER TO ` + r + `;
				CREATE TRIGGER escalate AFTER DELETE ON public.user_note FOR EACH STATEMENT EXECUTE FUNCTION public.escalate()`
		}, false, false},
		{"SECURITY DEFINER with a WHEN clause", func(r string) string {
			return escalateSQL(r, r) + "; ALTER FUNCTION public.escalate() SECURITY DEFINER; ALTER TABLE " + counter + " OWNER TO " + r +
				"; CREATE TRIGGER escalate AFTER DELETE ON " + counter + " FOR EACH ROW WHEN (OLD.invite_count >= 0) EXECUTE FUNCTION public.escalate()"
		}, false, false},
		{"tenant table the marking updates", func(r string) string {
			return escalateSQL(r, r) + `; CREATE TRIGGER escalate AFTER UPDATE ON "` + idA + `".connector_credential_pair
				FOR EACH ROW EXECUTE FUNCTION public.escalate()`
		}, true, false},
		{"SECURITY DEFINER", func(r string) string {
			return escalateSQL(r, r) + "; ALTER FUNCTION public.escalate() SECURITY DEFINER; ALTER TABLE " + counter + " OWNER TO " + r +
				"; CREATE TRIGGER escalate AFTER DELETE ON " + counter + " FOR EACH ROW EXECUTE FUNCTION public.escalate()"
		}, false, true},
		{"the pipeline's own trigger", func(string) string {
			return `CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
				CREATE TRIGGER escalate AFTER DELETE ON ` + counter + ` FOR EACH ROW EXECUTE FUNCTION public.audit();
				CREATE TRIGGER escalate AFTER UPDATE ON "` + idA + `".connector_credential_pair FOR EACH ROW EXECUTE FUNCTION public.audit()`
		}, false, true},
		{"disabled trigger of another role", func(r string) string {
			return escalateSQL(r, r) + "; CREATE TRIGGER escalate AFTER DELETE ON " + counter +
				" FOR EACH ROW EXECUTE FUNCTION public.escalate(); ALTER TABLE " + counter + " DISABLE TRIGGER escalate"
		}, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dbs, s, role := tenantAndRole(t, c.setup)
			ctx := context.Background()
			fingerprint, public := dbs.Fingerprint(t, idA), dbs.PublicRows(t, idA)
			tt := lock(t, s, idA)
			defer tt.Release()
			_, markErr := tt.Mark(ctx, "test", noCheck)
			var dropErr error
			if markErr == nil {
				_, dropErr = tt.Drop(ctx, DropChecks{Look: noCheck})
			}
			if isSuperuser(t, dbs, role) {
				t.Fatalf("%s became a superuser through the cleanup", role)
			}
			if c.ok {
				if markErr != nil || dropErr != nil {
					t.Fatalf("mark: %v; drop: %v; want the tenant cleaned", markErr, dropErr)
				}
				if dbs.SchemaExists(t, idA) || dbs.PublicRows(t, idA) != 0 {
					t.Fatal("the tenant was not cleaned")
				}
				return
			}
			err := dropErr
			if c.mark {
				err = markErr
				if fp := dbs.Fingerprint(t, idA); fp != fingerprint {
					t.Fatal("a refused marking changed the tenant")
				}
			} else if markErr != nil {
				t.Fatalf("mark: %v", markErr)
			}
			if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "trigger escalate on") ||
				!strings.Contains(err.Error(), role) {
				t.Fatalf("cleanup with the trigger: %v; want refused naming the trigger and %s", err, role)
			}
			if !dbs.SchemaExists(t, idA) || dbs.PublicRows(t, idA) != public {
				t.Fatal("a refused tenant was changed")
			}
		})
	}
}

// A trigger function running as its owner (SECURITY DEFINER) can still set
// search_path for the whole session, so that the pipeline's next statements,
// on that connection, would call that role's functions: the delete is
// refused and rolled back, which undoes the setting.
func TestTriggerChangingTheSessionIsRefused(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	role := dbs.Role(t)
	dbs.CreateTenant(t, testenv.Tenant{ID: idA})
	dbs.ExecData(t, `CREATE FUNCTION public.hijack() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
		BEGIN PERFORM set_config('search_path', 'public, pg_catalog', false); RETURN NULL; END $$;
		ALTER FUNCTION public.hijack() OWNER TO `+role+`;
		ALTER TABLE public.tenant_invite_counter OWNER TO `+role+`;
		CREATE TRIGGER hijack AFTER DELETE ON public.tenant_invite_counter FOR EACH ROW EXECUTE FUNCTION public.hijack()`)
	public := dbs.PublicRows(t, idA)
	tt := lock(t, s, idA)
	defer tt.Release()
	if _, err := tt.DeletePublicRows(ctx); !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "search_path") {
		t.Fatalf("delete under a trigger setting search_path: %v; want refused", err)
	}
	var path string
	if err := tt.conn.QueryRow(ctx, "SHOW search_path").Scan(&path); err != nil || path != "pg_catalog, pg_temp" {
		t.Fatalf("search_path of the pipeline's connection after the refusal: %q, %v", path, err)
	}
	if dbs.PublicRows(t, idA) != public {
		t.Fatal("a refused delete changed the public rows")
	}
}

// DeletePublicRows skips its transaction when no public rows are left and
// the record says they were deleted: a row of the tenant inserted after the
// drop's look transaction deleted them (Onyx inviting a user meanwhile) is
// still deleted, and counted in the record; none left, nothing changes.
func TestDeletePublicRowsAfterTheLook(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Users: 3, LastQuery: testenv.DaysAgo(200)})
	res, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) })
	if err != nil {
		t.Fatal(err)
	}
	first := res.PublicRows.Total()
	if first == 0 || dbs.PublicRows(t, idA) != 0 {
		t.Fatalf("the look deleted %d public rows, %d left", first, dbs.PublicRows(t, idA))
	}
	rec, _ := s.Record(ctx, idA)
	at := rec.PublicRowsDeletedAt
	dbs.ExecData(t, "INSERT INTO public.tenant_sso_domain (domain, tenant_id) VALUES ('late.example', $1)", idA)
	rows, err := locked(t, s, idA, func(tt *TenantSession) (PublicRows, error) { return tt.DeletePublicRows(ctx) })
	if err != nil || rows.SSODomains != 1 || dbs.PublicRows(t, idA) != 0 {
		t.Fatalf("delete after the look = %+v, %v; %d left", rows, err, dbs.PublicRows(t, idA))
	}
	rec, _ = s.Record(ctx, idA)
	if rec.PublicRowsDeleted != first+1 || !rec.PublicRowsDeletedAt.After(at) {
		t.Fatalf("record: %d deleted at %s; want %d, after %s", rec.PublicRowsDeleted, rec.PublicRowsDeletedAt, first+1, at)
	}
	// None left: nothing changes.
	again, err := locked(t, s, idA, func(tt *TenantSession) (PublicRows, error) { return tt.DeletePublicRows(ctx) })
	if err != nil || again.Total() != 0 {
		t.Fatalf("delete with none left = %+v, %v", again, err)
	}
	if r, _ := s.Record(ctx, idA); r.PublicRowsDeleted != first+1 {
		t.Fatalf("record after a delete with none left: %d", r.PublicRowsDeleted)
	}
}

// An UPDATE evaluates more code than triggers: the CHECK constraints of the
// table and of the domains of its columns, generated columns (and index
// expressions: TestCheckCodeVetsExpressions). Marking updates the tenant's
// pairs: such code of another
// role, or written by another role with functions that can run any SQL
// (query_to_xml), would run with the pipeline's privileges (a superuser's
// here); the marking is refused, naming it, and nothing changes. Expressions
// of immutable functions of trusted roles are safe whoever wrote them (a
// lowercase-email check on a table of Onyx's role, say).
func TestExpressionsOfOtherRoles(t *testing.T) {
	pairs := pgx.Identifier{idA, "connector_credential_pair"}.Sanitize()
	// escalate makes public.escalates(), of role r: once public.armed has a
	// row (after the set-up, which runs as a superuser too), it makes r a
	// superuser when a superuser calls it; public.escalates_i() is an
	// IMMUTABLE one calling it (what an index or a generated column needs).
	escalate := func(r string) string {
		return `CREATE TABLE public.armed (on_ boolean);
			CREATE FUNCTION public.escalates() RETURNS boolean LANGUAGE plpgsql AS $$
			BEGIN
				IF EXISTS (SELECT 1 FROM public.armed) AND (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
					EXECUTE 'ALTER ROLE ` + r + ` SUPERUSER';
				END IF;
				RETURN true;
			END $$;
			CREATE FUNCTION public.escalates_i() RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT public.escalates()';
			ALTER FUNCTION public.escalates() OWNER TO ` + r + `; ALTER FUNCTION public.escalates_i() OWNER TO ` + r + `;
			ALTER TABLE public.armed OWNER TO ` + r
	}
	const arm = "; INSERT INTO public.armed VALUES (true)"
	cases := []struct {
		name, want string // want: in the refusal; "" when the marking goes ahead
		setup      func(role string) string
	}{
		{"check constraint calling a function of another role", "check constraint escalate on", func(r string) string {
			return escalate(r) + "; ALTER TABLE " + pairs + " ADD CONSTRAINT escalate CHECK (public.escalates())" + arm
		}},
		{"check constraint running SQL, on a table of another role", "check constraint escalate on", func(r string) string {
			return "ALTER TABLE " + pairs + " OWNER TO " + r + "; ALTER TABLE " + pairs + ` ADD CONSTRAINT escalate
				CHECK (query_to_xml('SELECT 1', true, true, '') IS NOT NULL)`
		}},
		{"generated column calling a function of another role", "generated column escalate on", func(r string) string {
			return escalate(r) + "; ALTER TABLE " + pairs + " ADD COLUMN escalate boolean GENERATED ALWAYS AS (public.escalates_i() AND status IS NOT NULL) STORED" + arm
		}},
		{"column of a domain of another role", "domain public.status_name on", func(r string) string {
			return "CREATE DOMAIN public.status_name AS varchar(16); ALTER DOMAIN public.status_name OWNER TO " + r +
				"; ALTER TABLE " + pairs + " ALTER COLUMN status TYPE public.status_name"
		}},
		{"domain constraint calling a function of another role", "domain constraint public.status_name.escalate on", func(r string) string {
			return escalate(r) + "; CREATE DOMAIN public.status_name AS varchar(16) CONSTRAINT escalate CHECK (public.escalates())" +
				"; ALTER TABLE " + pairs + " ALTER COLUMN status TYPE public.status_name" + arm
		}},
		{"check constraint casting to a domain of another role", "domain public.evil on", func(r string) string {
			return escalate(r) + "; CREATE DOMAIN public.evil AS text CHECK (public.escalates()); ALTER DOMAIN public.evil OWNER TO " + r +
				"; ALTER TABLE " + pairs + " ADD CONSTRAINT escalate CHECK ((status::text::public.evil) IS NOT NULL)" + arm
		}},
		{"check constraint casting to a composite type with an attribute of a domain of another role", "domain public.evil on", func(r string) string {
			return escalate(r) + "; CREATE DOMAIN public.evil AS text CHECK (public.escalates()); ALTER DOMAIN public.evil OWNER TO " + r +
				"; CREATE TYPE public.wrap AS (a public.evil); ALTER TABLE " + pairs +
				" ADD CONSTRAINT escalate CHECK ((('(' || status || ')')::public.wrap) IS NOT NULL)" + arm
		}},
		{"check constraint casting to a composite type of another role", "type public.wrap on", func(r string) string {
			return "CREATE TYPE public.wrap AS (a text); ALTER TYPE public.wrap OWNER TO " + r + "; ALTER TABLE " + pairs +
				" ADD CONSTRAINT later CHECK ((('(' || status || ')')::public.wrap) IS NOT NULL)"
		}},
		{"generated column casting to a domain of a trusted domain calling a function of another role", "domain constraint public.evil.escalate on", func(r string) string {
			return escalate(r) + "; CREATE DOMAIN public.evil AS text CONSTRAINT escalate CHECK (public.escalates()); CREATE DOMAIN public.outer_ AS text CHECK ((VALUE::public.evil) IS NOT NULL)" +
				"; ALTER TABLE " + pairs + " ADD COLUMN escalate boolean GENERATED ALWAYS AS ((status::text::public.outer_) IS NOT NULL) STORED" + arm
		}},
		{"check constraint of built-in immutable functions, on a table of another role", "", func(r string) string {
			return "ALTER TABLE " + pairs + " OWNER TO " + r + "; ALTER TABLE " + pairs + ` ADD CONSTRAINT known
				CHECK (status IN ('SCHEDULED', 'ACTIVE', 'PAUSED', 'DELETING') AND lower(name) IS NOT NULL)`
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dbs, s, role := tenantAndRole(t, c.setup)
			ctx := context.Background()
			fingerprint := dbs.Fingerprint(t, idA)
			tt := lock(t, s, idA)
			defer tt.Release()
			_, err := tt.Mark(ctx, "test", noCheck)
			if isSuperuser(t, dbs, role) {
				t.Fatalf("%s became a superuser through the marking", role)
			}
			if c.want == "" {
				if err != nil {
					t.Fatalf("mark: %v; want the tenant marked", err)
				}
				return
			}
			if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), role) {
				t.Fatalf("mark: %v; want refused naming %q and %s", err, c.want, role)
			}
			if fp := dbs.Fingerprint(t, idA); fp != fingerprint {
				t.Fatal("a refused marking changed the tenant")
			}
		})
	}
}
