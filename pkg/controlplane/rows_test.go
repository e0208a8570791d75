package controlplane

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

// prepare locks id and runs PrepareDelete; with finish it also commits,
// else it rolls back.
func prepare(t *testing.T, s *Store, id string, lockTimeout time.Duration, finish bool) error {
	t.Helper()
	ctx := context.Background()
	l, err := s.LockTenant(ctx, tenant.ID(id), Update, lockTimeout, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if _, err := l.PrepareDelete(ctx, LedgerEntry{}); err != nil || !finish {
		return err
	}
	return l.Finish(ctx, LedgerEntry{})
}

// Foreign keys between the tables the cleanup deletes from are checked like
// any other: a tenant whose row is another tenant's parent (ON DELETE SET
// NULL), or whose subscription another tenant's was transferred from (ON
// DELETE CASCADE), is refused and the other tenant left as it was; the
// tenant's own rows referencing each other go with it.
func TestPrepareDeleteRefusesOtherTenantsReferences(t *testing.T) {
	for _, c := range []struct{ name, ddl, link, unlink string }{
		{"tenant parent SET NULL",
			"ALTER TABLE tenant ADD COLUMN parent_tenant_id varchar REFERENCES tenant (tenant_id) ON DELETE SET NULL",
			"UPDATE tenant SET parent_tenant_id = $1 WHERE tenant_id = $2",
			"UPDATE tenant SET parent_tenant_id = NULL WHERE tenant_id = $1"},
		{"subscription transferred CASCADE",
			"ALTER TABLE subscription ADD COLUMN transferred_from int REFERENCES subscription (id) ON DELETE CASCADE",
			"UPDATE subscription SET transferred_from = (SELECT min(id) FROM subscription WHERE tenant_id = $1) WHERE tenant_id = $2",
			"UPDATE subscription SET transferred_from = NULL WHERE tenant_id = $1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dbs, s := setup(t)
			dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
			dbs.ExecControl(t, "SELECT fixture_control_tenant($1, 'ACTIVE', now())", idB)
			dbs.ExecControl(t, c.ddl)
			dbs.ExecControl(t, c.link, idA, idB)
			rowsA, rowsB := dbs.ControlRows(t, idA), dbs.ControlRows(t, idB)
			err := prepare(t, s, idA, time.Second, false)
			if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "other tenants") {
				t.Fatalf("PrepareDelete with another tenant's row referencing the tenant's: %v; want refused", err)
			}
			if dbs.ControlRows(t, idA) != rowsA || dbs.ControlRows(t, idB) != rowsB {
				t.Fatal("a refused delete changed control-plane rows")
			}
			dbs.ExecControl(t, c.unlink, idB)
			rowsB = dbs.ControlRows(t, idB)
			if c.name == "subscription transferred CASCADE" { // the tenant's own second subscription
				dbs.ExecControl(t, "INSERT INTO subscription (tenant_id, status) VALUES ($1, 'canceled')", idA)
			}
			dbs.ExecControl(t, c.link, idA, idA)
			if err := prepare(t, s, idA, time.Second, true); err != nil {
				t.Fatalf("PrepareDelete of a tenant whose own rows reference each other: %v", err)
			}
			if dbs.ControlRows(t, idA) != "----" || dbs.ControlRows(t, idB) != rowsB {
				t.Fatalf("after the cleanup: %s rows %s, %s rows %s (had %s)", idA, dbs.ControlRows(t, idA), idB,
					dbs.ControlRows(t, idB), rowsB)
			}
		})
	}
}

// invoiceUncommitted makes another session insert, without committing, an
// invoice referencing the tenant's subscription (ON DELETE CASCADE): a table
// the pipeline does not know. The returned transaction ends it.
func invoiceUncommitted(t *testing.T, dbs *testenv.Databases, id string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	dbs.ExecControl(t, "CREATE TABLE invoice (id serial PRIMARY KEY, subscription_id int REFERENCES subscription (id) ON DELETE CASCADE)")
	other, err := dbs.Control.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Rollback(context.Background()) })
	if _, err := other.Exec(ctx, "INSERT INTO invoice (subscription_id) SELECT id FROM subscription WHERE tenant_id = $1", id); err != nil {
		t.Fatal(err)
	}
	return other
}

