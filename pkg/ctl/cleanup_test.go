package ctl

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

func TestCleanupWaitFollowsTheRequestsToTheEnd(t *testing.T) {
	w := newWorld(t)
	w.gated(idA, 1, 30)
	w.gated(idB, 0, 0)
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idC, Status: "ACTIVE", LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 3})
	w.gated(idD, 1, 10) // never drains
	w.drain(idA, idB, idC)
	w.startServices()

	// Every tenant cleaned: exit 0, one line per finished tenant, the summary.
	stdout, _ := mustRun(t, 0, "cleanup", idA, "--wait")
	contains(t, "cleanup --wait", stdout, "published 1 cleanup request(s) on "+bus.SubjectCandidate,
		"waiting for 1 tenant", "[1/1] "+idA+" cleaned: schema dropped", "1 of 1 cleaned")
	if lineWith(stdout, idA, "cleaned", "schema dropped (") == "" {
		t.Errorf("summary lacks the outcome of %s:\n%s", idA, stdout)
	}
	if !w.inLedger(idA) || w.dbs.SchemaExists(t, idA) {
		t.Errorf("%s was not cleaned", idA)
	}

	// One cleaned, one refused: exit 1, and the summary says why.
	stdout, _ = mustRun(t, 1, "cleanup", "--wait", "--timeout", "60s", idB, idC)
	contains(t, "cleanup --wait with a refusal", stdout, "waiting for 2 tenants", "1 of 2 cleaned (1 cleaned, 1 refused)")
	if lineWith(stdout, idB, "cleaned") == "" || lineWith(stdout, idC, "refused", `control-plane status is "ACTIVE", not GATED_ACCESS`) == "" {
		t.Errorf("summary:\n%s", stdout)
	}
	if lines := strings.Count(stdout, "] tenant_"); lines != 2 {
		t.Errorf("%d progress lines; want one per finished tenant:\n%s", lines, stdout)
	}
	if !w.dbs.SchemaExists(t, idC) || w.inLedger(idC) {
		t.Errorf("the refused tenant %s was touched", idC)
	}

	// A timeout lists the unfinished.
	stdout, stderr := mustRun(t, 1, "cleanup", "--wait", "--timeout", "2s", idD)
	contains(t, "cleanup --wait --timeout", stderr, "timed out after 2s: 1 tenant unfinished", idD)
	if lineWith(stdout, idD, "unfinished (") == "" {
		t.Errorf("summary lacks the unfinished tenant:\n%s", stdout)
	}

	// --timeout without --wait, and no ids, are usage errors.
	mustRun(t, 2, "cleanup", "--timeout", "1s", idA)
	mustRun(t, 2, "cleanup", "--wait")
}

func TestCleanupWaitInterrupted(t *testing.T) {
	w := newWorld(t)
	w.gated(idA, 1, 10) // not drained: stays draining
	w.startServices()
	var stdout, stderr testenv.SyncBuffer
	done := make(chan int)
	go func() { done <- Main([]string{"cleanup", idA, "--wait"}, &stdout, &stderr) }()
	testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(stdout.String(), "waiting for 1 tenant") },
		"tenantctl cleanup --wait waits")
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 130 {
			t.Fatalf("exit %d after SIGINT; want 130\n%s\n%s", code, stdout.String(), stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("tenantctl cleanup --wait did not stop on SIGINT")
	}
	contains(t, "interrupted wait", stderr.String(), "interrupted: 0 of 1 finished; the requests stay published")
	if lineWith(stdout.String(), idA, "unfinished") == "" {
		t.Errorf("summary lacks %s:\n%s", idA, stdout.String())
	}
}

