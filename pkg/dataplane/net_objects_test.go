package dataplane

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

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
			done := false
			s.beforeDrop = func() error {
				if done {
					return nil
				}
				done = true
				_, err := dbs.Data.Exec(ctx, c.late)
				return err
			}
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
