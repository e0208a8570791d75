package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

const (
	idA tenant.ID = "tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745"
	idB tenant.ID = "tenant_1bf073f8-0ac0-4cc7-9905-025250db7856"
)

func connect(t *testing.T, url string) *Bus {
	t.Helper()
	b, err := Connect(context.Background(), url, Options{Name: "test", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// newBus connects to a fresh embedded JetStream.
func newBus(t *testing.T) *Bus {
	t.Helper()
	return connect(t, testenv.StartJetStream(t).URL)
}

// watch collects every event published from now on.
func watch(t *testing.T, b *Bus) *testenv.Events {
	t.Helper()
	e := &testenv.Events{}
	stop, err := b.WatchEvents(context.Background(), time.Time{}, e.Add)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return e
}

// counts counts calls by key; it is safe for concurrent use.
type counts struct {
	mu sync.Mutex
	n  map[string]int
}

// add counts one more call for key and returns how many there were.
func (c *counts) add(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[key]++
	return c.n[key]
}

func (c *counts) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		have string
		ok   bool
	}{{"2.9.25", false}, {"2.11.9", false}, {"2.12.0", true}, {"2.12.0-beta.1", true}, {"2.15.2", true}, {"3.0.0", true}, {"v2.14.1", true}} {
		if got := versionAtLeast(c.have, MinServerVersion); got != c.ok {
			t.Errorf("versionAtLeast(%s) = %v", c.have, got)
		}
	}
}

// TestRefusesOldServer connects to the Debian nats-server 2.9 this machine
// runs on 127.0.0.1:4222 (started by .ci/run when it is down).
func TestRefusesOldServer(t *testing.T) {
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		t.Fatalf("the Debian nats-server on 127.0.0.1:4222 is not running (.ci/run starts it): %v", err)
	}
	version := nc.ConnectedServerVersion()
	nc.Close()
	if versionAtLeast(version, MinServerVersion) {
		t.Skipf("the server on 4222 is %s, new enough; nothing to refuse", version)
	}
	_, err = Connect(context.Background(), "nats://127.0.0.1:4222", Options{Name: "test", Log: slog.New(slog.DiscardHandler)})
	if err == nil {
		t.Fatalf("connected to nats-server %s, which has no message scheduling", version)
	}
	if !strings.Contains(err.Error(), version) || !strings.Contains(err.Error(), MinServerVersion) {
		t.Fatalf("error %q must name the version found (%s) and the one needed (%s)", err, version, MinServerVersion)
	}
}

