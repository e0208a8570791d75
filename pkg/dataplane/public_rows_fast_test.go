package dataplane

import (
	"context"
	"testing"

	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

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
