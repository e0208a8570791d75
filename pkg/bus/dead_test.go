package bus

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

func TestPoisonMessageIsDeadLetteredAndReplayed(t *testing.T) {
	b := newBus(t)
	ev := watch(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var (
		calls  counts
		broken atomic.Bool
	)
	broken.Store(true)
	handler := func(_ context.Context, d Delivery) (Outcome, error) {
		var out Outcome
		req, err := tenant.ParseRequest(d.Data)
		if err != nil {
			return out, err
		}
		out.Tenant = req.ID
		n := calls.add(string(req.ID))
		switch req.ID {
		case "tenant_i-0bad":
			if broken.Load() {
				return out, errors.New("relation \"x\" does not exist")
			}
		case "tenant_i-0ff1": // down for longer than MaxFailures deliveries, then fine
			if n <= 3 {
				return out, tenant.Unavailable(errors.New("connection refused"))
			}
		}
		return out, nil
	}
	go func() {
		_ = b.Consume(ctx, ConsumeOptions{Consumer: ConsumerMarker, FilterSubject: SubjectCandidate, MaxFailures: 3}, handler)
	}()
	for _, id := range []tenant.ID{"tenant_i-0bad", "tenant_i-0ff1"} {
		if err := b.PublishRequest(context.Background(), tenant.Request{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(ev.With(tenant.OutcomeDead)) == 1 }, "poison message dead-lettered")
	if n := calls.get("tenant_i-0bad"); n != 3 {
		t.Errorf("poison message handled %d times; want MaxFailures = 3", n)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return calls.get("tenant_i-0ff1") == 4 },
		"unavailable dependency retried until it came back")
	dead, err := b.DeadLetters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].Tenant != "tenant_i-0bad" || dead[0].Subject != SubjectCandidate ||
		dead[0].Failures != 3 || !strings.Contains(dead[0].Reason, `relation "x" does not exist`) {
		t.Fatalf("dead letters %+v; want only tenant_i-0bad with its reason (unavailable errors never count)", dead)
	}
	state, found, err := b.TenantState(context.Background(), "tenant_i-0bad")
	if err != nil || !found || state.Phase != tenant.PhaseDead {
		t.Fatalf("state of the dead-lettered tenant = %+v, %v, %v", state, found, err)
	}

	// Replay after the fix: processed, and gone from the dead-letter stream.
	broken.Store(false)
	if _, err := b.Replay(context.Background(), dead[0].Seq); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return calls.get("tenant_i-0bad") == 4 }, "replayed message processed")
	if dead, err := b.DeadLetters(context.Background()); err != nil || len(dead) != 0 {
		t.Fatalf("dead letters after replay: %+v, %v", dead, err)
	}
}

func TestStateFollowsReports(t *testing.T) {
	b := newBus(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	next := now.Add(time.Hour)
	docs := int64(12)
	for _, ev := range []tenant.Event{
		{TenantID: idA, Outcome: tenant.OutcomeRequested, RequestedBy: "ops", Time: now},
		{TenantID: idA, Outcome: tenant.OutcomeMarked, Time: now.Add(time.Second), MarkedAt: &now, NextCheckAt: &next},
		{TenantID: idA, Outcome: tenant.OutcomeRequested, RequestedBy: "analyzer", Time: now.Add(2 * time.Second)},
		{TenantID: idA, Outcome: tenant.OutcomeDraining, Time: now.Add(3 * time.Second), DocumentsLeft: &docs, NextCheckAt: &next},
	} {
		b.Report(ctx, ev)
	}
	s, found, err := b.TenantState(ctx, idA)
	if err != nil || !found {
		t.Fatal(found, err)
	}
	if s.Phase != tenant.PhaseDraining || s.RequestedBy != "ops" || s.DocumentsLeft == nil || *s.DocumentsLeft != 12 ||
		!s.Since.Equal(now.Add(3*time.Second)) || s.MarkedAt == nil || !s.MarkedAt.Equal(now) {
		t.Fatalf("state = %+v", s)
	}
	b.Report(ctx, tenant.Event{TenantID: idA, Outcome: tenant.OutcomeCleaned, Time: now.Add(4 * time.Second)})
	b.Report(ctx, tenant.Event{TenantID: idA, Outcome: tenant.OutcomeRefused, Reason: "already cleaned", Time: now.Add(5 * time.Second)})
	s, _, _ = b.TenantState(ctx, idA)
	if s.Phase != tenant.PhaseCleaned || s.CleanedAt == nil {
		t.Fatalf("a cleaned tenant left the cleaned phase: %+v", s)
	}
	all, err := b.States(ctx)
	if err != nil || len(all) != 1 {
		t.Fatalf("states = %+v, %v", all, err)
	}
}

func TestPauses(t *testing.T) {
	b := newBus(t)
	ctx := context.Background()
	now := time.Now()
	past := now.Add(-time.Minute)
	if err := b.SetPause(ctx, "cleaner@host/1", tenant.Pause{Kind: "paused", Reason: "breaker", Until: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetPause(ctx, "cap", tenant.Pause{Kind: "capped", Reason: "old", Until: past}); err != nil {
		t.Fatal(err)
	}
	if p, err := b.Pauses(ctx, now); err != nil || len(p) != 1 || p[0].Kind != "paused" {
		t.Fatalf("pauses = %+v, %v", p, err)
	}
}
