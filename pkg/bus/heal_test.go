package bus

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// consumed runs a marker consume loop on b (handling concurrency messages at
// once) until the test ends and returns the tenants it handled so far.
func consumed(t *testing.T, b *Bus, concurrency int) func() []tenant.ID {
	t.Helper()
	var (
		mu   sync.Mutex
		seen []tenant.ID
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(ctx, ConsumeOptions{Consumer: ConsumerMarker, FilterSubject: SubjectCandidate, Concurrency: concurrency},
			func(_ context.Context, d Delivery) (Outcome, error) {
				var out Outcome
				req, err := tenant.ParseRequest(d.Data)
				if err != nil {
					return out, err
				}
				mu.Lock()
				seen = append(seen, req.ID)
				mu.Unlock()
				return out, nil
			})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Consume returned %v", err)
		}
	})
	return func() []tenant.ID {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// requestHandled publishes a request for id (raw, as an operator would) and
// waits until the loop handled it.
func requestHandled(t *testing.T, b *Bus, seen func() []tenant.ID, id tenant.ID, what string) {
	t.Helper()
	// Published until stored: right after a stream vanished, nothing may
	// store it yet.
	testenv.Eventually(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := b.JetStream().Publish(ctx, SubjectCandidate, []byte(id))
		if err != nil {
			t.Logf("publish %s: %v", id, err)
		}
		return err == nil
	}, "request for %s stored (%s)", id, what)
	testenv.Eventually(t, 10*time.Second, func() bool { return slices.Contains(seen(), id) }, "%s handled (%s)", id, what)
}

// TestConsumeRecreatesWhatVanished deletes, while a consume loop runs, its
// consumer, then its stream, then every stream and bucket: each time the
// loop recreates what it needs and handles a new request within seconds, and
// Recreated fires when a stream was recreated.
func TestConsumeRecreatesWhatVanished(t *testing.T) {
	b := newBus(t)
	js := b.JetStream()
	ctx := context.Background()
	seen := consumed(t, b, 2)
	testenv.Eventually(t, 10*time.Second, func() bool { return b.Ready() == nil }, "ready")
	requestHandled(t, b, seen, "tenant_i-01", "at the start")

	recreated := b.Recreated()
	if err := js.DeleteConsumer(ctx, StreamRequests, ConsumerMarker); err != nil {
		t.Fatal(err)
	}
	requestHandled(t, b, seen, "tenant_i-02", "consumer deleted")
	select {
	case <-recreated:
		t.Fatal("Recreated fired for a consumer: nothing it held was lost")
	default:
	}

	if err := js.DeleteStream(ctx, StreamRequests); err != nil {
		t.Fatal(err)
	}
	requestHandled(t, b, seen, "tenant_i-03", "requests stream deleted")
	select {
	case <-recreated:
	case <-time.After(5 * time.Second):
		t.Fatal("Recreated did not fire after the requests stream was recreated")
	}

	// Everything at once, as when JetStream lost its store.
	recreated = b.Recreated()
	for _, name := range []string{StreamRequests, StreamWork, StreamEvents, StreamDead, "KV_" + BucketState, "KV_" + bucketFailures} {
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	requestHandled(t, b, seen, "tenant_i-04", "every stream and bucket deleted")
	<-recreated
	testenv.Eventually(t, 10*time.Second, func() bool {
		names := js.StreamNames(ctx)
		n := 0
		for range names.Name() {
			n++
		}
		return names.Err() == nil && n == 6
	}, "the four streams and two buckets back")
	testenv.Eventually(t, 5*time.Second, func() bool { return b.Ready() == nil }, "ready again")
}

// TestNotReadyWhileTheStreamCannotBeRecreated: a stream that takes the
// public subject under another name keeps the requests stream from being
// recreated; the loop says it cannot consume until it is gone, then resumes.
func TestNotReadyWhileTheStreamCannotBeRecreated(t *testing.T) {
	b := newBus(t)
	js := b.JetStream()
	ctx := context.Background()
	seen := consumed(t, b, 2)
	requestHandled(t, b, seen, "tenant_i-01", "at the start")
	squat(t, js)
	testenv.Eventually(t, 10*time.Second, func() bool { return b.Ready() != nil }, "not ready without its stream")
	t.Logf("not ready: %v", b.Ready())
	if err := js.DeleteStream(ctx, "SQUATTER"); err != nil {
		t.Fatal(err)
	}
	requestHandled(t, b, seen, "tenant_i-02", "squatter gone")
	testenv.Eventually(t, 5*time.Second, func() bool { return b.Ready() == nil }, "ready again")
}

// squat gives the public subject to a stream SQUATTER and then deletes the
// requests stream, which can then not be recreated until SQUATTER is gone.
func squat(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Subjects = []string{"squatted"}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SQUATTER", Subjects: []string{SubjectCandidate}}); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, StreamRequests); err != nil {
		t.Fatal(err)
	}
}

