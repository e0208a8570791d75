package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// served is a marker and a cleaner running in this process, each with its
// own /readyz.
type served struct{ marker, cleaner string }

// startServed runs a marker and a cleaner in this process with their HTTP
// endpoints on free ports (tune may change their configuration), and the
// drain simulation; all stop when the test ends.
func (w *world) startServed(tune func(*config.Marker, *config.Cleaner)) served {
	w.t.Helper()
	s := served{marker: freeAddr(w.t), cleaner: freeAddr(w.t)}
	m, c := w.Marker, w.Cleaner
	m.HTTPAddr, c.HTTPAddr = s.marker, s.cleaner
	if tune != nil {
		tune(&m, &c)
	}
	w.run(1, 1, m, c)
	return s
}

func ready(addr string) bool {
	code, _ := httpGet("http://" + addr + "/readyz")
	return code == 200
}

// eventually is testenv.Eventually polling every 20 ms, for short windows.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanedWithin requests id raw on the public subject (as an operator would)
// and waits until its ledger row is written: the request went through marker
// and cleaner. It does not rely on the events stream, which the tests delete.
func (w *world) cleanedWithin(id string, timeout time.Duration) {
	w.t.Helper()
	start := time.Now()
	w.DrainTenants(true, id)
	eventually(w.t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := w.Bus.JetStream().Publish(ctx, bus.SubjectCandidate, []byte(id))
		return err == nil
	}, "request for %s stored", id)
	eventually(w.t, timeout, func() bool {
		return w.DBs.CountControl(w.t, "SELECT count(*) FROM tenant_cleanup.ledger WHERE tenant_id = $1", id) == 1
	}, "%s cleaned", id)
	w.AssertCleaned(id)
	w.t.Logf("%s requested and cleaned in %s", id, time.Since(start).Round(10*time.Millisecond))
}

// pipelineStreams are the streams of the pipeline, its buckets' included.
var pipelineStreams = []string{bus.StreamRequests, bus.StreamWork, bus.StreamEvents, bus.StreamDead,
	"KV_" + bus.BucketState, "KV_TENANT_CLEANUP_FAILURES"}

// TestServicesRecreateWhatWasDeleted deletes, with the JetStream API, the
// services' consumers, then every stream and bucket, then takes the public
// subject away from the requests stream, while a marker and a cleaner run:
// each time they recreate what they need and clean a newly requested tenant
// within seconds, without a restart; /readyz is false while they cannot
// consume.
func TestServicesRecreateWhatWasDeleted(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ids := w.fleet(4, 2, "7")
	s := w.startServed(nil)
	js := w.Bus.JetStream()
	ctx := context.Background()
	eventually(t, 20*time.Second, func() bool { return ready(s.marker) && ready(s.cleaner) }, "services ready")
	w.cleanedWithin(ids[0], 20*time.Second)

	for _, c := range []string{bus.ConsumerMarker, bus.ConsumerCleaner} {
		if err := js.DeleteConsumer(ctx, bus.ConsumerStream(c), c); err != nil {
			t.Fatal(err)
		}
	}
	w.cleanedWithin(ids[1], 20*time.Second)

	for _, name := range pipelineStreams {
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	w.cleanedWithin(ids[2], 20*time.Second)
	for _, name := range pipelineStreams {
		if _, err := js.Stream(ctx, name); err != nil {
			t.Errorf("stream %s not recreated: %v", name, err)
		}
	}

	// Another stream takes the public subject: the marker cannot consume
	// until it is gone, and says so; the cleaner is unaffected.
	requests, err := js.Stream(ctx, bus.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	cfg := requests.CachedInfo().Config
	cfg.Subjects = []string{"squatted"}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SQUATTER", Subjects: []string{bus.SubjectCandidate}}); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, bus.StreamRequests); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return !ready(s.marker) }, "marker not ready without its stream")
	_, body := httpGet("http://" + s.marker + "/readyz")
	if !strings.Contains(body, "consumer marker") {
		t.Errorf("marker /readyz says %q; want the reason", body)
	}
	if !ready(s.cleaner) {
		t.Error("the cleaner is not ready; its consumer is intact")
	}
	if err := js.DeleteStream(ctx, "SQUATTER"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return ready(s.marker) }, "marker ready again")
	w.cleanedWithin(ids[3], 20*time.Second)
}

// TestJetStreamLostItsStore kills the JetStream server (a nats-server v2.15
// process) with SIGKILL and starts it again on the same port with an empty
// store, as after a lost disk: the running marker and cleaner are not ready
// while it is down, then recreate every stream, bucket and consumer and
// clean newly requested tenants, without a restart. A tenant marked before
// the loss, whose drain checks were lost with the store, is found by the
// cleaner from the pipeline's own record and cleaned too.
func TestJetStreamLostItsStore(t *testing.T) {
	t.Parallel()
	bin := binaries(t)
	addr := freeAddr(t)
	startNATS := func(store string) *proc { return startNATSServer(t, bin, addr, store) }
	server := startNATS(t.TempDir())
	w := newWorldWith(t, testworld.Options{NATSURL: "nats://" + addr})
	ids := w.fleet(4, 2, "6")
	s := w.startServed(nil)
	eventually(t, 20*time.Second, func() bool { return ready(s.marker) && ready(s.cleaner) }, "services ready")
	w.cleanedWithin(ids[0], 20*time.Second)
	// Marked, not drained yet: its next drain check waits in the store.
	marked := ids[3]
	if err := w.Bus.PublishRequest(context.Background(), tenant.Request{ID: tenant.ID(marked), RequestedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() bool {
		return w.DBs.CountData(t, "SELECT count(*) FROM tenant_cleanup.progress WHERE tenant_id = $1 AND marked_at IS NOT NULL", marked) == 1
	}, "%s marked", marked)

	if err := server.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	server.wait(t, 10*time.Second)
	eventually(t, 10*time.Second, func() bool { return !ready(s.marker) && !ready(s.cleaner) }, "not ready while JetStream is down")
	lost := time.Now()
	startNATS(t.TempDir()) // an empty store
	eventually(t, 20*time.Second, func() bool { return ready(s.marker) && ready(s.cleaner) }, "ready on the new store")
	t.Logf("ready again %s after the server came back empty", time.Since(lost).Round(10*time.Millisecond))
	js := w.Bus.JetStream()
	var missing error
	recreated := func() bool {
		missing = nil
		for _, name := range pipelineStreams {
			if _, err := js.Stream(context.Background(), name); err != nil {
				missing = errors.Join(missing, fmt.Errorf("stream %s not recreated: %w", name, err))
			}
		}
		for _, c := range []string{bus.ConsumerMarker, bus.ConsumerCleaner} {
			if _, err := js.Consumer(context.Background(), bus.ConsumerStream(c), c); err != nil {
				missing = errors.Join(missing, fmt.Errorf("consumer %s not recreated: %w", c, err))
			}
		}
		return missing == nil
	}
	for deadline := time.Now().Add(5 * time.Second); !recreated() && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond) // polling, as eventually does
	}
	if missing != nil {
		t.Error(missing)
	}
	w.cleanedWithin(ids[1], 30*time.Second)
	w.cleanedWithin(ids[2], 30*time.Second)
	// Its drain check was lost with the store; once drained it is cleaned
	// without anyone requesting it again.
	w.DrainTenants(true, marked)
	eventually(t, 30*time.Second, func() bool {
		return w.DBs.CountControl(t, "SELECT count(*) FROM tenant_cleanup.ledger WHERE tenant_id = $1", marked) == 1
	}, "%s, whose drain check was lost, cleaned", marked)
}
