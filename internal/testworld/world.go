// Package testworld is the one test harness of the pipeline: a World is a
// test's own databases (cloned from the fixture's templates), JetStream
// server, bus connection, event log and drain simulation, with the
// services' configurations as structs pointed at them. Nothing is read from
// or written to the environment, so tests built on it run in parallel.
//
// Starting the services themselves is left to the caller (e2e runs
// service.RunMarker and friends with w.Go), so that the pipeline's own
// tests can use the harness without an import cycle.
package testworld

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// World is one test's databases, JetStream, bus, event log, service
// configurations and drain simulation.
type World struct {
	T    testing.TB
	DBs  *testenv.Databases
	JS   *testenv.JetStream // nil when Options.NATSURL named a server
	Bus  *bus.Bus
	Logs *testenv.SyncBuffer // what the services log, shown when the test fails

	// Marker, Cleaner and Analyzer are the services' configurations:
	// config.Defaults, pointed at this world, with short drain checks and no
	// HTTP endpoint. Change them before starting a service.
	Marker   config.Marker
	Cleaner  config.Cleaner
	Analyzer config.Analyzer

	events testenv.Events // every event reported since New
	mu     sync.Mutex
	// draining lists the tenants whose background deletion is simulated.
	draining map[string]bool
}

// Options change where a world's parts run.
type Options struct {
	// PostgresAdmin is the PostgreSQL server (default: the machine's).
	PostgresAdmin string
	// NATSURL is an existing JetStream (default: a fresh embedded server).
	NATSURL string
	// NATSReplicas is NATS_REPLICAS for the services (default 1).
	NATSReplicas int
	// Databases are existing databases to work on (default: fresh ones
	// cloned from the fixture's templates); the world does not drop them.
	Databases *testenv.Databases
}

// New builds a world for t; everything in it ends with t.
func New(t testing.TB, o Options) *World {
	t.Helper()
	if o.PostgresAdmin == "" {
		o.PostgresAdmin = testenv.AdminURL()
	}
	w := &World{T: t, DBs: o.Databases, Logs: &testenv.SyncBuffer{}, draining: map[string]bool{}}
	if w.DBs == nil {
		w.DBs = testenv.NewDatabasesOn(t, o.PostgresAdmin)
	}
	if o.NATSURL == "" {
		w.JS = testenv.StartJetStream(t)
		o.NATSURL = w.JS.URL
	}
	w.configure(o, t.TempDir())
	b, err := bus.Connect(context.Background(), o.NATSURL, bus.Options{Name: "test", Replicas: w.Marker.NATSReplicas,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	w.Bus = b
	stop, err := b.WatchEvents(context.Background(), time.Time{}, w.events.Add)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() && w.Logs.String() != "" {
			t.Logf("service logs:\n%s", w.Logs.String())
		}
	})
	return w
}

// configure sets the three configurations to the defaults, pointed at this
// world.
func (w *World) configure(o Options, reportDir string) {
	config.Defaults(&w.Marker)
	config.Defaults(&w.Cleaner)
	config.Defaults(&w.Analyzer)
	w.Common(func(c *config.Common) {
		c.DataPlaneURL = w.DBs.DataURL
		c.ControlPlaneURL = w.DBs.ControlURL
		c.NATSURL = o.NATSURL
		c.NATSReplicas = max(o.NATSReplicas, 1)
	})
	w.Marker.HTTPAddr, w.Cleaner.HTTPAddr, w.Analyzer.HTTPAddr = "", "", "" // tests that want /metrics set their own port
	w.SetCheckDelay(time.Second)
	w.Marker.CheckMaxDelay, w.Cleaner.CheckMaxDelay = time.Second, time.Second
	w.Cleaner.Pace.Interval = 100 * time.Millisecond // the pacer calibrates in a second
	w.Analyzer.ReportDir = reportDir
}

// Common applies fn to what every service's configuration shares.
func (w *World) Common(fn func(*config.Common)) {
	fn(&w.Marker.Common)
	fn(&w.Cleaner.Common)
	fn(&w.Analyzer.Common)
}

// SetCheckDelay sets DRAIN_CHECK_DELAY of the marker and the cleaner.
func (w *World) SetCheckDelay(d time.Duration) {
	w.Marker.CheckDelay, w.Cleaner.CheckDelay = d, d
}

// Environ is the world's configuration as environment variables, for
// processes that read it there (the binaries, tenantctl): the cleaner's
// variables (a superset of the marker's), then the analyzer's own.
func (w *World) Environ() []string {
	env := config.Environ(&w.Cleaner)
	for _, kv := range config.Environ(&w.Analyzer) {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.ContainsFunc(env, func(have string) bool { return strings.HasPrefix(have, name+"=") }) {
			env = append(env, kv)
		}
	}
	return env
}

// Validated is cfg after config.Validate, as a service's main would refuse
// it.
func Validated[C any](t testing.TB, cfg C) *C {
	t.Helper()
	if err := config.Validate(&cfg); err != nil {
		t.Fatal(err)
	}
	return &cfg
}

// Prepare creates this pipeline's tables on both planes, as the services do
// at start.
func (w *World) Prepare() {
	w.T.Helper()
	ctx := context.Background()
	data, err := dataplane.New(ctx, w.DBs.Data, dataplane.Options{})
	if err == nil {
		_, err = data.Ensure(ctx, true)
	}
	if err == nil {
		err = controlplane.New(w.DBs.Control).Ensure(ctx)
	}
	if err != nil {
		w.T.Fatal(err)
	}
}

// Logger is a JSON logger into w.Logs for a service.
func (w *World) Logger(service string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("service", service)
}

// Go runs fn (a service, say) until the test ends, then cancels its context
// and waits for it; an error it returns fails the test.
func (w *World) Go(fn func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	w.T.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			w.T.Errorf("service stopped with %v", err)
		}
	})
}

// SimulateDeletion runs Onyx's background deletion until the test ends: a
// drain step for every tenant DrainTenants turned on, ten times a second.
func (w *World) SimulateDeletion() {
	w.Go(func(ctx context.Context) error {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
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
				_, _ = w.DBs.Data.Exec(ctx, "SELECT fixture.drain_step($1, 1000)", id)
			}
		}
	})
}

// DrainTenants turns the simulated background deletion of ids on or off.
func (w *World) DrainTenants(on bool, ids ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range ids {
		w.draining[id] = on
	}
}
