package pipeline

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

func id(kind string, n int) tenant.ID { return tenant.ID(fmt.Sprintf("tenant_i-%s%02x", kind, n)) }

func TestBreaker(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	b := &Breaker{Window: 10, MinFailures: 3, Rate: 0.5, Cooldown: time.Minute}
	fail := errors.New("drop failed")
	for i := range 5 {
		b.Record(now, id("a", i), nil)
	}
	b.Record(now, id("b", 1), fail)
	b.Record(now, id("b", 2), fail)
	if ok, _, _ := b.Allow(now); !ok {
		t.Fatal("open after 2 failing tenants of 7; want closed (below MinFailures)")
	}
	b.Record(now, id("b", 3), fail) // 3 of 8: below the rate
	if ok, _, _ := b.Allow(now); !ok {
		t.Fatal("open at 3 of 8 failing tenants; want closed (below Rate)")
	}
	b.Record(now, id("b", 4), fail)
	b.Record(now, id("b", 5), fail) // 5 of 10
	ok, until, reason := b.Allow(now)
	if ok || !until.Equal(now.Add(time.Minute)) || reason == "" {
		t.Fatalf("after 5 of 10 tenants failed: ok=%v until=%s reason=%q; want open for the cooldown", ok, until, reason)
	}
	// Half-open after the cooldown: one probe; while it runs, nothing else.
	later := now.Add(2 * time.Minute)
	if ok, _, _ := b.Allow(later); !ok {
		t.Fatal("no probe after the cooldown")
	}
	if ok, _, _ := b.Allow(later); ok {
		t.Fatal("a second cleanup let through while probing")
	}
	b.Record(later, id("b", 6), fail) // the probe failed: open again
	if ok, _, _ := b.Allow(later.Add(30 * time.Second)); ok {
		t.Fatal("closed after a failed probe")
	}
	evenLater := later.Add(2 * time.Minute)
	if ok, _, _ := b.Allow(evenLater); !ok {
		t.Fatal("no second probe")
	}
	b.Record(evenLater, id("a", 9), nil)
	for range 3 {
		if ok, _, _ := b.Allow(evenLater); !ok {
			t.Fatal("open after a successful probe")
		}
	}
	var nilBreaker *Breaker
	if ok, _, _ := nilBreaker.Allow(now); !ok {
		t.Fatal("a nil breaker must allow everything")
	}
}

// One poison tenant failing again and again counts once: it never pauses
// the cleaning of the others.
func TestBreakerCountsTenantsNotAttempts(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	b := &Breaker{Window: 20, MinFailures: 5, Rate: 0.5, Cooldown: time.Minute}
	poison := id("f", 1)
	for range 50 {
		b.Record(now, poison, errors.New("relation does not exist"))
	}
	if ok, _, reason := b.Allow(now); !ok {
		t.Fatalf("one tenant failing 50 times opened the breaker: %s", reason)
	}
	// A tenant that failed and then succeeded counts as succeeded.
	for i := range 4 {
		b.Record(now, id("c", i), errors.New("boom"))
		b.Record(now, id("c", i), nil)
	}
	if ok, _, _ := b.Allow(now); !ok {
		t.Fatal("tenants whose latest cleanup succeeded opened the breaker")
	}
}
