package pipeline

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/pacer"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// fakePacer admits or not, and records what the cleaner told it.
type fakePacer struct {
	mu       sync.Mutex
	admit    bool
	acquired int
	released []pacer.Outcome
	observed []time.Duration
	// waits are how long each Acquire could have waited (its context's deadline).
	waits []time.Duration
}

func (p *fakePacer) Acquire(ctx context.Context) (func(pacer.Outcome), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		p.waits = append(p.waits, time.Until(d))
	}
	if !p.admit {
		return nil, &pacer.WaitError{State: p.state(), Err: context.DeadlineExceeded}
	}
	p.acquired++
	return func(o pacer.Outcome) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.released = append(p.released, o)
	}, nil
}

func (p *fakePacer) Observe(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.observed = append(p.observed, d)
}

func (p *fakePacer) State() pacer.State { return p.state() }

func (p *fakePacer) state() pacer.State {
	return pacer.State{Throttle: pacer.Paused, Reason: "probe 9 ms is 9× its 1 ms baseline (critical 5×)"}
}

// A drained tenant waits while the pacer admits no drop: its drain check is
// handed back (paused, with the pacer's reason), nothing changes, and it is
// not stuck. Once admitted, the drop reports its COMMITs to the pacer and
// releases what it acquired, once.
func TestCleanerWaitsForThePacer(t *testing.T) {
	e := setup(t)
	e.markedAndDrained(t, idA)
	p := &fakePacer{}
	e.cleaner.Pacers = map[string]Pacer{e.cleaner.catalogName(): p}
	before := e.State(idA)
	err := e.check(t, tenant.DrainCheck{ID: idA})
	var later *tenant.LaterError
	if !errors.As(err, &later) || !strings.Contains(later.Reason, "paced by the data plane's load: probe 9 ms") {
		t.Fatalf("drain check while paced: %v; want later, with the pacer's reason", err)
	}
	if e.State(idA) != before {
		t.Fatal("a paced cleaner changed the tenant")
	}
	e.waitOutcome(t, idA, tenant.OutcomePaused)
	p.admit = true
	// The pacer counts the drop, not the steps after it (the other stores,
	// the public rows, the control plane's commit).
	releasedBefore := -1
	e.cleaner.afterStep = func(step string) error {
		if step == "public-rows-deleted" {
			p.mu.Lock()
			releasedBefore = len(p.released)
			p.mu.Unlock()
		}
		return nil
	}
	if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	e.cleaner.afterStep = nil
	e.AssertCleaned(idA)
	if releasedBefore != 1 {
		t.Fatalf("the pacer was released %d times before the public rows were deleted, want once (right after the drop)", releasedBefore)
	}
	if p.acquired != 1 || len(p.released) != 1 || p.released[0].Commit <= 0 || len(p.observed) == 0 {
		t.Fatalf("acquired %d, released %v, observed %v; want one drop with its COMMITs reported", p.acquired, p.released, p.observed)
	}
}

// Each shard is paced by its own pacer: a tenant whose schema lives on a
// paused shard waits, naming that shard, while the catalog's pacer is not
// asked; once that shard's pacer admits it, its drop reports its COMMITs
// there and nowhere else.
func TestEachShardIsPacedByItsOwnPacer(t *testing.T) {
	w := setupShards(t, []string{"b"})
	w.onShard(t, idA, "b", "b", 200)
	if err := w.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	w.drainOn(t, idA, "b")
	catalog, b := &fakePacer{admit: true}, &fakePacer{}
	w.cleaner.Pacers = map[string]Pacer{"default": catalog, "b": b}
	err := w.check(t, tenant.DrainCheck{ID: idA})
	var later *tenant.LaterError
	if !errors.As(err, &later) || !strings.Contains(later.Reason, "paced by the load of shard b: probe 9 ms") {
		t.Fatalf("drain check while shard b is paused: %v; want later, naming shard b", err)
	}
	if !w.schemaOn(t, idA, "b") {
		t.Fatal("a paced cleaner dropped the schema")
	}
	// The worker is given back soon, for the other shards' tenants.
	if len(b.waits) != 1 || b.waits[0] > shardPaceWait {
		t.Fatalf("waited for shard b's pacer up to %v, want at most %v in a sharded fleet", b.waits, shardPaceWait)
	}
	b.admit = true
	if err := w.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	w.waitOutcome(t, idA, tenant.OutcomeCleaned)
	if b.acquired != 1 || len(b.released) != 1 || b.released[0].Commit <= 0 || len(b.observed) == 0 {
		t.Fatalf("shard b's pacer: acquired %d, released %v, observed %v; want the drop with its COMMITs", b.acquired, b.released, b.observed)
	}
	if catalog.acquired != 0 || len(catalog.observed) != 0 {
		t.Fatalf("the catalog's pacer was asked (acquired %d, observed %v) for a tenant with no schema there", catalog.acquired, catalog.observed)
	}
}
