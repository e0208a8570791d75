package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// One idle-in-transaction session with a lock on one tenant's table: the
// analyzer's pass still ends (that tenant skipped and reported), the marker
// marks the other tenants at once (the locked one is "later", never a stall
// of a worker), and once the lock is gone the locked tenant is marked too.
func TestALockedTenantHoldsUpNobody(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	old, gated := testenv.DaysAgo(200), tenant.StatusGatedAccess
	locked := eligibleOld
	others := []string{eligibleNever, eligibleCraftOld, "tenant_00000001-0000-4000-8000-000000000009"}
	for _, id := range append([]string{locked}, others...) {
		w.DBs.CreateTenant(t, testenv.Tenant{ID: id, Status: gated, LastQuery: old, Pairs: 1, DocsPerPair: 3})
	}
	ctx := context.Background()
	idle, err := w.DBs.Data.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = idle.Rollback(ctx) }()
	if _, err := idle.Exec(ctx, `LOCK TABLE "`+locked+`".chat_message IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	out := w.analyze()
	if !strings.Contains(out, "1 tenants skipped, they could not be read or judged") || !strings.Contains(out, locked+": could not be read in time") ||
		!strings.Contains(out, "published 3 candidates") {
		t.Fatalf("analyzer pass with one locked tenant:\n%s", out)
	}
	t.Logf("the pass took %s with one tenant locked", time.Since(start))

	// A request for the locked tenant, then for the others: each other
	// tenant is marked while the locked one waits.
	if err := w.Bus.PublishRequest(ctx, tenant.Request{ID: tenant.ID(locked), RequestedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	w.startServices()
	for _, id := range others {
		w.WaitFor(id, tenant.OutcomeMarked, 20*time.Second)
	}
	if w.Has(locked, tenant.OutcomeMarked) {
		t.Fatal("the tenant whose table is locked was marked")
	}
	if err := idle.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(locked, tenant.OutcomeMarked, 40*time.Second)
}

// One control-plane row that cannot be judged (a NULL created_at) never
// stops the fleet: the pass skips and reports it, and publishes the others.
func TestOneBadRowNeverStopsThePass(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	old, gated := testenv.DaysAgo(200), tenant.StatusGatedAccess
	w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleOld, Status: gated, LastQuery: old, Pairs: 1, DocsPerPair: 3})
	w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleNever, Status: gated, Pairs: 1, DocsPerPair: 3})
	w.DBs.ExecControl(t, "ALTER TABLE tenant ALTER COLUMN created_at DROP NOT NULL")
	w.DBs.ExecControl(t, "UPDATE tenant SET created_at = NULL WHERE tenant_id = $1", eligibleNever)
	out := w.analyze()
	if !strings.Contains(out, eligibleNever+": control-plane row cannot be judged: created_at is NULL") ||
		!strings.Contains(out, "published 1 candidates") {
		t.Fatalf("analyzer pass with a NULL created_at:\n%s", out)
	}
	// The marker refuses it with the same reason, and keeps going.
	w.startServices()
	if err := w.Bus.PublishRequest(context.Background(), tenant.Request{ID: eligibleNever, RequestedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(eligibleNever, tenant.OutcomeRefused, 20*time.Second)
	w.WaitFor(eligibleOld, tenant.OutcomeMarked, 20*time.Second)
}

// The analyzer's report is created exclusively, with restrictive
// permissions, never through a symbolic link planted at its predictable name.
func TestReportIsNeverWrittenThroughASymlink(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleOld, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 3})
	dir := w.Analyzer.ReportDir
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Plant a link at the name of this minute's and the next minute's reports.
	now := time.Now()
	for _, at := range []time.Time{now, now.Add(time.Second), now.Add(2 * time.Second), now.Add(3 * time.Second)} {
		name := filepath.Join(dir, "gated_tenants_no_query_3mo_"+at.UTC().Format("20060102_150405")+".csv")
		if err := os.Symlink(victim, name); err != nil {
			t.Fatal(err)
		}
	}
	out := w.analyze()
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Fatalf("the report was written through a symlink: %q", b)
	}
	var report string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "report: ") {
			report = strings.TrimPrefix(line, "report: ")
		}
	}
	fi, err := os.Lstat(report)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 || !strings.HasSuffix(report, "-2.csv") {
		t.Fatalf("report %q: %v, %v; want a new regular file with mode 0600 beside the planted link", report, fi, err)
	}
}

// Text from outside is sanitised at the boundary: a NUL byte and escape
// sequences in requested_by neither break the ledger insert (which used to
// leave the tenant half cleaned for good) nor reach an event or the ledger.
func TestHostileRequesterIsSanitised(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleOld, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 3})
	w.DrainTenants(true, eligibleOld)
	w.startServices()
	body := `{"tenant_id":"` + eligibleOld + `","requested_by":"mallory\u0000\u001b[2J\u001b]0;pwned\u0007` + strings.Repeat("x", 500) + `"}`
	if err := w.Bus.Conn().Publish("tenant.cleanup.candidate", []byte(body)); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(eligibleOld, tenant.OutcomeCleaned, 30*time.Second)
	w.AssertCleaned(eligibleOld)
	var by string
	if err := w.DBs.Control.QueryRow(context.Background(), "SELECT requested_by FROM tenant_cleanup.ledger WHERE tenant_id = $1", eligibleOld).Scan(&by); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(by, "mallory[2J]0;pwned") || len(by) > 200 {
		t.Fatalf("ledger requested_by %q; want it sanitised and bounded", by)
	}
	for _, ev := range w.EventsWith(tenant.OutcomeMarked) {
		if strings.ContainsAny(ev.RequestedBy, "\x00\x1b\x07") {
			t.Fatalf("event carries control characters: %q", ev.RequestedBy)
		}
	}
}
