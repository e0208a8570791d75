package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// Tenant ids of the tests.
const (
	idA = "tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745"
	idB = "tenant_1bcd62e7-9fbf-4bb6-8894-f1441fca6745"
	idC = "tenant_2cde62e7-9fbf-4bb6-8894-f1441fca6745"
	idD = "tenant_3def62e7-9fbf-4bb6-8894-f1441fca6745"
	idE = "tenant_4ef062e7-9fbf-4bb6-8894-f1441fca6745"
	idF = "tenant_5f0162e7-9fbf-4bb6-8894-f1441fca6745"
	idG = "tenant_60a262e7-9fbf-4bb6-8894-f1441fca6745"
	idH = "tenant_i-0ab1"
)

// world is one test's world (internal/testworld) with its configuration
// in the environment, where tenantctl reads it: tests that run tenantctl
// in this process therefore do not run in parallel.
type world struct {
	*testworld.World
	t    *testing.T
	dbs  *testenv.Databases
	bus  *bus.Bus
	logs *testenv.SyncBuffer
}

func newWorld(t *testing.T) *world {
	t.Helper()
	tw := testworld.New(t, testworld.Options{})
	w := &world{World: tw, t: t, dbs: tw.DBs, bus: tw.Bus, logs: tw.Logs}
	w.setenv()
	return w
}

// setenv puts the world's configuration in the environment.
func (w *world) setenv() {
	for _, kv := range w.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		w.t.Setenv(name, value)
	}
}

// shardB adds a second shard, b (a database of its own with this
// pipeline's tables), to the world's data plane (ONYX_DB_SHARDS) and
// returns its databases.
func (w *world) shardB() *testenv.Databases {
	w.t.Helper()
	b := testenv.NewDatabases(w.t)
	u, err := url.Parse(b.DataURL)
	if err != nil {
		w.t.Fatal(err)
	}
	data, err := dataplane.New(context.Background(), b.Data, dataplane.Options{Shard: "b", NotCatalog: true})
	if err == nil {
		_, err = data.Ensure(context.Background(), false)
	}
	if err != nil {
		w.t.Fatal(err)
	}
	data.Close()
	w.Common(func(c *config.Common) { c.ShardsJSON = `{"b": {"db": "` + strings.TrimPrefix(u.Path, "/") + `"}}` })
	w.setenv()
	return b
}

// withStores starts an S3 server and a Redis of the test's own (the stores
// besides the databases) and points tenantctl at them.
func (w *world) withStores() *testworld.OtherStores {
	w.t.Helper()
	o := testworld.StartOtherStores(w.t)
	o.Configure(&w.Cleaner.OtherStores)
	w.Cleaner.FileStore.MaxAttempts = 1
	w.setenv()
	return o
}

// run runs tenantctl as the binary does and returns its exit status and output.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// mustRun runs tenantctl and fails the test unless it exits with want.
func mustRun(t *testing.T, want int, args ...string) (string, string) {
	t.Helper()
	code, stdout, stderr := run(t, args...)
	if code != want {
		t.Fatalf("tenantctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, stdout, stderr)
	}
	return stdout, stderr
}

// contains fails the test unless s contains every want.
func contains(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(s, want) {
			t.Errorf("%s lacks %q:\n%s", what, want, s)
		}
	}
}

// lineWith returns the first line of s containing every part ("" if none).
func lineWith(s string, parts ...string) string {
	for _, line := range strings.Split(s, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return line
		}
	}
	return ""
}

// gated creates a GATED_ACCESS tenant inactive for 200 days.
func (w *world) gated(id string, pairs, docsPerPair int) {
	w.dbs.CreateTenant(w.t, testenv.Tenant{ID: id, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200),
		Pairs: pairs, DocsPerPair: docsPerPair})
}

