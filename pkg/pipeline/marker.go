package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Marker handles cleanup requests.
type Marker struct {
	Stores
	Rules
	Bus *bus.Bus
	// CheckDelay is DRAIN_CHECK_DELAY: the first drain check after marking.
	CheckDelay time.Duration
	Now        func() time.Time
	// Observe receives measurements (nil: none).
	Observe Observer

	afterStep stepHook
}

// Handle marks one requested tenant: a tenant under an active hold is
// refused as held; otherwise preflight, then the final look atomic with the
// marking: with the control-plane row locked (its status cannot change and
// no hold can be placed meanwhile) and the hold read again under that lock,
// the marking transaction locks the tables it reads, reads the activity and
// applies the rule, cancels the index attempts, sets every
// connector-credential pair DELETING and records the marking (see
// dataplane.Tenant.Mark). Then it schedules the first drain check unless one
// is already pending. Every step is idempotent. A tenant whose schema is gone
// (or whose drop began) has nothing to mark: with evidence that its cleanup
// began, its drain check is scheduled so that the cleaner completes it.
func (m *Marker) Handle(ctx context.Context, d *bus.Delivery) error {
	return m.handle(ctx, d)
}

func (m *Marker) handle(ctx context.Context, d *bus.Delivery) error {
	req, err := tenant.ParseRequest(d.Data)
	if err != nil {
		return err
	}
	id := req.ID
	d.Tenant, d.RequestedBy = id, req.RequestedBy
	now := m.Now()
	if h, held, err := m.Control.ActiveHold(ctx, id, now); err != nil {
		return err
	} else if held {
		return tenant.RefuseHeld(id, h)
	}
	if entry, found, err := m.Control.LedgerEntry(ctx, id); err != nil {
		return err
	} else if found {
		return tenant.Refuse(id, "already cleaned at %s", entry.CleanedAt.UTC().Format(time.RFC3339))
	}
	t, err := m.lockTenant(ctx, id)
	if err != nil {
		return err
	}
	defer t.Release()
	pre, err := timed(m.Observe, "preflight", func() (checked, error) { return m.preflight(ctx, t, id, m.Rules, now, true) })
	if err != nil {
		return err
	}
	if err := m.afterStep.after("preflight"); err != nil {
		return err
	}
	locked, err := m.Control.LockTenant(ctx, id, controlplane.NoKeyUpdate, m.RowLockTimeout, m.Now())
	if err != nil {
		return err
	}
	defer locked.Release()
	// A hold placed since the first look wins: read again under the lock.
	if locked.Hold != nil {
		return tenant.RefuseHeld(id, *locked.Hold)
	}
	var res dataplane.MarkResult
	if pre.snap.SchemaExists {
		res, err = timed(m.Observe, "mark", func() (dataplane.MarkResult, error) {
			return t.Mark(ctx, req.RequestedBy, func(f dataplane.Facts) error {
				return eligible(id, locked.Record, locked.Found, f.Activity, m.Window, m.Now())
			})
		})
	}
	locked.Release()
	// Unlock before scheduling, so that a cleaner that picks the drain check
	// up at once does not find the tenant still locked.
	t.Release()
	if err != nil {
		return err
	}
	if res.SchemaGone { // dropped by someone since preflight: look again
		return tenant.Later(time.Second, "the schema vanished while the tenant was being marked", nil)
	}
	if err := m.afterStep.after("marked"); err != nil {
		return err
	}
	ev := tenant.Event{TenantID: id, Outcome: tenant.OutcomeMarked, RequestedBy: req.RequestedBy,
		Reason: fmt.Sprintf("%d attempts canceled, %d asked to stop, %d of %d pairs set DELETING",
			res.CanceledAttempts, res.StoppingAttempts, res.DeletingPairs, res.Pairs)}
	if !pre.snap.SchemaExists {
		ev.Reason = "an interrupted cleanup, to be completed: " + pre.snap.Record.Evidence()
	}
	pending, err := m.Bus.DrainPending(ctx, id)
	if err != nil {
		return err
	}
	if pending {
		ev.Reason += "; a drain check is already scheduled"
	} else {
		at := now.Add(m.CheckDelay)
		if err := m.Bus.ScheduleDrainCheck(ctx, tenant.DrainCheck{ID: id}, at); err != nil {
			return err
		}
		ev.NextCheckAt = &at
	}
	if err := m.afterStep.after("scheduled"); err != nil {
		return err
	}
	m.Bus.Report(ctx, ev)
	return m.afterStep.after("reported")
}
