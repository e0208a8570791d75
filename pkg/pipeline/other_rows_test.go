package pipeline

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// Rows of another, active tenant that reference the tenant's through a
// foreign key between two of the tables the cleanup deletes from (on either
// plane) refuse the cleanup before anything irreversible: the other tenant
// keeps its rows, the tenant its schema and rows.
func TestRowsOfOtherTenantsRefuseTheCleanup(t *testing.T) {
	for _, c := range []struct {
		name      string
		control   bool
		ddl, link string
		names     string
	}{
		{"control plane: tenant parent, ON DELETE SET NULL", true,
			"ALTER TABLE tenant ADD COLUMN parent_tenant_id varchar REFERENCES tenant (tenant_id) ON DELETE SET NULL",
			"UPDATE tenant SET parent_tenant_id = $1 WHERE tenant_id = $2", "public.tenant"},
		{"control plane: subscription transferred, ON DELETE CASCADE", true,
			"ALTER TABLE subscription ADD COLUMN transferred_from int REFERENCES subscription (id) ON DELETE CASCADE",
			"UPDATE subscription SET transferred_from = (SELECT min(id) FROM subscription WHERE tenant_id = $1) WHERE tenant_id = $2",
			"public.subscription"},
		{"data plane: users invited by the tenant's, ON DELETE CASCADE", false,
			`ALTER TABLE public.user_tenant_mapping ADD COLUMN invited_by_email varchar, ADD COLUMN invited_by_tenant varchar,
			ADD FOREIGN KEY (invited_by_email, invited_by_tenant) REFERENCES public.user_tenant_mapping (email, tenant_id) ON DELETE CASCADE`,
			`UPDATE public.user_tenant_mapping SET (invited_by_email, invited_by_tenant) =
			(SELECT email, tenant_id FROM public.user_tenant_mapping WHERE tenant_id = $1 LIMIT 1) WHERE tenant_id = $2`,
			"public.user_tenant_mapping"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := setup(t)
			e.eligible(t, idA)
			e.DBs.CreateTenant(t, testenv.Tenant{ID: idB, Pairs: 1, DocsPerPair: 1, Status: "ACTIVE", LastQuery: time.Now()})
			exec := e.DBs.ExecData
			if c.control {
				exec = e.DBs.ExecControl
			}
			exec(t, c.ddl)
			exec(t, c.link, idA, idB)
			if err := e.mark(t, idA); err != nil {
				t.Fatal(err)
			}
			e.drain(t, idA)
			publicA, controlA := e.DBs.PublicRows(t, idA), e.DBs.ControlRows(t, idA)
			publicB, controlB, fingerprintB := e.DBs.PublicRows(t, idB), e.DBs.ControlRows(t, idB), e.DBs.Fingerprint(t, idB)
			err := e.check(t, tenant.DrainCheck{ID: idA})
			if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), c.names) {
				t.Fatalf("cleanup: %v; want refused naming %s", err, c.names)
			}
			if e.DBs.PublicRows(t, idB) != publicB || e.DBs.ControlRows(t, idB) != controlB || e.DBs.Fingerprint(t, idB) != fingerprintB {
				t.Fatal("cleaning the tenant changed the other, active tenant")
			}
			if !e.DBs.SchemaExists(t, idA) || e.DBs.PublicRows(t, idA) != publicA || e.DBs.ControlRows(t, idA) != controlA ||
				e.DBs.CountControl(t, "SELECT count(*) FROM tenant_cleanup.ledger") != 0 {
				t.Fatal("a refused tenant was half-deleted")
			}
		})
	}
}

// A role that owns a public table the cleanup deletes from (Onyx's, say)
// and puts a trigger on it does not get the pipeline's privileges (a
// superuser's here) through the cleanup: the tenant is refused, naming the
// trigger and the role, before anything irreversible.
func TestTriggerOfAnotherRoleRefusesTheCleanup(t *testing.T) {
	e := setup(t)
	role := e.DBs.Role(t)
	e.eligible(t, idA)
	e.DBs.ExecData(t, `CREATE FUNCTION public.counter_gone() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
				EXECUTE 'ALTER ROLE `+role+` SUPERUSER';
			END IF;
			RETURN OLD;
		END $$;
		ALTER FUNCTION public.counter_gone() OWNER TO `+role+`;
		ALTER TABLE public.tenant_invite_counter OWNER TO `+role+`;
		CREATE TRIGGER counter_gone AFTER DELETE ON public.tenant_invite_counter FOR EACH ROW EXECUTE FUNCTION public.counter_gone()`)
	if err := e.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	e.drain(t, idA)
	public, control := e.DBs.PublicRows(t, idA), e.DBs.ControlRows(t, idA)
	err := e.check(t, tenant.DrainCheck{ID: idA})
	if e.DBs.CountData(t, "SELECT count(*) FROM pg_roles WHERE rolname = $1 AND rolsuper", role) != 0 {
		t.Fatalf("%s became a superuser through the cleanup", role)
	}
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "trigger counter_gone on public.tenant_invite_counter") ||
		!strings.Contains(err.Error(), role) {
		t.Fatalf("cleanup: %v; want refused naming the trigger and its owner", err)
	}
	if !e.DBs.SchemaExists(t, idA) || e.DBs.PublicRows(t, idA) != public || e.DBs.ControlRows(t, idA) != control {
		t.Fatal("a refused tenant was half-deleted")
	}
}
