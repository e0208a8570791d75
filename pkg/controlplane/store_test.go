package controlplane

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

const (
	idA = "tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745"
	idB = "tenant_1bcd62e7-9fbf-4bb6-8894-f1441fca6745"
)

func setup(t *testing.T) (*testenv.Databases, *Store) {
	t.Helper()
	dbs := testenv.NewDatabases(t)
	s := New(dbs.Control)
	if err := s.EnsureLedger(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dbs, s
}

func TestTenants(t *testing.T) {
	dbs, s := setup(t)
	ctx := context.Background()
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1, 'GATED_ACCESS', now() - interval '400 days')", idA)
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1, 'ACTIVE')", idB)
	dbs.ExecControl(t, "INSERT INTO tenant (tenant_id) VALUES ('public'), ('Tenant_X')")
	all, skipped, err := s.Tenants(ctx)
	if err != nil || len(all) != 2 || skipped != 2 {
		t.Fatalf("tenants = %v, skipped %d, %v", all, skipped, err)
	}
	if all[idA].Status != "GATED_ACCESS" || time.Since(all[idA].CreatedAt) < 399*24*time.Hour {
		t.Fatalf("record of %s = %+v", idA, all[idA])
	}
	r, found, err := s.Tenant(ctx, idB)
	if err != nil || !found || r.Status != "ACTIVE" {
		t.Fatalf("tenant %s = %+v, %v, %v", idB, r, found, err)
	}
	if _, found, err := s.Tenant(ctx, "tenant_dev"); err != nil || found {
		t.Fatalf("missing tenant found=%v, %v", found, err)
	}
}

func TestDeleteTenantWritesLedger(t *testing.T) {
	dbs, s := setup(t)
	ctx := context.Background()
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idB)
	before := dbs.ControlRows(t, idB)

	h, err := s.Hold(ctx, idA, Update, time.Second)
	if err != nil || !h.Found || h.Record.Status != "GATED_ACCESS" {
		t.Fatalf("hold = %+v, %v", h, err)
	}
	marked := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	deleted, err := h.DeleteTenant(ctx, LedgerEntry{RequestedBy: "test", MarkedAt: marked, DocumentsAtMarking: 7,
		UsersAtMarking: 2, SchemaExisted: true, RelationsDropped: 40, PublicRowsDeleted: 5, CleanedBy: "host/1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []TableRows{{"tenant_notification", 1}, {"tenant_config", 1}, {"subscription", 1}, {"tenant", 1}}
	if fmt.Sprint(deleted) != fmt.Sprint(want) {
		t.Fatalf("deleted %v; want %v (dependent tables first, tenant last)", deleted, want)
	}
	if n := dbs.CountControl(t, "SELECT count(*) FROM tenant WHERE tenant_id = $1", idA); n != 0 {
		t.Fatal("tenant row still there")
	}
	if dbs.ControlRows(t, idB) != before {
		t.Fatalf("deleting %s changed %s", idA, idB)
	}
	e, found, err := s.LedgerEntry(ctx, idA)
	if err != nil || !found {
		t.Fatalf("ledger entry: %v, %v", found, err)
	}
	if e.RequestedBy != "test" || !e.MarkedAt.Equal(marked) || e.DocumentsAtMarking != 7 || e.ApplicationStatus != "GATED_ACCESS" ||
		e.StripeCustomerID == "" || e.ControlRowsDeleted["subscription"] != 1 || time.Since(e.CleanedAt) > time.Minute {
		t.Fatalf("ledger entry = %+v", e)
	}
	all, err := s.Ledger(ctx)
	if err != nil || len(all) != 1 {
		t.Fatalf("ledger = %v, %v", all, err)
	}
}

func TestHoldRollsBack(t *testing.T) {
	dbs, s := setup(t)
	ctx := context.Background()
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
	before := dbs.ControlRows(t, idA)
	h, err := s.Hold(ctx, idA, Update, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// While held FOR UPDATE, a status change by someone else times out.
	_, err = s.Hold(ctx, idA, Share, 100*time.Millisecond)
	if !errors.Is(err, tenant.ErrLater) {
		t.Fatalf("second hold while the row is locked: %v; want ErrLater", err)
	}
	h.Release()
	if dbs.ControlRows(t, idA) != before {
		t.Fatal("a released hold changed the tenant")
	}
	h, err = s.Hold(ctx, idA, Share, time.Second)
	if err != nil {
		t.Fatalf("hold after release: %v", err)
	}
	h.Release()
	h, err = s.Hold(ctx, "tenant_dev", Update, time.Second)
	if err != nil || h.Found {
		t.Fatalf("hold of a missing tenant = %+v, %v", h, err)
	}
	h.Release()
}

func TestEnsureLedgerConcurrently(t *testing.T) {
	dbs := testenv.NewDatabases(t)
	s := New(dbs.Control)
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- s.EnsureLedger(context.Background()) }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenDoesNotLeakPassword(t *testing.T) {
	_, err := Open(context.Background(), "postgres://u:s3cret-pass@127.0.0.1:1/x?connect_timeout=bad", "test", 1, nil)
	if err == nil {
		t.Fatal("want an error")
	}
	if got := err.Error(); strings.Contains(got, "s3cret-pass") {
		t.Fatalf("error leaks the password: %s", got)
	}
}

func TestReserveEnforcesCaps(t *testing.T) {
	_, s := setup(t)
	ctx := context.Background()
	ids := []tenant.ID{"tenant_i-01", "tenant_i-02", "tenant_i-03", "tenant_i-04"}
	for i, id := range ids[:3] {
		r, err := s.Reserve(ctx, id, 3, 10)
		if err != nil || !r.OK {
			t.Fatalf("reservation %d: %+v, %v", i, r, err)
		}
	}
	r, err := s.Reserve(ctx, ids[3], 3, 10)
	if err != nil || r.OK || r.Cap != "hourly" || time.Until(r.FreeAt) < 59*time.Minute || r.LastHour != 3 {
		t.Fatalf("fourth reservation under an hourly cap of 3: %+v, %v", r, err)
	}
	// A tenant that already holds a reservation (a redelivery) keeps it.
	if r, err := s.Reserve(ctx, ids[0], 3, 10); err != nil || !r.OK {
		t.Fatalf("repeat reservation: %+v, %v", r, err)
	}
	if r, err := s.Reserve(ctx, ids[3], 10, 3); err != nil || r.OK || r.Cap != "daily" {
		t.Fatalf("under a daily cap of 3: %+v, %v", r, err)
	}
	if r, err := s.Reserve(ctx, ids[3], 0, 0); err != nil || !r.OK {
		t.Fatalf("without caps: %+v, %v", r, err)
	}
	// Concurrent reservations never exceed the cap.
	granted := make(chan bool, 20)
	for i := range 20 {
		go func() {
			r, err := s.Reserve(ctx, tenant.ID(fmt.Sprintf("tenant_i-1%02x", i)), 8, 0)
			granted <- err == nil && r.OK
		}()
	}
	n := 0
	for range 20 {
		if <-granted {
			n++
		}
	}
	if n != 8-3 {
		t.Fatalf("%d of 20 concurrent reservations granted with 3 of 8 used; want 5", n)
	}
}