// TestCallsRecreateWhatTheyNeed: a publish, a KV read or write and a stream
// read whose stream or bucket is gone recreate it and succeed.
func TestCallsRecreateWhatTheyNeed(t *testing.T) {
	b := newBus(t)
	js := b.JetStream()
	ctx := context.Background()
	drop := func(name string) {
		t.Helper()
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Fatal(err)
		}
	}

	drop(StreamWork)
	if err := b.ScheduleDrainCheck(ctx, tenant.DrainCheck{ID: idA}, time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("schedule with the work stream gone: %v", err)
	}
	if pending, err := b.DrainPending(ctx, idA); err != nil || !pending {
		t.Fatalf("pending = %v, %v", pending, err)
	}
	drop(StreamWork)
	if pending, err := b.DrainPending(ctx, idA); err != nil || pending {
		t.Fatalf("pending with the work stream gone = %v, %v; want false (it was lost)", pending, err)
	}

	drop(StreamRequests)
	if err := b.PublishRequest(ctx, tenant.Request{ID: idA}); err != nil {
		t.Fatalf("request with the requests stream gone: %v", err)
	}
	drop(StreamRequests)
	var got []Published
	if err := b.PublishRequests(ctx, []tenant.Request{{ID: idA}, {ID: idB}}, func(p Published) { got = append(got, p) }); err != nil {
		t.Fatalf("requests with the requests stream gone: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("%d of 2 requests acknowledged", len(got))
	}

	drop("KV_" + BucketState)
	if _, _, err := b.TenantState(ctx, idA); err != nil {
		t.Fatalf("read with the state bucket gone: %v", err)
	}
	drop("KV_" + BucketState)
	b.Report(ctx, tenant.Event{TenantID: idA, Outcome: tenant.OutcomeMarked}) // state and event
	if s, found, err := b.TenantState(ctx, idA); err != nil || !found || s.Phase != tenant.PhaseMarked {
		t.Fatalf("state recorded with the bucket gone: %+v, %v, %v", s, found, err)
	}
	drop("KV_" + BucketState)
	if err := b.SetPause(ctx, "cap", tenant.Pause{Kind: "capped", Reason: "cap", Until: time.Now().Add(time.Minute)}); err != nil {
		t.Fatalf("pause with the state bucket gone: %v", err)
	}
	drop("KV_" + BucketState)
	if _, err := b.States(ctx); err != nil {
		t.Fatalf("list states with the bucket gone: %v", err)
	}

	drop(StreamEvents)
	ev := watch(t, b)
	b.Report(ctx, tenant.Event{TenantID: idA, Outcome: tenant.OutcomeDraining})
	testenv.Eventually(t, 5*time.Second, func() bool { return len(ev.With(tenant.OutcomeDraining)) == 1 }, "event published")

	drop(StreamDead)
	if dead, err := b.DeadLetters(ctx); err != nil || len(dead) != 0 {
		t.Fatalf("dead letters with the stream gone: %v, %v", dead, err)
	}
}