// startServices runs a marker and a cleaner in this process (the code the
// binaries run) and the simulation of Onyx's deletion; all stop when the
// test ends.
func (w *world) startServices() {
	w.t.Helper()
	m, c := testworld.Validated(w.t, w.Marker), testworld.Validated(w.t, w.Cleaner)
	w.Go(func(ctx context.Context) error { return service.RunMarker(ctx, m, w.Logger("marker")) })
	w.Go(func(ctx context.Context) error { return service.RunCleaner(ctx, c, w.Logger("cleaner")) })
	w.SimulateDeletion()
}

// drain turns on the simulated background deletion of ids.
func (w *world) drain(ids ...string) { w.DrainTenants(true, ids...) }

// ensureLedger creates this pipeline's tables on both planes (the ledger,
// the holds, the records), as the services do at start.
func (w *world) ensureLedger() {
	w.t.Helper()
	if err := controlplane.New(w.dbs.Control).Ensure(context.Background()); err != nil {
		w.t.Fatal(err)
	}
	data, err := dataplane.New(context.Background(), w.dbs.Data, dataplane.Options{})
	if err == nil {
		_, err = data.Ensure(context.Background(), false)
	}
	if err != nil {
		w.t.Fatal(err)
	}
}

// dropRecorded records, as an interrupted cleanup would have, that this
// pipeline dropped the tenant's schema: the evidence that lets it complete
// a tenant whose schema is gone.
func (w *world) dropRecorded(id string) {
	w.t.Helper()
	w.ensureLedger()
	w.dbs.RecordDroppedSchema(w.t, id)
}

// placeHold writes a hold as tenantctl hold does, placed at h.At.
func (w *world) placeHold(h tenant.Hold) {
	w.t.Helper()
	w.ensureLedger()
	w.dbs.ExecControl(w.t, "INSERT INTO tenant_cleanup.hold (tenant_id, reason, until, placed_by, placed_at) VALUES ($1, $2, $3, $4, $5)",
		string(h.ID), h.Reason, h.Until, h.By, h.At)
}

// inLedger reports whether the tenant has a ledger row.
func (w *world) inLedger(id string) bool {
	return w.dbs.CountControl(w.t, "SELECT count(*) FROM tenant_cleanup.ledger WHERE tenant_id = $1", id) == 1
}

// report publishes an event as the services do, recording the tenant's state.
func (w *world) report(ev tenant.Event) { w.bus.Report(context.Background(), ev) }

// deadLetter dead-letters a cleanup request for id: a consume loop whose
// handler always fails, with MaxFailures 1, until the message is moved. It
// returns the dead letter.
func (w *world) deadLetter(id tenant.ID) bus.DeadLetter {
	w.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.bus.Consume(ctx, bus.ConsumeOptions{Consumer: bus.ConsumerMarker, FilterSubject: bus.SubjectCandidate, MaxFailures: 1},
			func(_ context.Context, d bus.Delivery) (bus.Outcome, error) {
				var out bus.Outcome
				req, err := tenant.ParseRequest(d.Data)
				if err != nil {
					return out, err
				}
				out.Tenant, out.RequestedBy = req.ID, req.RequestedBy
				return out, errFixture
			})
	}()
	// Published raw: bus.PublishRequest records the tenant as requested after
	// publishing, which can land after the dead-letter report.
	body, _ := json.Marshal(tenant.Request{ID: id, RequestedBy: "ops"})
	if _, err := w.bus.JetStream().Publish(context.Background(), bus.SubjectCandidate, body); err != nil {
		w.t.Fatal(err)
	}
	var found bus.DeadLetter
	testenv.Eventually(w.t, 20*time.Second, func() bool {
		dead, err := w.bus.DeadLetters(context.Background())
		for _, d := range dead {
			if d.Tenant == id {
				found = d
				return err == nil
			}
		}
		return false
	}, "the request for %s dead-lettered", id)
	cancel()
	<-done
	return found
}

var errFixture = errors.New(`relation "document" does not exist`)

// streamLastSeq is the requests stream's last sequence number: it moves with every request published.
func (w *world) streamLastSeq() uint64 { return w.StreamLastSeq() }
