package bus

import (
	"context"
	"errors"
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

// events collects every event published from now on.
type events struct {
	mu  sync.Mutex
	all []tenant.Event
}

func watch(t *testing.T, b *Bus) *events {
	t.Helper()
	e := &events{}
	stop, err := b.WatchEvents(context.Background(), time.Time{}, func(ev tenant.Event) {
		e.mu.Lock()
		e.all = append(e.all, ev)
		e.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return e
}

func (e *events) find(o tenant.Outcome) []tenant.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []tenant.Event
	for _, ev := range e.all {
		if ev.Outcome == o {
			out = append(out, ev)
		}
	}
	return out
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
	srv := testenv.StartJetStream(t)
	b := connect(t, srv.URL)
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
	srv := testenv.StartJetStream(t)
	b := connect(t, srv.URL)
	ev := watch(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var (
		mu    sync.Mutex
		seen  = map[string]int{}
		later atomic.Bool
	)
	handler := func(ctx context.Context, d Delivery) (Outcome, error) {
		var out Outcome
		req, err := tenant.ParseRequest(d.Data)
		mu.Lock()
		seen[string(d.Data)]++
		n := seen[string(d.Data)]
		mu.Unlock()
		if err != nil {
			return out, err
		}
		out.Tenant = req.ID
		switch req.ID {
		case "tenant_i-01": // refused
			return out, tenant.Refuse(req.ID, "not gated")
		case "tenant_i-02": // later, once
			if n == 1 {
				later.Store(true)
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
	count := func(body string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[body]
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		return count("tenant_i-02") == 2 && count("tenant_i-03") == 2 && count("tenant_i-04") == 2 && count("tenant_i-05") == 1
	}, "retried messages redelivered once")
	testenv.Eventually(t, 5*time.Second, func() bool { return len(ev.find(tenant.OutcomeRefused)) == 3 }, "three refused events")
	for _, body := range []string{"tenant_i-01", "public", "tenant_i-05"} {
		if n := count(body); n != 1 {
			t.Errorf("%s delivered %d times; want once (acked or terminated)", body, n)
		}
	}
	var inputs []string
	for _, e := range ev.find(tenant.OutcomeRefused) {
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
	srv := testenv.StartJetStream(t)
	b := connect(t, srv.URL)
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
	srv := testenv.StartJetStream(t)
	b := connect(t, srv.URL)
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
