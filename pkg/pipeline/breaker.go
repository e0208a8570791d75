package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Breaker pauses one replica's cleaning when too many distinct tenants among
// its recent cleanups failed: a systemic problem (a database misbehaving, a
// bug) then stops after a handful of tenants instead of running through the
// backlog, while one poison tenant failing again and again counts once and
// pauses nobody (its message is dead-lettered after DEAD_LETTER_AFTER
// failures).
// While open, drained tenants wait (their drain checks are retried when it
// closes); after Cooldown one cleanup is let through, and its result closes
// or reopens the breaker.
type Breaker struct {
	// Window is how many recent tenants are looked at (each with the result
	// of its latest cleanup); MinFailures failing tenants and Rate (failing
	// tenants / tenants in the window) must both be reached to open.
	Window      int
	MinFailures int
	Rate        float64
	Cooldown    time.Duration

	mu        sync.Mutex
	results   []result // one per tenant, newest last
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

// result is the latest cleanup of one tenant.
type result struct {
	id     tenant.ID
	failed bool
}

// Record adds the result of a cleanup of tenant id that Allow let through; it
// replaces that tenant's earlier result.
func (b *Breaker) Record(now time.Time, id tenant.ID, err error) {
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
	b.results = slices.DeleteFunc(b.results, func(r result) bool { return r.id == id })
	b.results = append(b.results, result{id: id, failed: failed})
	if len(b.results) > b.Window {
		b.results = b.results[len(b.results)-b.Window:]
	}
	failures := b.failures()
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

func (b *Breaker) failures() int {
	n := 0
	for _, r := range b.results {
		if r.failed {
			n++
		}
	}
	return n
}

func (b *Breaker) reason() string {
	return fmt.Sprintf("circuit breaker open: the latest cleanup of %d of the last %d tenants failed (last error: %s)",
		b.failures(), len(b.results), b.lastErr)
}

// Middleware wraps the cleaner's handler: while the breaker is open, a drain
// check is handed back until it closes (outcome paused, the pause recorded
// under by for status) without being looked at. It records each cleanup: a
// tenant reported cleaned succeeded, a plain failure failed; refusals,
// "later", unavailable dependencies and checks of tenants not drained yet
// count for nothing.
func (b *Breaker) Middleware(by string, now func() time.Time) bus.Middleware {
	return func(next bus.Handler) bus.Handler {
		return func(ctx context.Context, d bus.Delivery) (bus.Outcome, error) {
			if ok, until, reason := b.Allow(now()); !ok {
				dc, err := tenant.ParseDrainCheck(d.Data)
				if err != nil {
					return bus.Outcome{}, err
				}
				return Waiting(bus.Outcome{Tenant: dc.ID}, tenant.OutcomePaused, by, by, until, reason)
			}
			out, err := next(ctx, d)
			switch {
			case err == nil && slices.ContainsFunc(out.Events, func(e tenant.Event) bool { return e.Outcome == tenant.OutcomeCleaned }):
				b.Record(now(), out.Tenant, nil)
			case err != nil && !errors.Is(err, tenant.ErrRefused) && !errors.Is(err, tenant.ErrLater) &&
				!errors.Is(err, tenant.ErrUnavailable) && !errors.Is(err, tenant.ErrInvalidID):
				b.Record(now(), out.Tenant, err)
			default:
				b.Skip()
			}
			return out, err
		}
	}
}
