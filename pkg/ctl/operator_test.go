package ctl

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// These tests drive tenantctl without a terminal, as a script or an
// operator's pipe would, through Main (what the binary runs).

// csvOf writes a CSV of tenant ids with a header and returns its path.
func csvOf(t *testing.T, ids ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tenants.csv")
	if err := os.WriteFile(p, []byte("tenant_id,note\n"+strings.Join(ids, ",x\n")+",x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// noneRecorded fails the test if any of ids has a state in the pipeline.
func (w *world) noneRecorded(ids ...string) {
	w.t.Helper()
	for _, id := range ids {
		if _, found, _ := w.bus.TenantState(context.Background(), tenant.ID(id)); found {
			w.t.Errorf("%s has a state in the pipeline: something was published for it", id)
		}
	}
}

// cleanup --dry-run prints each tenant's verdict (with ids and with --csv),
// needs no NATS and publishes nothing.
func TestCleanupDryRun(t *testing.T) {
	w := newWorld(t)
	w.gated(idA, 1, 7)                                                                                               // eligible
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idB, Status: "ACTIVE", LastQuery: testenv.DaysAgo(200)})                // status
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idC, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(10)}) // active lately
	w.gated(idD, 0, 0)                                                                                               // held
	w.placeHold(tenant.Hold{ID: idD, Reason: "legal review", By: "tenantctl:ops@host", At: time.Now()})
	w.ensureLedger()
	w.dbs.ExecControl(t, "INSERT INTO tenant_cleanup.ledger (tenant_id) VALUES ($1)", idE) // cleaned earlier
	seq := w.streamLastSeq()
	// No NATS needed: a dry run reads the databases only.
	t.Setenv("NATS_URL", "nats://127.0.0.1:1")

	check := func(what, stdout string) {
		t.Helper()
		for _, want := range [][]string{
			{idA, "eligible", "(200d ago)", " 7 ", "none"},
			{idB, `not eligible`, "ACTIVE"},
			{idC, "not eligible", "(10d ago)"},
			{idD, "held", "legal review"},
			{idE, "already cleaned (in the ledger)"},
		} {
			if lineWith(stdout, want...) == "" {
				t.Errorf("%s: no line with %q:\n%s", what, want, stdout)
			}
		}
		contains(t, what, stdout, "dry run: 1 eligible, 1 already cleaned, 3 neither, of 5 tenants; nothing was published")
	}
	stdout, _ := mustRun(t, 1, "cleanup", "--dry-run", idA, idB, idC, idD, idE)
	check("cleanup --dry-run IDs", stdout)
	stdout, _ = mustRun(t, 1, "cleanup", "--dry-run", "--csv", csvOf(t, idA, idB, idC, idD, idE))
	check("cleanup --dry-run --csv", stdout)
	// Every tenant eligible or cleaned: exit 0.
	stdout, _ = mustRun(t, 0, "cleanup", "--csv", csvOf(t, idA, idE), "--dry-run")
	contains(t, "cleanup --dry-run of eligible tenants", stdout, "dry run: 1 eligible, 1 already cleaned, 0 neither, of 2 tenants")

	if got := w.streamLastSeq(); got != seq {
		t.Errorf("a dry run published %d messages", got-seq)
	}
	w.noneRecorded(idA, idB, idC, idD, idE)
	if !w.dbs.SchemaExists(t, idA) {
		t.Error("a dry run touched an eligible tenant")
	}
	// An invalid id is refused before anything is read.
	_, stderr := mustRun(t, 1, "cleanup", "--dry-run", idA, "public")
	contains(t, "cleanup --dry-run public", stderr, `invalid tenant id "public"`)
	// --dry-run and --wait do not go together.
	mustRun(t, 2, "cleanup", "--dry-run", "--wait", idA)
}

