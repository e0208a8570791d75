package pipeline

import (
	"fmt"
	"sync"
	"time"
)

// Breaker pauses one replica's cleaning when too many of its recent
// cleanups failed: a systemic problem (a database misbehaving, a bug) then
// stops after a handful of tenants instead of running through the backlog.
// While open, drained tenants wait (their drain checks are retried when it
// closes); after Cooldown one cleanup is let through, and its result closes
// or reopens the breaker.
type Breaker struct {
	// Window is how many recent cleanups are looked at; MinFailures and Rate
	// (failures / cleanups in the window) must both be reached to open.
	Window      int
	MinFailures int
	Rate        float64
	Cooldown    time.Duration

	mu        sync.Mutex
	results   []bool // true = failed, newest last
	openUntil time.Time
	probing   bool
	lastErr   string
}

// Allow reports whether a cleanup may start now; if not, until when the
// breaker stays open and why.
func (b *Breaker) Allow(now time.Time) (ok bool, until time.Time, reason string) {
	if b == nil {
		return true, time.Time{}, ""
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openUntil.IsZero() {
		return true, time.Time{}, ""
	}
	if now.Before(b.openUntil) || b.probing {
		return false, b.openUntil, b.reason()
	}
	b.probing = true // half-open: one cleanup decides
	return true, time.Time{}, ""
}

// Record adds the result of a cleanup that Allow let through.
func (b *Breaker) Record(now time.Time, err error) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	failed := err != nil
	if failed {
		b.lastErr = err.Error()
	}
	if b.probing {
		b.probing = false
		if failed {
			b.openUntil = now.Add(b.Cooldown)
		} else {
			b.openUntil, b.results = time.Time{}, nil
		}
		return
	}
	b.results = append(b.results, failed)
	if len(b.results) > b.Window {
		b.results = b.results[len(b.results)-b.Window:]
	}
	failures := 0
	for _, f := range b.results {
		if f {
			failures++
		}
	}
	if failures >= b.MinFailures && float64(failures) >= b.Rate*float64(len(b.results)) {
		b.openUntil = now.Add(b.Cooldown)
	}
}

// Skip ends an attempt that Allow let through but that neither succeeded nor
// failed (a refusal, a "later"): it counts for nothing.
func (b *Breaker) Skip() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

func (b *Breaker) reason() string {
	failures := 0
	for _, f := range b.results {
		if f {
			failures++
		}
	}
	return fmt.Sprintf("circuit breaker open: %d of the last %d cleanups failed (last error: %s)",
		failures, len(b.results), b.lastErr)
}