func TestScheduleReplacesPendingSchedule(t *testing.T) {
	b := newBus(t)
	ctx := context.Background()

	if pending, err := b.DrainPending(ctx, idA); err != nil || pending {
		t.Fatalf("pending before scheduling = %v, %v", pending, err)
	}
	// A first schedule far away, then a replacement soon: exactly one check,
	// the replacement, is delivered.
	if err := b.ScheduleDrainCheck(ctx, tenant.DrainCheck{ID: idA, Attempt: 1}, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if pending, err := b.DrainPending(ctx, idA); err != nil || !pending {
		t.Fatalf("pending after scheduling = %v, %v", pending, err)
	}
	if err := b.ScheduleDrainCheck(ctx, tenant.DrainCheck{ID: idA, Attempt: 2}, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, StreamWork, jetstream.ConsumerConfig{
		Durable: "probe", FilterSubject: DrainSubject(idA), AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	var got []tenant.DrainCheck
	testenv.Eventually(t, 10*time.Second, func() bool {
		batch, err := cons.FetchNoWait(10)
		if err != nil {
			return false
		}
		for m := range batch.Messages() {
			dc, err := tenant.ParseDrainCheck(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, dc)
			_ = m.Ack()
		}
		return len(got) > 0
	}, "scheduled drain check delivered")
	if len(got) != 1 || got[0].Attempt != 2 {
		t.Fatalf("delivered %+v; want only the replacement (attempt 2)", got)
	}
	info, err := b.work.Info(ctx, jetstream.WithSubjectFilter(ScheduleSubject(idA)))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[ScheduleSubject(idA)]; n != 0 {
		t.Fatalf("%d schedule messages left after it fired; want 0 (the first one replaced)", n)
	}
}

func TestConsumeMapsErrorsToAcks(t *testing.T) {
	b := newBus(t)
	ev := watch(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var seen counts
	handler := func(ctx context.Context, d Delivery) (Outcome, error) {
		var out Outcome
		req, err := tenant.ParseRequest(d.Data)
		n := seen.add(string(d.Data))
		if err != nil {
			return out, err
		}
		out.Tenant = req.ID
		switch req.ID {
		case "tenant_i-01": // refused
			return out, tenant.Refuse(req.ID, "not gated")
		case "tenant_i-02": // later, once
			if n == 1 {
				return out, tenant.Later(100*time.Millisecond, "busy", nil)
			}
		case "tenant_i-03": // panics once, then succeeds
			if n == 1 {
				panic("boom")
			}
		case "tenant_i-04": // fails once
			if n == 1 {
				return out, errors.New("database unreachable")
			}
		}
		return out, nil
	}
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(ctx, ConsumeOptions{Consumer: ConsumerMarker, FilterSubject: SubjectCandidate, Concurrency: 2}, handler)
	}()
	for _, body := range []string{"tenant_i-01", "tenant_i-02", "tenant_i-03", "tenant_i-04", "tenant_i-05", "public", `tenant_x'; DROP SCHEMA public CASCADE; --`} {
		if err := b.nc.Publish(SubjectCandidate, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	count := seen.get
	testenv.Eventually(t, 15*time.Second, func() bool {
		return count("tenant_i-02") == 2 && count("tenant_i-03") == 2 && count("tenant_i-04") == 2 && count("tenant_i-05") == 1
	}, "retried messages redelivered once")
	testenv.Eventually(t, 5*time.Second, func() bool { return len(ev.With(tenant.OutcomeRefused)) == 3 }, "three refused events")
	for _, body := range []string{"tenant_i-01", "public", "tenant_i-05"} {
		if n := count(body); n != 1 {
			t.Errorf("%s delivered %d times; want once (acked or terminated)", body, n)
		}
	}
	var inputs []string
	for _, e := range ev.With(tenant.OutcomeRefused) {
		if e.TenantID == "tenant_i-01" && e.Reason != "not gated" {
			t.Errorf("refused event %+v lacks the reason", e)
		}
		inputs = append(inputs, e.Input)
	}
	if !strings.Contains(strings.Join(inputs, " "), `"public"`) {
		t.Errorf("refused events %v do not quote the invalid input", inputs)
	}
	// Nothing is left on the work queue.
	cons, err := b.js.Consumer(context.Background(), StreamRequests, ConsumerMarker)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "work queue empty")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Consume returned %v", err)
	}
}

func TestConsumeStoppedBeforeItStartsIsCleanShutdown(t *testing.T) {
	b := newBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // SIGTERM while the service was still starting
	if err := b.nc.Publish(SubjectCandidate, []byte(idA)); err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int32
	err := b.Consume(ctx, ConsumeOptions{Consumer: ConsumerMarker, FilterSubject: SubjectCandidate},
		func(context.Context, Delivery) (Outcome, error) { handled.Add(1); return Outcome{}, nil })
	if err != nil {
		t.Fatalf("Consume after shutdown = %v; want nil (a clean stop)", err)
	}
	if handled.Load() != 0 {
		t.Fatal("a message was handled after shutdown")
	}
}

func TestConsumeShutdownHandsBackSlowWork(t *testing.T) {
	b := newBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{}, 2)
	var cancelled atomic.Int32
	handler := func(ctx context.Context, d Delivery) (Outcome, error) {
		var out Outcome
		started <- struct{}{}
		<-ctx.Done() // a handler that only stops when its context does
		cancelled.Add(1)
		return out, ctx.Err()
	}
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(ctx, ConsumeOptions{Consumer: ConsumerMarker, FilterSubject: SubjectCandidate,
			ShutdownGrace: 200 * time.Millisecond}, handler)
	}()
	if err := b.nc.Publish(SubjectCandidate, []byte("tenant_dev")); err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Consume did not return after shutdown")
	}
	if cancelled.Load() != 1 {
		t.Fatal("in-flight handler was not cancelled after the grace period")
	}
	// The message was handed back: a new consumer loop gets it at once.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	got := make(chan string, 1)
	go func() {
		_ = b.Consume(ctx2, ConsumeOptions{Consumer: ConsumerMarker, FilterSubject: SubjectCandidate},
			func(_ context.Context, d Delivery) (Outcome, error) { got <- string(d.Data); return Outcome{}, nil })
	}()
	select {
	case body := <-got:
		if body != "tenant_dev" {
			t.Fatalf("redelivered %q", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handed-back message was not redelivered")
	}
}

// TestPublishRequestsInBulk publishes more requests than the window, one of
// them for a tenant the marker already answered: every request is published
// once, in order, the new ones are recorded as requested, and the marker's
// later answer is kept. A second call publishes them all again: its message
// ids are its own.
func TestPublishRequestsInBulk(t *testing.T) {
	b := newBus(t)
	ev := watch(t, b)
	ctx := context.Background()
	n := publishWindow + 44
	var reqs []tenant.Request
	for i := range n {
		reqs = append(reqs, tenant.Request{ID: tenant.ID(fmt.Sprintf("tenant_i-%04x", i)), RequestedBy: "analyzer"})
	}
	answered := reqs[7].ID
	b.Report(ctx, tenant.Event{TenantID: answered, Outcome: tenant.OutcomeRefused, Reason: "not gated",
		Time: time.Now().Add(time.Hour)})
	var got []Published
	if err := b.PublishRequests(ctx, reqs, func(p Published) { got = append(got, p) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d acknowledged; want %d", len(got), n)
	}
	for i, p := range got {
		if p.Request.ID != reqs[i].ID || p.Duplicate {
			t.Fatalf("acknowledgement %d: %+v; want %s, not a duplicate, in order", i, p, reqs[i].ID)
		}
	}
	requests := func() uint64 {
		s, err := b.js.Stream(ctx, StreamRequests)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.Msgs
	}
	if got := requests(); got != uint64(n) {
		t.Fatalf("%d messages in %s; want %d", got, StreamRequests, n)
	}
	for i, r := range reqs {
		s, found, err := b.TenantState(ctx, r.ID)
		if err != nil || !found {
			t.Fatalf("state of %s: found %v, %v", r.ID, found, err)
		}
		want := tenant.PhaseRequested
		if r.ID == answered {
			want = tenant.PhaseRefused
		}
		if s.Phase != want || (i != 7 && s.RequestedBy != "analyzer") {
			t.Fatalf("state of %s: %+v; want phase %s", r.ID, s, want)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return len(ev.With(tenant.OutcomeRequested)) == n },
		"%d requested events; want %d", len(ev.With(tenant.OutcomeRequested)), n)

	got = nil
	if err := b.PublishRequests(ctx, reqs, func(p Published) { got = append(got, p) }); err != nil {
		t.Fatal(err)
	}
	for _, p := range got {
		if p.Duplicate {
			t.Fatalf("second call: %s taken for a duplicate of the first call's", p.Request.ID)
		}
	}
	if k := requests(); len(got) != n || k != uint64(2*n) {
		t.Fatalf("second call: %d acknowledged, %d messages in %s; want %d and %d", len(got), k, StreamRequests, n, 2*n)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return len(ev.With(tenant.OutcomeRequested)) == 2*n },
		"%d requested events; want %d", len(ev.With(tenant.OutcomeRequested)), 2*n)
	if s, _, err := b.TenantState(ctx, answered); err != nil || s.Phase != tenant.PhaseRefused {
		t.Fatalf("state of %s after the second call: %+v, %v; want the marker's later answer kept", answered, s, err)
	}
}

// TestPublishRequestsFailure: when the server is gone, the error comes back
// and nothing looks published.
func TestPublishRequestsFailure(t *testing.T) {
	srv := testenv.StartJetStream(t)
	b := connect(t, srv.URL)
	srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	published := 0
	err := b.PublishRequests(ctx, []tenant.Request{{ID: idA}}, func(p Published) { published++ })
	if err == nil || published != 0 {
		t.Fatalf("publish with the server down: %d published, error %v; want an error", published, err)
	}
	if !errors.Is(err, tenant.ErrUnavailable) {
		t.Errorf("error %v is not marked unavailable", err)
	}
}

// Each shard's pacer of a replica reports under a key of its own
// (pace.<replica>.<shard>): shards whose names differ only in characters a
// key cannot hold ("a.b", "a_b", "a b") must not share one, or status shows
// one of them only and their writers delete each other's report (SetPace
// assumes "the replica is the key's only writer").
//
// (sanitizeKey turns every such character into '_': the shard part gets a
// hash of the name when sanitizing changed it.)
func TestPaceReportsOfShardsWithSimilarNamesAreKeptApart(t *testing.T) {
	b := newBus(t)
	ctx := context.Background()
	now := time.Now()
	for _, shard := range []string{"a.b", "a_b"} {
		if err := b.SetPace(ctx, PaceReport{By: "cleaner@host/1", Shard: shard, State: "running", At: now}); err != nil {
			t.Fatal(err)
		}
	}
	paces, err := b.Paces(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	var shards []string
	for _, p := range paces {
		shards = append(shards, p.Shard)
	}
	if len(paces) != 2 {
		t.Fatalf("pace reports of shards a.b and a_b of one replica: %q; want both", shards)
	}
}
