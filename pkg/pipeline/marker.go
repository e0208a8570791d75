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
// refused as held; otherwise preflight, then (with the control-plane
// row share-locked so its status cannot change meanwhile, and the activity
// read again inside the marking transaction) cancel its index attempts and
// set every connector-credential pair DELETING, then schedule its first
// drain check unless one is already pending. Every step is idempotent.
func (m *Marker) Handle(ctx context.Context, d *bus.Delivery) error {
	return classify(m.handle(ctx, d))
}

func (m *Marker) handle(ctx context.Context, d *bus.Delivery) error {
	req, err := tenant.ParseRequest(d.Data)
	if err != nil {
		return err
	}
	id := req.ID
	d.Tenant, d.RequestedBy = id, req.RequestedBy
	now := m.Now()

	if h, held, err := m.Bus.ActiveHold(ctx, id, now); err != nil {
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

	held, err := m.Control.Hold(ctx, id, controlplane.Share, m.RowLockTimeout)
	if err != nil {
		return err
	}
	// A hold placed since the first look wins: read again right before marking.
	if h, isHeld, err := m.Bus.ActiveHold(ctx, id, m.Now()); err != nil {
		held.Release()
		return err
	} else if isHeld {
		held.Release()
		return tenant.RefuseHeld(id, h)
	}
	res, err := timed(m.Observe, "mark", func() (dataplane.MarkResult, error) {
		return t.Mark(ctx, pre.snap, func(a dataplane.Activity) error {
			return eligible(id, held.Record, held.Found, a, m.Window, m.Now())
		})
	})
	held.Release()
	// Unlock before scheduling, so that a cleaner that picks the drain check
	// up at once does not find the tenant still locked.
	t.Release()
	if err != nil {
		return err
	}
	if err := m.afterStep.after("marked"); err != nil {
		return err
	}

	ev := tenant.Event{TenantID: id, Outcome: tenant.OutcomeMarked, RequestedBy: req.RequestedBy,
		Reason: fmt.Sprintf("%d attempts canceled, %d asked to stop, %d of %d pairs set DELETING",
			res.CanceledAttempts, res.StoppingAttempts, res.DeletingPairs, res.Pairs)}
	if !pre.snap.SchemaExists {
		ev.Reason = "schema already gone: an interrupted cleanup, to be completed"
	}
	pending, err := m.Bus.DrainPending(ctx, id)
	if err != nil {
		return err
	}
	if pending {
		ev.Reason += "; a drain check is already scheduled"
	} else {
		at := now.Add(m.CheckDelay)
		dc := tenant.DrainCheck{ID: id, MarkedAt: now, RequestedBy: req.RequestedBy,
			Documents: pre.snap.Activity.Documents, Users: pre.snap.Activity.Users}
		if err := m.Bus.ScheduleDrainCheck(ctx, dc, at); err != nil {
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
