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
	if err := s.Ensure(context.Background()); err != nil {
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

func TestPrepareDeleteAndFinishWriteLedger(t *testing.T) {
	dbs, s := setup(t)
	ctx := context.Background()
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idB)
	before := dbs.ControlRows(t, idB)

	l, err := s.LockTenant(ctx, idA, Update, time.Second, time.Now())
	if err != nil || !l.Found || l.Record.Status != "GATED_ACCESS" || l.Hold != nil {
		t.Fatalf("lock = %+v, %v", l, err)
	}
	marked := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	deleted, err := l.PrepareDelete(ctx, LedgerEntry{RequestedBy: "test", MarkedAt: marked, DocumentsAtMarking: 7,
		UsersAtMarking: 2, CleanedBy: "host/1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []TableRows{{"tenant_notification", 1}, {"tenant_config", 1}, {"subscription", 1}, {"tenant", 1}}
	if fmt.Sprint(deleted) != fmt.Sprint(want) {
		t.Fatalf("deleted %v; want %v (dependent tables first, tenant last)", deleted, want)
	}
	// Nothing is visible before Finish commits.
	if n := dbs.CountControl(t, "SELECT count(*) FROM tenant WHERE tenant_id = $1", idA); n != 1 {
		t.Fatal("the tenant row is gone before Finish")
	}
	dropped := time.Now().Truncate(time.Microsecond)
	if err := l.Finish(ctx, LedgerEntry{SchemaExisted: true, RelationsDropped: 40, PublicRowsDeleted: 5,
		DropStartedAt: dropped, SchemaDroppedAt: dropped, PublicRowsDeletedAt: dropped}); err != nil {
		t.Fatal(err)
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
		e.StripeCustomerID == "" || e.ControlRowsDeleted["subscription"] != 1 || time.Since(e.CleanedAt) > time.Minute ||
		!e.SchemaExisted || e.RelationsDropped != 40 || e.PublicRowsDeleted != 5 || !e.SchemaDroppedAt.Equal(dropped) {
		t.Fatalf("ledger entry = %+v", e)
	}
	all, err := s.Ledger(ctx)
	if err != nil || len(all) != 1 {
		t.Fatalf("ledger = %v, %v", all, err)
	}
}

func TestLockTenantRollsBack(t *testing.T) {
	dbs, s := setup(t)
	ctx := context.Background()
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
	before := dbs.ControlRows(t, idA)
	l, err := s.LockTenant(ctx, idA, Update, time.Second, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.PrepareDelete(ctx, LedgerEntry{}); err != nil {
		t.Fatal(err)
	}
	// While locked FOR UPDATE, another lock (a marker's, a status change) times out.
	_, err = s.LockTenant(ctx, idA, NoKeyUpdate, 100*time.Millisecond, time.Now())
	if !errors.Is(err, tenant.ErrLater) {
		t.Fatalf("second lock while the row is locked: %v; want ErrLater", err)
	}
	l.Release()
	if dbs.ControlRows(t, idA) != before || dbs.CountControl(t, "SELECT count(*) FROM tenant_cleanup.ledger") != 0 {
		t.Fatal("a released lock changed the tenant or wrote the ledger")
	}
	l, err = s.LockTenant(ctx, "tenant_dev", Update, time.Second, time.Now())
	if err != nil || l.Found {
		t.Fatalf("lock of a missing tenant = %+v, %v", l, err)
	}
	l.Release()
}

// A hold and a cleanup of the same tenant never overlap: the hold waits for
// the row lock of a cleanup under way, and the cleaner reads the hold under
// that lock.
func TestHoldsAndRowLocks(t *testing.T) {
	dbs, s := setup(t)
	ctx := context.Background()
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
	now := time.Now()
	until := now.Add(time.Hour)
	if _, in, err := s.PlaceHold(ctx, tenant.Hold{ID: idA, Reason: "legal", By: "ops", Until: &until}, time.Second); err != nil || !in {
		t.Fatalf("place hold: in control %v, %v", in, err)
	}
	l, err := s.LockTenant(ctx, idA, Update, time.Second, now)
	if err != nil || l.Hold == nil || l.Hold.Reason != "legal" {
		t.Fatalf("the hold read under the row lock: %+v, %v", l, err)
	}
	// An expired hold is not in force.
	if l2, err := s.LockTenant(ctx, idB, Update, time.Second, now); err != nil || l2.Hold != nil {
		t.Fatalf("no hold: %+v, %v", l2, err)
	} else {
		l2.Release()
	}
	// While the row is locked, placing a hold waits, then gives up.
	if _, _, err := s.PlaceHold(ctx, tenant.Hold{ID: idA, Reason: "again", By: "ops"}, 200*time.Millisecond); err == nil ||
		!strings.Contains(err.Error(), "stayed locked") {
		t.Fatalf("hold placed while the row is locked: %v", err)
	}
	l.Release()
	// After the cleanup committed, a hold finds the tenant gone.
	l, err = s.LockTenant(ctx, idA, Update, time.Second, now.Add(2*time.Hour))
	if err != nil || l.Hold != nil {
		t.Fatalf("expired hold in force: %+v, %v", l, err)
	}
	if _, err := l.PrepareDelete(ctx, LedgerEntry{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, in, err := s.PlaceHold(ctx, tenant.Hold{ID: idA, Reason: "late", By: "ops"}, 5*time.Second)
		if err == nil && in {
			err = errors.New("the hold found the tenant still in the control plane")
		}
		done <- err
	}()
	testenv.Eventually(t, 5*time.Second, func() bool {
		return dbs.CountControl(t, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()") > 0
	}, "PlaceHold waits for the row lock")
	if err := l.Finish(ctx, LedgerEntry{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	h, removed, err := s.RemoveHold(ctx, idA)
	if err != nil || !removed || h.Reason != "late" {
		t.Fatalf("remove hold: %+v %v %v", h, removed, err)
	}
	if _, removed, err := s.RemoveHold(ctx, idA); err != nil || removed {
		t.Fatalf("remove a missing hold: %v %v", removed, err)
	}
}

// Rows of a control-plane table the pipeline does not know that reference
// the tenant refuse it before anything is deleted; without such rows the
// tenant is deleted and the unknown table untouched.
func TestPrepareDeleteRefusesUnknownReferences(t *testing.T) {
	for _, action := range []string{"RESTRICT", "NO ACTION", "CASCADE", "SET NULL"} {
		t.Run(action, func(t *testing.T) {
			dbs, s := setup(t)
			ctx := context.Background()
			dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
			dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idB)
			dbs.ExecControl(t, "CREATE TABLE invoice (id serial PRIMARY KEY, tenant_id varchar REFERENCES tenant (tenant_id) ON DELETE "+action+")")
			dbs.ExecControl(t, "INSERT INTO invoice (tenant_id) VALUES ($1)", idA)
			before := dbs.ControlRows(t, idA)
			l, err := s.LockTenant(ctx, idA, Update, time.Second, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			_, err = l.PrepareDelete(ctx, LedgerEntry{})
			l.Release()
			if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), `public.invoice`) {
				t.Fatalf("PrepareDelete with an invoice row: %v; want a refusal naming public.invoice", err)
			}
			if dbs.ControlRows(t, idA) != before || dbs.CountControl(t, "SELECT count(*) FROM invoice") != 1 {
				t.Fatal("a refused tenant was changed")
			}
			// idB has no invoice: it is deleted, the invoice table untouched.
			l, err = s.LockTenant(ctx, idB, Update, time.Second, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.PrepareDelete(ctx, LedgerEntry{}); err != nil {
				t.Fatal(err)
			}
			if err := l.Finish(ctx, LedgerEntry{}); err != nil {
				t.Fatal(err)
			}
			if dbs.CountControl(t, "SELECT count(*) FROM invoice WHERE tenant_id = $1", idA) != 1 {
				t.Fatal("the invoice of another tenant was touched")
			}
		})
	}
}

// A delete the database rejects (a trigger, a deferred constraint checked at
// once) refuses the tenant before anything irreversible.
func TestPrepareDeleteRefusesWhatTheDatabaseRejects(t *testing.T) {
	dbs, s := setup(t)
	ctx := context.Background()
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
	dbs.ExecControl(t, `CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'subscriptions are kept for 7 years'; END $$`)
	dbs.ExecControl(t, "CREATE TRIGGER keep BEFORE DELETE ON subscription FOR EACH ROW EXECUTE FUNCTION keep()")
	l, err := s.LockTenant(ctx, idA, Update, time.Second, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	_, err = l.PrepareDelete(ctx, LedgerEntry{})
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "kept for 7 years") {
		t.Fatalf("PrepareDelete under a refusing trigger: %v; want a refusal with the database's words", err)
	}
}

// A ledger (or holds table) of the wrong shape is an error naming the
// problem at startup, never a failure after an irreversible step.
func TestEnsureRefusesWrongShapes(t *testing.T) {
	for name, ddl := range map[string]string{
		"ledger without a unique tenant_id": "CREATE TABLE tenant_cleanup.ledger (tenant_id text, cleaned_at timestamptz)",
		"ledger with a wrong type":          "CREATE TABLE tenant_cleanup.ledger (tenant_id text PRIMARY KEY, cleaned_at text)",
		"holds without a reason":            "CREATE TABLE tenant_cleanup.hold (tenant_id text PRIMARY KEY)",
	} {
		t.Run(name, func(t *testing.T) {
			dbs := testenv.NewDatabases(t)
			dbs.ExecControl(t, "CREATE SCHEMA tenant_cleanup")
			dbs.ExecControl(t, ddl)
			err := New(dbs.Control).Ensure(context.Background())
			if err == nil || !strings.Contains(err.Error(), "wrong shape") {
				t.Fatalf("Ensure = %v; want a shape error", err)
			}
			t.Log(err)
		})
	}
}

func TestTenantsSkipsRowsThatCannotBeJudged(t *testing.T) {
	dbs, s := setup(t)
	ctx := context.Background()
	dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
	dbs.ExecControl(t, "ALTER TABLE tenant ALTER COLUMN created_at DROP NOT NULL, ALTER COLUMN application_status DROP NOT NULL")
	dbs.ExecControl(t, "INSERT INTO tenant (tenant_id, created_at, application_status) VALUES ($1, NULL, 'GATED_ACCESS')", idB)
	all, _, err := s.Tenants(ctx)
	if err != nil || len(all) != 2 || all[idA].Problem != "" || !strings.Contains(all[idB].Problem, "created_at is NULL") {
		t.Fatalf("tenants = %+v, %v", all, err)
	}
	r, found, err := s.Tenant(ctx, idB)
	if err != nil || !found || r.Problem == "" {
		t.Fatalf("tenant = %+v, %v, %v", r, found, err)
	}
}

func TestEnsureConcurrently(t *testing.T) {
	dbs := testenv.NewDatabases(t)
	s := New(dbs.Control)
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- s.Ensure(context.Background()) }()
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

// A trigger or rule that keeps a row it was asked to delete (a soft delete)
// refuses the tenant: a ledger row must never stand beside a tenant row.
func TestPrepareDeleteRefusesKeptRows(t *testing.T) {
	for name, ddl := range map[string]string{
		"trigger": `CREATE FUNCTION soft() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
			CREATE TRIGGER soft BEFORE DELETE ON tenant FOR EACH ROW EXECUTE FUNCTION soft()`,
		"rule": `CREATE RULE keep AS ON DELETE TO tenant DO INSTEAD NOTHING`,
	} {
		t.Run(name, func(t *testing.T) {
			dbs, s := setup(t)
			ctx := context.Background()
			dbs.ExecControl(t, "SELECT fixture_control_tenant($1)", idA)
			dbs.ExecControl(t, ddl)
			l, err := s.LockTenant(ctx, idA, Update, time.Second, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release()
			if _, err := l.PrepareDelete(ctx, LedgerEntry{}); !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "kept") {
				t.Fatalf("PrepareDelete under a soft delete: %v; want refused", err)
			}
		})
	}
}
