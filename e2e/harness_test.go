// Package e2e drives the whole pipeline (analyzer, marker, cleaner and
// tenantctl) against real PostgreSQL databases and a real JetStream server,
// with Onyx's background deletion simulated by fixture.drain_step.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// world is one test's databases, JetStream server, running services, event
// log and drain simulation.
type world struct {
	t      *testing.T
	dbs    *testenv.Databases
	js     *testenv.JetStream
	bus    *bus.Bus
	logs   *testenv.SyncBuffer
	mu     sync.Mutex
	events []tenant.Event
	// draining lists the tenants whose background deletion is simulated.
	draining map[string]bool
}

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldWith(t, worldOptions{})
}

// worldOptions change where a world's parts run.
type worldOptions struct {
	// postgresAdmin is the PostgreSQL server (default: the machine's).
	postgresAdmin string
	// natsURL is an existing JetStream (default: a fresh embedded server).
	natsURL string
	// natsReplicas is NATS_REPLICAS for the services (default 1).
	natsReplicas int
}

func newWorldWith(t *testing.T, o worldOptions) *world {
	t.Helper()
	if o.postgresAdmin == "" {
		o.postgresAdmin = testenv.AdminURL()
	}
	w := &world{t: t, dbs: testenv.NewDatabasesOn(t, o.postgresAdmin), logs: &testenv.SyncBuffer{}, draining: map[string]bool{}}
	natsURL := o.natsURL
	if natsURL == "" {
		w.js = testenv.StartJetStream(t)
		natsURL = w.js.URL
	}
	if o.natsReplicas > 1 {
		t.Setenv("NATS_REPLICAS", fmt.Sprint(o.natsReplicas))
	}
	t.Setenv("HTTP_ADDR", "") // tests that want /metrics set their own port
	t.Setenv("DATA_PLANE_DATABASE_URL", w.dbs.DataURL)
	t.Setenv("CONTROL_PLANE_DATABASE_URL", w.dbs.ControlURL)
	t.Setenv("NATS_URL", natsURL)
	t.Setenv("DRAIN_CHECK_DELAY", "1s")
	t.Setenv("DRAIN_CHECK_MAX_DELAY", "1s")
	t.Setenv("PACE_INTERVAL", "100ms") // the pacer calibrates in a second
	t.Setenv("ANALYZER_REPORT_DIR", t.TempDir())
	b, err := bus.Connect(context.Background(), natsURL, bus.Options{Name: "e2e", Replicas: max(o.natsReplicas, 1), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	w.bus = b
	stop, err := b.WatchEvents(context.Background(), time.Time{}, func(ev tenant.Event) {
		w.mu.Lock()
		w.events = append(w.events, ev)
		w.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service logs:\n%s", w.logs.String())
		}
	})
	return w
}

// prepare creates this pipeline's tables on both planes, as the services do
// at start.
func (w *world) prepare() {
	w.t.Helper()
	ctx := context.Background()
	data, err := dataplane.New(ctx, w.dbs.Data, dataplane.Options{})
	if err == nil {
		_, err = data.Ensure(ctx, true)
	}
	if err == nil {
		err = controlplane.New(w.dbs.Control).Ensure(ctx)
	}
	if err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) logger(service string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("service", service)
}

// startServices runs a marker and a cleaner in this process (the same code
// the binaries run) and the drain simulation; all stop when the test ends.
func (w *world) startServices() { w.startReplicas(1, 1) }

// startReplicas runs that many markers and cleaners in this process.
func (w *world) startReplicas(markers, cleaners int) {
	w.t.Helper()
	var (
		mcfg config.Marker
		ccfg config.Cleaner
	)
	if err := config.Load(&mcfg); err != nil {
		w.t.Fatal(err)
	}
	if err := config.Load(&ccfg); err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, markers+cleaners)
	for range markers {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- service.RunMarker(ctx, &mcfg, w.logger("marker")) }()
	}
	for range cleaners {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- service.RunCleaner(ctx, &ccfg, w.logger("cleaner")) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); w.simulateDeletion(ctx) }()
	w.t.Cleanup(func() {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				w.t.Errorf("service stopped with %v", err)
			}
		}
	})
}