func TestCleanupRecordsTheRequest(t *testing.T) {
	w := newWorld(t)
	csvFile := filepath.Join(t.TempDir(), "ids.csv")
	if err := os.WriteFile(csvFile, []byte("tenant_id,note\n"+idA+",x\n"+idB+",y\n"+idA+",dup\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Not on a terminal (a script, as the contract runs it): published
	// without a question, as with --yes on a terminal.
	stdout, _ := mustRun(t, 0, "cleanup", "--csv", csvFile, idC)
	contains(t, "cleanup --csv", stdout, "published 3 cleanup request(s)")
	for _, id := range []tenant.ID{idA, idB, idC} {
		s, found, err := w.bus.TenantState(context.Background(), id)
		if err != nil || !found || s.Phase != tenant.PhaseRequested || !strings.HasPrefix(s.RequestedBy, "tenantctl:") {
			t.Errorf("state of %s = %+v, %v, %v; want requested by tenantctl", id, s, found, err)
		}
	}
	// All-or-nothing: one invalid id and nothing is published.
	_, stderr := mustRun(t, 1, "cleanup", idD, "Tenant_X")
	contains(t, "cleanup with an invalid id", stderr, `invalid tenant id "Tenant_X"`, "nothing was published")
	if _, found, _ := w.bus.TenantState(context.Background(), idD); found {
		t.Errorf("%s was recorded although nothing was published", idD)
	}
}

func TestProgressOnATerminal(t *testing.T) {
	var out bytes.Buffer
	yes := true
	c := &CLI{Stdout: &out, Stderr: &out, terminal: &yes, width: 200}
	f := &follower{events: make(chan tenant.Event, 10), done: make(chan struct{})}
	for _, ev := range []tenant.Event{
		{TenantID: idA, Outcome: tenant.OutcomeRequested},
		{TenantID: idB, Outcome: tenant.OutcomeMarked},
		{TenantID: idD, Outcome: tenant.OutcomeCleaned}, // not ours: ignored
		{TenantID: idA, Outcome: tenant.OutcomeDraining},
		{TenantID: idA, Outcome: tenant.OutcomeCleaned, Reason: "schema dropped"},
		{TenantID: idA, Outcome: tenant.OutcomeRefused, Reason: "already cleaned"}, // after the end: ignored
		{TenantID: idB, Outcome: tenant.OutcomeStuck, Reason: "not drained"},
	} {
		f.events <- ev
	}
	code := c.waitFor(context.Background(), f, newProgress([]tenant.ID{idA, idB}), 0)
	s := out.String()
	if code != exitFailed {
		t.Errorf("exit %d; want 1 (one stuck)", code)
	}
	contains(t, "terminal progress", s,
		eraseLine+"[------------------------] 0/2 finished | 2 in progress (2 published)",
		eraseLine+"[------------------------] 0/2 finished | 2 in progress (1 marked, 1 requested)",
		eraseLine+"[############------------] 1/2 finished (1 cleaned) | 1 in progress (1 marked)",
		eraseLine+"[2/2] "+idB+" stuck: not drained\n",
		eraseLine+"[########################] 2/2 finished (1 cleaned, 1 stuck)",
		"1 of 2 cleaned (1 cleaned, 1 stuck)")
	if strings.Contains(s, idD) || strings.Contains(s, "already cleaned") || strings.Contains(s, "waiting for") {
		t.Errorf("terminal output shows what it should not:\n%s", s)
	}
	if lineWith(s, idB, "stuck", "not drained") == "" {
		t.Errorf("summary:\n%s", s)
	}
}

// A tenant whose schema is gone, with nothing to show that a cleanup of it
// began, is completed only once an operator confirms it: without a terminal
// and without --force nothing is published; with --force the confirmation is
// recorded and the pipeline completes it.
func TestCleanupAsksBeforeCompletingATenantWithoutSchema(t *testing.T) {
	w := newWorld(t)
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idA, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200), NoSchema: true})
	w.startServices()
	seq := w.streamLastSeq()
	stdout, stderr := mustRun(t, 2, "cleanup", idA)
	contains(t, "cleanup of a tenant without schema", stdout, idA+": its schema is not on the data plane", "deletes its 5 public rows")
	contains(t, "cleanup without a terminal", stderr, "again with --force", "nothing was published")
	if w.streamLastSeq() != seq || w.dbs.PublicRows(t, idA) != 5 {
		t.Fatal("an unconfirmed completion published or deleted something")
	}
	stdout, _ = mustRun(t, 0, "cleanup", "--force", "--wait", "--timeout", "60s", idA)
	contains(t, "cleanup --force", stdout, "recorded your confirmation for 1 tenant(s)", "1 of 1 cleaned")
	if !w.inLedger(idA) || w.dbs.PublicRows(t, idA) != 0 {
		t.Fatal("the confirmed tenant was not completed")
	}
	if e := w.dbs.CountControl(t, "SELECT count(*) FROM tenant_cleanup.ledger WHERE evidence LIKE 'completion confirmed by tenantctl:%'"); e != 1 {
		t.Fatal("the ledger does not record the operator's confirmation")
	}
}
