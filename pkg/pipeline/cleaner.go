package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Cleaner handles due drain checks.
type Cleaner struct {
	Stores
	Rules
	Bus *bus.Bus
	// CheckDelay and CheckMaxDelay drive the backoff between drain checks
	// (DRAIN_CHECK_DELAY, DRAIN_CHECK_MAX_DELAY).
	CheckDelay, CheckMaxDelay time.Duration
	// Timeout is DRAIN_TIMEOUT, counted from marking.
	Timeout time.Duration
	// MaxLeftoverDocs is DRAIN_MAX_LEFTOVER_DOCS.
	MaxLeftoverDocs int64
	// MaxPerHour and MaxPerDay cap cleanups across all replicas
	// (CLEANUP_MAX_PER_HOUR, CLEANUP_MAX_PER_DAY; 0 = no cap).
	MaxPerHour, MaxPerDay int
	// Breaker pauses this replica's cleaning when too many cleanups fail.
	Breaker *Breaker
	// Identity names this replica in the ledger (host/pid).
	Identity string
	Now      func() time.Time
	Log      *slog.Logger
	// Observe receives measurements (nil: none).
	Observe Observer

	afterStep stepHook
}

// Handle performs one drain check. A tenant under an active hold is neither
// checked nor cleaned: its next check is scheduled for when the hold ends (at
// the latest after DRAIN_CHECK_MAX_DELAY). A tenant that no longer passes preflight
// is refused and left in place. One that is not drained yet gets its next
// check scheduled with backoff, or is reported stuck past the timeout. A
// drained one is cleaned: with its control-plane row locked FOR UPDATE and
// its activity read again under lock, its schema is dropped, then its public
// rows deleted, then its control-plane rows deleted and its ledger row
// written in one control-plane transaction. A redelivered message finishes a
// half-done cleanup.
func (c *Cleaner) Handle(ctx context.Context, d *bus.Delivery) error {
	return classify(c.handle(ctx, d))
}

func (c *Cleaner) handle(ctx context.Context, d *bus.Delivery) error {
	dc, err := tenant.ParseDrainCheck(d.Data)
	if err != nil {
		return err
	}
	if d.Subject != bus.DrainSubject(dc.ID) {
		return fmt.Errorf("%w: drain check for %s arrived on %s", tenant.ErrInvalidID, dc.ID, tenant.QuoteInput(d.Subject))
	}
	id := dc.ID
	d.Tenant, d.RequestedBy = id, dc.RequestedBy
	now := c.Now()

	t, err := c.lockTenant(ctx, id)
	if err != nil {
		return err
	}
	defer t.Release()

	if entry, found, err := c.Control.LedgerEntry(ctx, id); err != nil {
		return err
	} else if found {
		if _, inControl, err := c.Control.Tenant(ctx, id); err != nil {
			return err
		} else if !inControl {
			// A repeat delivery after the cleanup committed: report it again, in
			// case the first report was lost with the process that made it.
			c.Bus.Report(ctx, tenant.Event{TenantID: id, Outcome: tenant.OutcomeCleaned, RequestedBy: dc.RequestedBy,
				MarkedAt: &dc.MarkedAt, Reason: "already cleaned at " + entry.CleanedAt.UTC().Format(time.RFC3339)})
			return nil
		}
	}

	if h, held, err := c.Bus.ActiveHold(ctx, id, now); err != nil {
		return err
	} else if held {
		return c.held(ctx, dc, h, now)
	}

	obs := observer(c.Observe)
	pre, err := timed(c.Observe, "preflight", func() (checked, error) { return c.preflight(ctx, t, id, c.Rules, now, false) })
	if err != nil {
		if errors.Is(err, tenant.ErrRefused) {
			obs.DrainCheck("refused")
		} else {
			obs.DrainCheck("error")
		}
		return err
	}
	// The drain check reads what preflight read: pairs and documents left.
	drain := pre.snap.Drain()
	if err := c.afterStep.after("drain-checked"); err != nil {
		return err
	}
	if !drain.Drained(c.MaxLeftoverDocs) {
		return c.notDrained(ctx, dc, drain, now)
	}
	obs.DrainCheck("drained")
	return c.clean(ctx, t, dc, pre)
}

