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

// Pending says whether a drain check of a tenant is scheduled or due
// (bus.Bus.DrainPending).
type Pending interface {
	DrainPending(ctx context.Context, id tenant.ID) (bool, error)
}

// Marker handles cleanup requests.
type Marker struct {
	Stores
	Rules
	// Pending tells whether the tenant's drain check is scheduled already.
	Pending Pending
	// CheckDelay is DRAIN_CHECK_DELAY: the first drain check after marking.
	CheckDelay time.Duration
	Now        func() time.Time

	afterStep stepHook
}

// Handle marks one requested tenant: a tenant under an active hold is
// refused as held; otherwise preflight, then the final look atomic with the
// marking: with the control-plane row locked (its status cannot change and
// no hold can be placed meanwhile) and the hold read again under that lock,
// the marking transaction locks the tables it reads, reads the activity and
// applies the rule, cancels the index attempts, sets every
// connector-credential pair DELETING and records the marking (see
// dataplane.TenantSession.Mark). Its outcome schedules the first drain check
// unless one is already pending. Every step is idempotent. A tenant already
// marked whose drain check is pending is left alone. A tenant whose schema is
// gone, or whose drop is under way, has nothing to mark: with evidence that
// its cleanup began, its drain check is scheduled, due now, so that the
// cleaner completes it.
func (m *Marker) Handle(ctx context.Context, d bus.Delivery) (bus.Outcome, error) {
	var out bus.Outcome
	req, err := tenant.ParseRequest(d.Data)
	if err != nil {
		return out, err
	}
	id := req.ID
	out.Tenant, out.RequestedBy = id, req.RequestedBy
	now := m.Now()
	if h, held, err := m.Control.ActiveHold(ctx, id, now); err != nil {
		return out, err
	} else if held {
		return out, tenant.RefuseHeld(id, h)
	}
	if entry, found, err := m.Control.LedgerEntry(ctx, id); err != nil {
		return out, err
	} else if found {
		return out, tenant.Refuse(id, "already cleaned at %s", entry.CleanedAt.UTC().Format(time.RFC3339))
	}
	// A tenant marked, with nothing left to mark, and waiting for its drain
	// check needs nothing: a repeated request (an analyzer pass, or a flood
	// of them) neither takes its lock, which its drain check needs, nor moves
	// its drain timeout.
	if rec, full, err := m.alreadyMarked(ctx, id); err != nil {
		return out, err
	} else if full {
		out.Events = []tenant.Event{{TenantID: id, Outcome: tenant.OutcomeMarked, RequestedBy: req.RequestedBy,
			Reason: "already marked at " + rec.MarkedAt.UTC().Format(time.RFC3339) + " and its drain check is scheduled: nothing to do"}}
		return out, nil
	}
	t, err := m.lockTenant(ctx, id)
	if err != nil {
		return out, err
	}
	defer t.Release()
	pre, err := m.preflight(ctx, t, id, m.Rules, now, true)
	if err != nil {
		return out, err
	}
	defer pre.release()
	if err := m.afterStep.after("preflight"); err != nil {
		return out, err
	}
	locked, err := m.Control.LockTenant(ctx, id, controlplane.NoKeyUpdate, m.RowLockTimeout, m.Now())
	if err != nil {
		return out, err
	}
	defer locked.Release()
	// A hold placed since the first look wins: read again under the lock.
	if locked.Hold != nil {
		return out, tenant.RefuseHeld(id, *locked.Hold)
	}
	var res dataplane.MarkResult
	judge := func(f dataplane.Facts) error {
		return eligible(id, locked.Record, locked.Found, f.Activity, m.Window, m.Now())
	}
	switch targets := markTargets(pre); {
	case len(pre.copies) == 1 && pre.snap.SchemaExists && !pre.snap.Underway:
		res, err = t.Mark(ctx, req.RequestedBy, judge)
	case len(pre.copies) > 1 && len(targets) > 0:
		// Every copy is marked (a tenant being moved has two).
		res, err = markAll(ctx, targets, req.RequestedBy, judge)
	}
	locked.Release()
	// Unlock before the drain check is scheduled, so that a cleaner that
	// picks it up at once does not find the tenant still locked.
	pre.release()
	t.Release()
	if err != nil {
		return out, err
	}
	if res.SchemaGone { // dropped by someone since preflight: look again
		return out, tenant.Later(time.Second, "the schema vanished while the tenant was being marked", nil)
	}
	if err := m.afterStep.after("marked"); err != nil {
		return out, err
	}
	ev := tenant.Event{TenantID: id, Outcome: tenant.OutcomeMarked, RequestedBy: req.RequestedBy,
		Reason: fmt.Sprintf("%d attempts canceled, %d asked to stop, %d of %d pairs set DELETING",
			res.CanceledAttempts, res.StoppingAttempts, res.DeletingPairs, res.Pairs)}
	switch {
	case pre.snap.Underway:
		ev.Reason = "the drop of its schema, begun at " + pre.snap.Record.DropStartedAt.UTC().Format(time.RFC3339) +
			", is under way: its drain check completes it"
	case !pre.snap.SchemaExists:
		ev.Reason = "an interrupted cleanup, to be completed: " + pre.snap.Record.Evidence(now)
	}
	if m.sharded() && pre.snap.SchemaExists {
		ev.Reason += "; on shard(s) " + shardList(withSchema(pre.copies))
	}
	pending, err := m.Pending.DrainPending(ctx, id)
	if err != nil {
		return out, err
	}
	if pending {
		ev.Reason += "; a drain check is already scheduled"
	} else {
		at := now.Add(m.CheckDelay)
		if !pre.snap.SchemaExists || pre.snap.Underway {
			at = now // nothing to drain: complete it while the evidence is fresh
		}
		out.Schedule = []bus.Scheduled{{Check: tenant.DrainCheck{ID: id}, At: at}}
		ev.NextCheckAt = &at
	}
	out.Events = []tenant.Event{ev}
	return out, nil
}

// alreadyMarked reports whether the tenant is marked (by this pipeline,
// its drop not begun), with nothing left to mark on any shard and its drain
// check pending: then a request changes nothing and takes no lock. It reads
// without locking; anything it cannot tell sends the request the normal
// way.
func (m *Marker) alreadyMarked(ctx context.Context, id tenant.ID) (dataplane.Record, bool, error) {
	stores := []*dataplane.Store{m.Data}
	for _, name := range m.shardNames(m.Rules)[1:] {
		stores = append(stores, m.Shards[name])
	}
	var recs []dataplane.Record
	for i, st := range stores {
		rec, err := st.Record(ctx, id)
		if err != nil && i > 0 {
			return dataplane.Record{}, false, nil // a shard that does not answer: the normal way tells
		} else if err != nil {
			return dataplane.Record{}, false, err
		}
		recs = append(recs, rec)
	}
	rec := dataplane.MergeRecords(recs)
	if !rec.Marked() || rec.DropStarted() {
		return rec, false, nil
	}
	pending, err := m.Pending.DrainPending(ctx, id)
	if err != nil || !pending {
		return rec, false, err
	}
	for i, st := range stores {
		if recs[i].Marked() {
			full, err := st.FullyMarked(ctx, id)
			if err != nil || !full {
				return rec, false, err
			}
			continue
		}
		if i == 0 && len(stores) == 1 {
			continue
		}
		// A copy this pipeline never marked is not marked.
		exists, err := st.SchemaExists(ctx, id)
		if err != nil || exists {
			return rec, false, err
		}
	}
	return rec, true, nil
}