// An invoice referencing the tenant's subscription, inserted by a
// transaction that has not committed when the cleanup looks for references,
// cannot slip past the check: the cleanup locks the subscription first and
// waits; once the invoice commits, the check sees it and refuses the tenant,
// and the invoice survives (rather than being deleted by the cascade).
func TestPrepareDeleteForeignRowsCannotBeRaced(t *testing.T) {
	dbs, s := setup(t)
	ctx := context.Background()
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
	other := invoiceUncommitted(t, dbs, idA)
	rows := dbs.ControlRows(t, idA)
	result := make(chan error, 1)
	l, err := s.LockTenant(ctx, idA, Update, time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	go func() {
		_, err := l.PrepareDelete(ctx, LedgerEntry{})
		result <- err
	}()
	testenv.Eventually(t, 10*time.Second, func() bool {
		return dbs.CountControl(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'`) > 0
	}, "the cleanup waits for the tenant's subscription")
	if err := other.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-result:
	case <-time.After(30 * time.Second):
		t.Fatal("PrepareDelete did not finish")
	}
	l.Release()
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "public.invoice") {
		t.Fatalf("PrepareDelete racing an invoice: %v; want refused naming public.invoice", err)
	}
	if dbs.CountControl(t, "SELECT count(*) FROM invoice") != 1 || dbs.ControlRows(t, idA) != rows {
		t.Fatal("the invoice or the tenant was changed")
	}
}

// Waiting for the tenant's rows longer than the lock timeout is "later" and
// changes nothing.
func TestPrepareDeleteRowLockTimeoutIsLater(t *testing.T) {
	dbs, s := setup(t)
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
	other := invoiceUncommitted(t, dbs, idA)
	rows := dbs.ControlRows(t, idA)
	if err := prepare(t, s, idA, 200*time.Millisecond, false); !errors.Is(err, tenant.ErrLater) {
		t.Fatalf("PrepareDelete while an invoice is being inserted: %v; want later", err)
	}
	if dbs.ControlRows(t, idA) != rows {
		t.Fatal("a PrepareDelete that timed out changed the tenant")
	}
	if err := other.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := prepare(t, s, idA, time.Second, true); err != nil {
		t.Fatal(err)
	}
}

// A trigger of another role on a control-plane table the cleanup deletes
// from would run with the pipeline's privileges: the tenant is refused,
// naming the trigger, its table and the role, and nothing changes. The same
// trigger with a SECURITY DEFINER function runs as its owner: no refusal.
func TestPrepareDeleteRefusesTriggersOfOtherRoles(t *testing.T) {
	for _, definer := range []bool{false, true} {
		t.Run(map[bool]string{false: "invoker", true: "SECURITY DEFINER"}[definer], func(t *testing.T) {
			dbs, s := setup(t)
			role := dbs.Role(t)
			dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
			secdef := ""
			if definer {
				secdef = "SECURITY DEFINER"
			}
			dbs.ExecControl(t, `CREATE FUNCTION escalate() RETURNS trigger LANGUAGE plpgsql `+secdef+` AS $$
				BEGIN
					IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
						EXECUTE 'ALTER ROLE `+role+` SUPERUSER';
					END IF;
					RETURN NULL;
				END $$;
				ALTER FUNCTION escalate() OWNER TO `+role+`;
				ALTER TABLE subscription OWNER TO `+role+`;
				CREATE TRIGGER escalate AFTER DELETE ON subscription FOR EACH ROW EXECUTE FUNCTION escalate()`)
			rows := dbs.ControlRows(t, idA)
			err := prepare(t, s, idA, time.Second, true)
			if dbs.CountControl(t, "SELECT count(*) FROM pg_roles WHERE rolname = $1 AND rolsuper", role) != 0 {
				t.Fatalf("%s became a superuser through the cleanup", role)
			}
			if definer {
				if err != nil || dbs.ControlRows(t, idA) != "----" {
					t.Fatalf("PrepareDelete under a SECURITY DEFINER trigger: %v; want the tenant deleted", err)
				}
				return
			}
			if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "trigger escalate on public.subscription") ||
				!strings.Contains(err.Error(), role) {
				t.Fatalf("PrepareDelete under another role's trigger: %v; want refused naming it", err)
			}
			if dbs.ControlRows(t, idA) != rows {
				t.Fatal("a refused tenant was changed")
			}
		})
	}
}