// simulateDeletion is Onyx's background deletion: a drain step for every
// tenant in w.draining, ten times a second.
func (w *world) simulateDeletion(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.mu.Lock()
		var ids []string
		for id, on := range w.draining {
			if on {
				ids = append(ids, id)
			}
		}
		w.mu.Unlock()
		for _, id := range ids {
			_, _ = w.dbs.Data.Exec(ctx, "SELECT fixture.drain_step($1, 1000)", id)
		}
	}
}

func (w *world) drainTenants(on bool, ids ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range ids {
		w.draining[id] = on
	}
}

// analyze runs one analyzer pass in this process and returns its output.
func (w *world) analyze() string {
	w.t.Helper()
	var cfg config.Analyzer
	if err := config.Load(&cfg); err != nil {
		w.t.Fatal(err)
	}
	var out bytes.Buffer
	if err := service.RunAnalyzer(context.Background(), &cfg, true, &out, w.logger("analyzer")); err != nil {
		w.t.Fatalf("analyzer pass: %v\n%s", err, out.String())
	}
	return out.String()
}

func (w *world) outcomes(id string) []tenant.Outcome {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []tenant.Outcome
	for _, ev := range w.events {
		if string(ev.TenantID) == id {
			out = append(out, ev.Outcome)
		}
	}
	return out
}

func (w *world) has(id string, o tenant.Outcome) bool {
	for _, got := range w.outcomes(id) {
		if got == o {
			return true
		}
	}
	return false
}

func (w *world) waitFor(id string, o tenant.Outcome, timeout time.Duration) {
	w.t.Helper()
	testenv.Eventually(w.t, timeout, func() bool { return w.has(id, o) }, "%s reported %s (events so far: %v)", id, o, w.outcomes(id))
}

func (w *world) eventsWith(o tenant.Outcome) []tenant.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []tenant.Event
	for _, ev := range w.events {
		if ev.Outcome == o {
			out = append(out, ev)
		}
	}
	return out
}

// assertCleaned: schema, public rows and control-plane rows gone, one ledger row.
func (w *world) assertCleaned(id string) {
	w.t.Helper()
	if w.dbs.SchemaExists(w.t, id) {
		w.t.Errorf("%s: schema still exists", id)
	}
	if n := w.dbs.PublicRows(w.t, id); n != 0 {
		w.t.Errorf("%s: %d public rows left", id, n)
	}
	if d := w.dbs.ControlRows(w.t, id); d != "----" {
		w.t.Errorf("%s: control-plane rows left", id)
	}
	if n := w.dbs.CountControl(w.t, "SELECT count(*) FROM tenant_cleanup.ledger WHERE tenant_id = $1", id); n != 1 {
		w.t.Errorf("%s: %d ledger rows; want exactly 1", id, n)
	}
}

// state is what must not change for a tenant the pipeline leaves alone.
type state struct{ fingerprint, control string }

func (w *world) state(id string) state {
	return state{w.dbs.Fingerprint(w.t, id), w.dbs.ControlRows(w.t, id)}
}

// streamLastSeq is the requests stream's last sequence number: it moves with every request published.
func (w *world) streamLastSeq() uint64 {
	w.t.Helper()
	s, err := w.bus.JetStream().Stream(context.Background(), bus.StreamRequests)
	if err != nil {
		w.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	return info.State.LastSeq
}

// workDone reports whether both consumers have nothing pending or in flight.
func (w *world) workDone() bool {
	for _, name := range []string{bus.ConsumerMarker, bus.ConsumerCleaner} {
		c, err := w.bus.JetStream().Consumer(context.Background(), bus.ConsumerStream(name), name)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
			return false
		}
	}
	return true
}

// assertLogsCarryTenant checks that every log line about an outcome names the tenant.
func (w *world) assertLogsCarryTenant() {
	w.t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(w.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			w.t.Errorf("log line is not JSON: %s", line)
			continue
		}
		if _, ok := rec["outcome"]; ok {
			if _, ok := rec["tenant_id"]; !ok {
				w.t.Errorf("outcome log line without tenant_id: %s", line)
			}
		}
	}
}