func (c *Cleaner) notDrained(ctx context.Context, dc tenant.DrainCheck, drain tenant.Drain, now time.Time) error {
	pairs, docs := drain.Pairs, drain.Documents
	deadline := dc.MarkedAt.Add(c.Timeout)
	if !now.Before(deadline) {
		observer(c.Observe).DrainCheck("stuck")
		c.Bus.Report(ctx, tenant.Event{TenantID: dc.ID, Outcome: tenant.OutcomeStuck, RequestedBy: dc.RequestedBy,
			MarkedAt: &dc.MarkedAt, PairsLeft: &pairs, DocumentsLeft: &docs,
			Reason: fmt.Sprintf("not drained %s after marking; left in place: check Onyx's connector deletion "+
				"(deletion_failure_message of its DELETING pairs), then request it again", c.Timeout)})
		return nil
	}
	observer(c.Observe).DrainCheck("not_drained")
	next := dc
	next.Attempt++
	at := now.Add(tenant.CheckDelay(next.Attempt, c.CheckDelay, c.CheckMaxDelay))
	if at.After(deadline) {
		at = deadline // one last check at the deadline
	}
	if err := c.Bus.ScheduleDrainCheck(ctx, next, at); err != nil {
		return err
	}
	c.Bus.Report(ctx, tenant.Event{TenantID: dc.ID, Outcome: tenant.OutcomeDraining, RequestedBy: dc.RequestedBy,
		MarkedAt: &dc.MarkedAt, PairsLeft: &pairs, DocumentsLeft: &docs, NextCheckAt: &at,
		Reason: fmt.Sprintf("drain check %d: %d pairs and %d documents left", next.Attempt, pairs, docs)})
	return nil
}

// held schedules the next check of a held tenant for when its hold ends.
func (c *Cleaner) held(ctx context.Context, dc tenant.DrainCheck, h tenant.Hold, now time.Time) error {
	at := now.Add(c.CheckMaxDelay)
	if h.Until != nil && h.Until.Before(at) {
		at = *h.Until
	}
	if err := c.Bus.ScheduleDrainCheck(ctx, dc, at); err != nil {
		return err
	}
	c.Bus.Report(ctx, tenant.Event{TenantID: dc.ID, Outcome: tenant.OutcomeHeld, RequestedBy: dc.RequestedBy,
		MarkedAt: &dc.MarkedAt, NextCheckAt: &at, Reason: h.Describe() + "; not cleaned while the hold lasts"})
	return nil
}

func (c *Cleaner) clean(ctx context.Context, t *dataplane.Tenant, dc tenant.DrainCheck, pre checked) error {
	now := c.Now()
	if ok, until, reason := c.Breaker.Allow(now); !ok {
		return c.wait(ctx, dc, tenant.OutcomePaused, c.Identity, until, reason)
	}
	start := time.Now()
	err := c.cleanNow(ctx, t, dc, pre)
	if err == nil {
		observer(c.Observe).ObserveStep("cleanup", time.Since(start))
	}
	switch {
	case errors.Is(err, tenant.ErrRefused), errors.Is(err, tenant.ErrLater):
		c.Breaker.Skip()
	default:
		c.Breaker.Record(c.Now(), err)
	}
	return err
}

// wait reports a drained tenant waiting for a cap or the breaker, records the
// pause for status, and hands the drain check back until then.
func (c *Cleaner) wait(ctx context.Context, dc tenant.DrainCheck, outcome tenant.Outcome, name string, until time.Time, reason string) error {
	kind := string(outcome)
	if err := c.Bus.SetPause(ctx, name, tenant.Pause{Kind: kind, Reason: reason, Until: until, By: c.Identity}); err != nil {
		c.Log.Error("record pause", "tenant_id", dc.ID, "error", err)
	}
	c.Bus.Report(ctx, tenant.Event{TenantID: dc.ID, Outcome: outcome, RequestedBy: dc.RequestedBy, MarkedAt: &dc.MarkedAt,
		NextCheckAt: &until, Reason: "drained, waiting: " + reason})
	return tenant.Later(max(time.Until(until), time.Second), reason, nil)
}

