package bus

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Delivery is one message handed to a Handler.
type Delivery struct {
	Subject      string
	Data         []byte
	NumDelivered uint64
}

// Handler handles one delivery and says what came of it. Its error decides
// what happens to the message: nil acknowledges it; a tenant.RefusedError or
// tenant.ErrInvalidID terminates it (never retried) and reports it refused
// (or held); a tenant.LaterError redelivers it after the delay it names; a
// tenant.ErrUnavailable error redelivers it with a short backoff; any other
// error redelivers it with backoff until it has failed MaxFailures times,
// then moves it to the dead-letter stream. A handler never acknowledges,
// publishes, reports or sleeps by itself: the consume loop carries out its
// Outcome (Perform).
type Handler func(ctx context.Context, d Delivery) (Outcome, error)

// Middleware wraps a Handler (recovery, timing, a circuit breaker).
type Middleware func(Handler) Handler

// Chain wraps h in the middleware, the first one outermost.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// Outcome is what a handler made of a delivery, for the consume loop to
// carry out: the drain checks to schedule, then the pause to record, then
// the events to report; and who it was about, for the loop's log lines.
type Outcome struct {
	// Tenant and RequestedBy say whom the message was about, as soon as the
	// handler knew.
	Tenant      tenant.ID
	RequestedBy string
	// Schedule are drain checks to schedule, before anything is reported or
	// the message acknowledged.
	Schedule []Scheduled
	// Pause, when set, is recorded for tenantctl status.
	Pause *Pause
	// Events are reported (logged, recorded in the tenant's state,
	// published) last.
	Events []tenant.Event
}

// Scheduled is a drain check due at a time.
type Scheduled struct {
	Check tenant.DrainCheck
	At    time.Time
}

// Pause is a pause of cleaning (a reached cap, an open circuit breaker),
// named after what paused it.
type Pause struct {
	Name string
	tenant.Pause
}

// Recover turns a panic of the handler into an error (which counts as a
// failure of the message).
func Recover(next Handler) Handler {
	return func(ctx context.Context, d Delivery) (out Outcome, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("handler panic: %v\n%s", r, debug.Stack())
			}
		}()
		return next(ctx, d)
	}
}

// Perform carries out what a handler said, except the acknowledgement: for
// success and "later" it schedules the drain checks, records the pause and
// reports the events; for a refusal it reports the refusal. It returns an
// error when a schedule could not be published (the message must then be
// delivered again: nothing was reported).
func (b *Bus) Perform(ctx context.Context, d Delivery, out Outcome, err error) error {
	var refused *tenant.RefusedError
	switch {
	case err == nil || errors.Is(err, tenant.ErrLater):
		for _, s := range out.Schedule {
			if err := b.ScheduleDrainCheck(ctx, s.Check, s.At); err != nil {
				return err
			}
		}
		if out.Pause != nil {
			if err := b.SetPause(ctx, out.Pause.Name, out.Pause.Pause); err != nil {
				b.log.Error("record pause", "tenant_id", out.Tenant, "error", err)
			}
		}
		for _, ev := range out.Events {
			b.Report(ctx, ev)
		}
	case errors.As(err, &refused):
		outcome := refused.Outcome
		if outcome == "" {
			outcome = tenant.OutcomeRefused
		}
		b.Report(ctx, tenant.Event{TenantID: refused.ID, Outcome: outcome, Reason: refused.Reason, RequestedBy: out.RequestedBy})
	case errors.Is(err, tenant.ErrInvalidID):
		b.Report(ctx, tenant.Event{Input: tenant.QuoteInput(string(d.Data)), Outcome: tenant.OutcomeRefused, Reason: err.Error()})
	}
	return nil
}