// A CSV run again after a partial run: the tenants already cleaned are
// success (reported, not requested again), the rest are cleaned.
func TestCleanupCSVRerunAfterPartialRun(t *testing.T) {
	w := newWorld(t)
	w.gated(idA, 1, 5)
	w.gated(idB, 1, 5)
	w.gated(idC, 0, 0)
	w.drain(idA, idB, idC)
	w.startServices()
	csvFile := csvOf(t, idA, idB, idC)

	// The partial run: only idA.
	mustRun(t, 0, "cleanup", idA, "--wait", "--timeout", "60s")
	if !w.inLedger(idA) {
		t.Fatalf("%s was not cleaned", idA)
	}
	seq := w.streamLastSeq()
	stdout, stderr := mustRun(t, 0, "cleanup", "--csv", csvFile, "--wait", "--timeout", "60s")
	contains(t, "the CSV run again", stdout,
		idA+": already cleaned (in the ledger); not requested again",
		"requests the cleanup of 2 tenants",
		"published 2 cleanup request(s)",
		"3 of 3 cleaned")
	if strings.Contains(stdout+stderr, "refused") {
		t.Errorf("a tenant already cleaned came back refused:\n%s\n%s", stdout, stderr)
	}
	if got := w.streamLastSeq(); got != seq+2 {
		t.Errorf("%d requests published; want 2 (not the one already cleaned)", got-seq)
	}
	if lineWith(stdout, idA, "cleaned", "already cleaned") == "" {
		t.Errorf("the summary does not say %s was already cleaned:\n%s", idA, stdout)
	}
	// Everything cleaned: a third run publishes nothing and succeeds.
	seq = w.streamLastSeq()
	stdout, _ = mustRun(t, 0, "cleanup", "--csv", csvFile, "--wait")
	for _, id := range []string{idA, idB, idC} {
		contains(t, "the CSV run a third time", stdout, id+": already cleaned (in the ledger)")
	}
	if strings.Contains(stdout, "published") || w.streamLastSeq() != seq {
		t.Errorf("the third run published:\n%s", stdout)
	}
}

// mainAsync runs tenantctl in the background; the returned channel gets its
// exit status.
func mainAsync(args ...string) (*testenv.SyncBuffer, *testenv.SyncBuffer, <-chan int) {
	var stdout, stderr testenv.SyncBuffer
	done := make(chan int, 1)
	go func() { done <- Main(args, &stdout, &stderr) }()
	return &stdout, &stderr, done
}

func exitWithin(t *testing.T, done <-chan int, timeout time.Duration, stdout, stderr *testenv.SyncBuffer) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(timeout):
		t.Fatalf("tenantctl did not exit within %s\n%s\n%s", timeout, stdout.String(), stderr.String())
		return -1
	}
}

// tenantctl watch re-attaches to cleanups in flight: without ids, every
// tenant not finished; with ids, those; finished ones count at once.
func TestWatchReattachesToCleanupsInFlight(t *testing.T) {
	w := newWorld(t)
	w.gated(idA, 1, 5)
	w.gated(idB, 1, 5)
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idC, Status: "ACTIVE", LastQuery: testenv.DaysAgo(200)})
	w.gated(idD, 0, 0)
	w.gated(idE, 0, 0) // held: not in flight
	w.placeHold(tenant.Hold{ID: idE, Reason: "legal review", By: "tenantctl:ops@host", At: time.Now()})
	w.drain(idD, idE)
	w.startServices()

	stdout, _ := mustRun(t, 0, "watch")
	contains(t, "watch with nothing in flight", stdout, "no cleanup in flight")

	mustRun(t, 0, "cleanup", idD, "--wait", "--timeout", "60s") // finished before the watch
	// Published by an earlier run (which did not wait); idA and idB do not
	// drain yet, idC is refused.
	mustRun(t, 0, "cleanup", idA, idB, idC, idE)
	testenv.Eventually(t, 30*time.Second, func() bool {
		s, found, _ := w.bus.TenantState(context.Background(), idC)
		a, foundA, _ := w.bus.TenantState(context.Background(), idA)
		e, foundE, _ := w.bus.TenantState(context.Background(), idE)
		return found && s.Phase == tenant.PhaseRefused && foundA && a.Phase == tenant.PhaseDraining && foundE && e.Phase == tenant.PhaseHeld
	}, "%s refused, %s draining and %s held", idC, idA, idE)

	// Without ids: the two in flight.
	out, errOut, done := mainAsync("watch", "--timeout", "90s")
	testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(out.String(), "watching 2 tenants, 0 finished already") },
		"watch re-attaches to the 2 tenants in flight:\n%s\n%s", out, errOut)
	// With ids: a finished one (cleaned), a refused one and one in flight.
	out2, errOut2, done2 := mainAsync("watch", idD, idC, idA, "--timeout", "90s")
	testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(out2.String(), "watching 3 tenants, 2 finished already") },
		"watch IDs:\n%s\n%s", out2, errOut2)
	w.drain(idA, idB)

	if code := exitWithin(t, done, 90*time.Second, out, errOut); code != 0 {
		t.Errorf("watch: exit %d; want 0\n%s\n%s", code, out, errOut)
	}
	contains(t, "watch", out.String(), "[1/2] ", "[2/2] ", "2 of 2 cleaned")
	for _, id := range []string{idA, idB} {
		if lineWith(out.String(), id, "cleaned") == "" {
			t.Errorf("watch does not report %s cleaned:\n%s", id, out)
		}
	}
	if strings.Contains(out.String(), idC) || strings.Contains(out.String(), idD) || strings.Contains(out.String(), idE) {
		t.Errorf("watch without ids follows finished tenants:\n%s", out)
	}
	if code := exitWithin(t, done2, 90*time.Second, out2, errOut2); code != 1 {
		t.Errorf("watch IDs with a refused tenant: exit %d; want 1\n%s\n%s", code, out2, errOut2)
	}
	contains(t, "watch IDs", out2.String(), "2 of 3 cleaned (2 cleaned, 1 refused)")
	if lineWith(out2.String(), idC, "refused", "GATED_ACCESS") == "" || lineWith(out2.String(), idD, "cleaned") == "" {
		t.Errorf("watch IDs summary:\n%s", out2)
	}
	if strings.Contains(errOut.String()+errOut2.String(), "no marker") {
		t.Errorf("watch warned that nothing consumes while the services run:\n%s%s", errOut, errOut2)
	}
}