func (c *Cleaner) cleanNow(ctx context.Context, t *dataplane.Tenant, dc tenant.DrainCheck, pre checked) error {
	id := dc.ID
	res, err := c.Control.Reserve(ctx, id, c.MaxPerHour, c.MaxPerDay)
	if err != nil {
		return err
	}
	if !res.OK {
		limit := c.MaxPerHour
		if res.Cap == "daily" {
			limit = c.MaxPerDay
		}
		return c.wait(ctx, dc, tenant.OutcomeCapped, "cap", res.FreeAt,
			fmt.Sprintf("the %s cap of %d cleanups is reached (%d in the last hour, %d in the last day)",
				res.Cap, limit, res.LastHour, res.LastDay))
	}
	held, err := c.Control.Hold(ctx, id, controlplane.Update, c.RowLockTimeout)
	if err != nil {
		return err
	}
	defer held.Release()
	// A hold placed since the first look wins: it is read again now, right
	// before the irreversible step.
	if h, isHeld, err := c.Bus.ActiveHold(ctx, id, c.Now()); err != nil {
		return err
	} else if isHeld {
		return c.held(ctx, dc, h, c.Now())
	}
	// The last check before the irreversible step: status and age from the
	// locked row, activity read under lock inside the first drop transaction.
	recheck := func(a dataplane.Activity) error {
		return eligible(id, held.Record, held.Found, a, c.Window, c.Now())
	}
	if err := recheck(pre.snap.Activity); err != nil {
		return err
	}
	if err := c.afterStep.after("held"); err != nil {
		return err
	}
	drop, err := timed(c.Observe, "drop_schema", func() (dataplane.DropResult, error) { return t.Drop(ctx, pre.snap, recheck) })
	if err != nil {
		return err
	}
	if err := c.afterStep.after("dropped"); err != nil {
		return err
	}
	public, err := timed(c.Observe, "delete_public_rows", func() (dataplane.PublicRows, error) { return t.DeletePublicRows(ctx) })
	if err != nil {
		return err
	}
	if err := c.afterStep.after("public-rows-deleted"); err != nil {
		return err
	}
	deleted, err := timed(c.Observe, "delete_control_plane_rows", func() ([]controlplane.TableRows, error) {
		return held.DeleteTenant(ctx, controlplane.LedgerEntry{
			RequestedBy:        dc.RequestedBy,
			MarkedAt:           dc.MarkedAt,
			DocumentsAtMarking: dc.Documents,
			UsersAtMarking:     dc.Users,
			LastActivityAt:     pre.snap.Activity.Last(),
			SchemaExisted:      !drop.AlreadyGone,
			RelationsDropped:   drop.Relations,
			PublicRowsDeleted:  public.Total(),
			CleanedBy:          c.Identity,
		})
	})
	if err != nil {
		return err
	}
	if err := c.afterStep.after("control-plane-deleted"); err != nil {
		return err
	}
	var counts []string
	for _, d := range deleted {
		counts = append(counts, fmt.Sprintf("%s %d", d.Table, d.Rows))
	}
	reason := fmt.Sprintf("schema dropped (%d relations, %d transactions); %d public rows; control plane: %s",
		drop.Relations, drop.Transactions, public.Total(), strings.Join(counts, ", "))
	if drop.AlreadyGone {
		reason = fmt.Sprintf("schema was already gone; %d public rows; control plane: %s", public.Total(), strings.Join(counts, ", "))
	}
	c.Bus.Report(ctx, tenant.Event{TenantID: id, Outcome: tenant.OutcomeCleaned, RequestedBy: dc.RequestedBy,
		MarkedAt: &dc.MarkedAt, Reason: reason})
	return c.afterStep.after("reported")
}
