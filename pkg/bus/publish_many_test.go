package bus

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// TestPublishRequestsInBulk publishes more requests than the window, one of
// them for a tenant the marker already answered: every request is published
// once, in order, the new ones are recorded as requested, and the marker's
// later answer is kept. A second call publishes them all again: its message
// ids are its own.
func TestPublishRequestsInBulk(t *testing.T) {
	srv := testenv.StartJetStream(t)
	b := connect(t, srv.URL)
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
	testenv.Eventually(t, 5*time.Second, func() bool { return len(ev.find(tenant.OutcomeRequested)) == n },
		"%d requested events; want %d", len(ev.find(tenant.OutcomeRequested)), n)

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
	testenv.Eventually(t, 5*time.Second, func() bool { return len(ev.find(tenant.OutcomeRequested)) == 2*n },
		"%d requested events; want %d", len(ev.find(tenant.OutcomeRequested)), 2*n)
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