// runMarkerUntil runs a marker in this process until the returned stop
// function is called (and returns once it stopped).
func (w *world) runMarkerUntil() (stop func()) {
	w.t.Helper()
	var cfg config.Marker
	if err := config.Load(&cfg); err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- service.RunMarker(ctx, &cfg, slog.New(slog.NewJSONHandler(w.logs, nil)).With("service", "marker"))
	}()
	return func() {
		cancel()
		if err := <-done; err != nil {
			w.t.Errorf("marker: %v", err)
		}
	}
}

// status says whether the pipeline is alive: each consumer (never started,
// consuming, or not consuming with its backlog), the cleaner replicas and
// their pace, and the analyzer's last pass (OVERDUE after two intervals).
func TestStatusLiveness(t *testing.T) {
	w := newWorld(t)
	w.gated(idA, 0, 0)
	ctx := context.Background()

	// Nothing ever ran.
	stdout, _ := mustRun(t, 0, "status")
	contains(t, "status of a new pipeline", stdout, "Liveness:", "Cleaner replicas reporting: 0",
		"Analyzer: no pass recorded")
	for _, name := range []string{"marker", "cleaner"} {
		if lineWith(stdout, name, "never started") == "" {
			t.Errorf("status does not say the %s never started:\n%s", name, stdout)
		}
	}

	// A marker that ran and stopped: requests pile up for it.
	stop := w.runMarkerUntil()
	testenv.Eventually(t, 20*time.Second, func() bool {
		cs, err := w.bus.Consumers(ctx)
		return err == nil && cs[0].Alive()
	}, "the marker consumes")
	stop()
	mustRun(t, 0, "cleanup", idB, idC, idD)
	stdout, _ = mustRun(t, 0, "status")
	if lineWith(stdout, "marker", "NOT CONSUMING", " 3 ") == "" {
		t.Errorf("status does not show the stopped marker with its backlog of 3:\n%s", stdout)
	}
	stdout, _ = mustRun(t, 0, "status", "-o", "json")
	var v struct {
		Liveness struct {
			Consumers []struct {
				Name    string `json:"name"`
				Exists  bool   `json:"exists"`
				Pending int    `json:"pending"`
				Pulling int    `json:"pulling"`
			} `json:"consumers"`
			Replicas int             `json:"cleaner_replicas"`
			Analyzer json.RawMessage `json:"analyzer_last_pass"`
		} `json:"liveness"`
	}
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, stdout)
	}
	if c := v.Liveness.Consumers; len(c) != 2 || c[0].Name != "marker" || !c[0].Exists || c[0].Pending != 3 || c[0].Pulling != 0 || c[1].Exists {
		t.Errorf("status -o json liveness consumers = %+v; want the marker stopped with 3 pending, no cleaner ever", c)
	}
	if string(v.Liveness.Analyzer) != "null" {
		t.Errorf("status -o json: analyzer_last_pass = %s, want null", v.Liveness.Analyzer)
	}

	// The services run: both consume, the backlog drains, the cleaner
	// reports its pace.
	w.startServices()
	testenv.Eventually(t, 30*time.Second, func() bool {
		stdout, _ = mustRun(t, 0, "status")
		return lineWith(stdout, "marker", "consuming", " 0 ") != "" && lineWith(stdout, "cleaner", "consuming") != "" &&
			strings.Contains(stdout, "Cleaner replicas reporting: 1") && !strings.Contains(stdout, "NOT CONSUMING")
	}, "status shows the marker and the cleaner consuming and one replica")
	contains(t, "status with services", stdout, "Pace of the drops: 1 cleaner replica reporting")

	// A sharded replica reports a pace per shard: one line each, one replica.
	for _, shard := range []string{"default", "b"} {
		if err := w.bus.SetPace(ctx, bus.PaceReport{By: "cleaner@sharded/9", Shard: shard, State: "throttled", Limit: 1, Max: 2,
			Reason: "probe on " + shard, At: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	stdout, _ = mustRun(t, 0, "status")
	contains(t, "status with a sharded replica", stdout, "Pace of the drops: 2 cleaner replicas reporting", "Cleaner replicas reporting: 2")
	for _, shard := range []string{"default", "b"} {
		if lineWith(stdout, "cleaner@sharded/9 on shard "+shard, "throttled", "probe on "+shard) == "" {
			t.Errorf("status has no pace line for shard %s:\n%s", shard, stdout)
		}
	}

	// The analyzer's last pass, then one overdue.
	now := time.Now().UTC()
	success := now.Add(-3 * time.Hour)
	if err := w.bus.SetAnalyzerPass(ctx, bus.AnalyzerPass{By: "analyzer@host/7", Started: now.Add(-time.Minute), Finished: now.Add(-time.Minute + 2*time.Second),
		Seen: 12, Candidates: 3, Interval: 24 * time.Hour, LastSuccess: &success}); err != nil {
		t.Fatal(err)
	}
	stdout, _ = mustRun(t, 0, "status")
	contains(t, "status after an analyzer pass", stdout, "Analyzer: last pass", "by analyzer@host/7", "12 tenants seen, 3 candidates")
	if strings.Contains(stdout, "OVERDUE") {
		t.Errorf("a pass within two intervals is called overdue:\n%s", stdout)
	}
	if err := w.bus.SetAnalyzerPass(ctx, bus.AnalyzerPass{By: "analyzer@host/7", Started: now.Add(-time.Minute), Finished: now.Add(-time.Minute + 2*time.Second),
		Error: "control plane unreachable", Interval: time.Hour, LastSuccess: &success}); err != nil {
		t.Fatal(err)
	}
	stdout, _ = mustRun(t, 0, "status")
	contains(t, "status with an overdue analyzer", stdout, "FAILED: control plane unreachable", "OVERDUE: no successful pass for more than two intervals (1h0m0s)")
}

// cleanup --wait says at once when no marker or cleaner consumes, long before
// its timeout; the requests stay published.
func TestCleanupWaitSaysAtOnceWhenNothingConsumes(t *testing.T) {
	w := newWorld(t)
	w.gated(idA, 0, 0)
	start := time.Now()
	out, errOut, done := mainAsync("cleanup", idA, "--wait", "--timeout", "10m")
	testenv.Eventually(t, 10*time.Second, func() bool { return strings.Contains(errOut.String(), "warning: no cleaner is consuming") },
		"cleanup --wait warns that nothing consumes:\n%s\n%s", out, errOut)
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("the warning took %s", took)
	}
	contains(t, "cleanup --wait without services", errOut.String(), "warning: no marker is consuming (none ever ran against this NATS)", "tenantctl status")
	select {
	case code := <-done:
		t.Fatalf("cleanup --wait exited %d instead of waiting:\n%s\n%s", code, out, errOut)
	default:
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := exitWithin(t, done, 20*time.Second, out, errOut); code != 130 {
		t.Errorf("exit %d after SIGINT; want 130", code)
	}
	if s, found, _ := w.bus.TenantState(context.Background(), idA); !found || s.Phase != tenant.PhaseRequested {
		t.Errorf("state of %s = %+v (found %v); want requested (the request stays published)", idA, s, found)
	}

	// With the services running, no warning.
	w.startServices()
	w.drain(idB)
	w.gated(idB, 0, 0)
	_, stderr := mustRun(t, 0, "cleanup", idB, "--wait", "--timeout", "60s")
	if strings.Contains(stderr, "consuming") {
		t.Errorf("cleanup --wait warned while the services run:\n%s", stderr)
	}
}
