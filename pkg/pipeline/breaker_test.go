package pipeline

import (
	"errors"
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	b := &Breaker{Window: 10, MinFailures: 3, Rate: 0.5, Cooldown: time.Minute}
	fail := errors.New("drop failed")
	for range 5 {
		b.Record(now, nil)
	}
	b.Record(now, fail)
	b.Record(now, fail)
	if ok, _, _ := b.Allow(now); !ok {
		t.Fatal("open after 2 failures of 7; want closed (below MinFailures)")
	}
	b.Record(now, fail) // 3 of 8: below the rate
	if ok, _, _ := b.Allow(now); !ok {
		t.Fatal("open at 3 of 8 failures; want closed (below Rate)")
	}
	b.Record(now, fail)
	b.Record(now, fail) // 5 of 10
	ok, until, reason := b.Allow(now)
	if ok || !until.Equal(now.Add(time.Minute)) || reason == "" {
		t.Fatalf("after 5 of 10 failed: ok=%v until=%s reason=%q; want open for the cooldown", ok, until, reason)
	}
	// Half-open after the cooldown: one probe; while it runs, nothing else.
	later := now.Add(2 * time.Minute)
	if ok, _, _ := b.Allow(later); !ok {
		t.Fatal("no probe after the cooldown")
	}
	if ok, _, _ := b.Allow(later); ok {
		t.Fatal("a second cleanup let through while probing")
	}
	b.Record(later, fail) // the probe failed: open again
	if ok, _, _ := b.Allow(later.Add(30 * time.Second)); ok {
		t.Fatal("closed after a failed probe")
	}
	evenLater := later.Add(2 * time.Minute)
	if ok, _, _ := b.Allow(evenLater); !ok {
		t.Fatal("no second probe")
	}
	b.Record(evenLater, nil)
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
