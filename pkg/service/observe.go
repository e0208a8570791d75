package service

import (
	"context"
	"errors"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/metrics"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// measured times every handling as step (mark, drain_check) and, for the
// cleaner (drainChecks), counts drain checks by result from what the handler
// made of them; a cleaned tenant's handling is also timed as step cleanup.
func measured(m *metrics.Metrics, step string, drainChecks bool) bus.Middleware {
	return func(next bus.Handler) bus.Handler {
		return func(ctx context.Context, d bus.Delivery) (bus.Outcome, error) {
			start := time.Now()
			out, err := next(ctx, d)
			took := time.Since(start)
			m.ObserveStep(step, took)
			if hasOutcome(out, tenant.OutcomeCleaned) && err == nil {
				m.ObserveStep("cleanup", took)
			}
			if drainChecks {
				if result := drainResult(out, err); result != "" {
					m.DrainCheck(result)
				}
			}
			return out, err
		}
	}
}

// drainResult is the metrics result of a drain check ("" when it was not
// looked at: held, paused, later, a dependency unavailable).
func drainResult(out bus.Outcome, err error) string {
	switch {
	case errors.Is(err, tenant.ErrRefused) || errors.Is(err, tenant.ErrInvalidID):
		return "refused"
	case hasOutcome(out, tenant.OutcomeCleaned) || hasOutcome(out, tenant.OutcomeCapped):
		return "drained"
	case hasOutcome(out, tenant.OutcomeStuck):
		return "stuck"
	case hasOutcome(out, tenant.OutcomeDraining):
		return "not_drained"
	case err != nil && !errors.Is(err, tenant.ErrLater) && !errors.Is(err, tenant.ErrUnavailable):
		return "error"
	}
	return ""
}

func hasOutcome(out bus.Outcome, o tenant.Outcome) bool {
	for _, ev := range out.Events {
		if ev.Outcome == o {
			return true
		}
	}
	return false
}

// storeMetrics counts what the cleaner removed from each store, and its
// failed attempts.
func storeMetrics(m *metrics.Metrics) func(store string, removed map[string]int64, err error) {
	return func(store string, removed map[string]int64, err error) {
		for unit, n := range removed {
			m.StoreRemoved(store, unit, n)
		}
		if err != nil {
			m.StoreFailed(store)
		}
	}
}
