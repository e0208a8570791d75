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

// Handle performs one drain check, for a tenant this pipeline marked (or
// whose interrupted cleanup has evidence): the facts it reports and records
// come from the pipeline's record of the marking, never from the message. A
// tenant under an active hold is neither checked nor cleaned: its next check
// is scheduled for when the hold ends (at the latest after
// DRAIN_CHECK_MAX_DELAY). A tenant that no longer passes preflight is refused
// and left in place. One that is not drained yet gets its next check
// scheduled with backoff, or is reported stuck past the timeout. A drained one
// is cleaned (see cleanNow). A redelivered message finishes a half-done
// cleanup.
func (c *Cleaner) Handle(ctx context.Context, d *bus.Delivery) error {
	return c.handle(ctx, d)
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
	d.Tenant = id
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
		} else if inControl {
			return tenant.Refuse(id, "the ledger says it was cleaned at %s, yet the control plane has the tenant again: "+
				"left for review", entry.CleanedAt.UTC().Format(time.RFC3339))
		}
		// A repeat delivery after the cleanup committed: report it again, in
		// case the first report was lost with the process that made it.
		c.Bus.Report(ctx, tenant.Event{TenantID: id, Outcome: tenant.OutcomeCleaned, RequestedBy: entry.RequestedBy,
			Reason: "already cleaned at " + entry.CleanedAt.UTC().Format(time.RFC3339)})
		return nil
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
	rec := pre.snap.Record
	if !rec.Marked() && rec.Evidence() == "" {
		obs.DrainCheck("refused")
		return tenant.Refuse(id, "no record that this pipeline marked it: a drain check it did not schedule; "+
			"request a cleanup instead (tenantctl cleanup %s)", id)
	}
	d.RequestedBy = requester(rec)
	if h, held, err := c.Control.ActiveHold(ctx, id, now); err != nil {
		return err
	} else if held {
		return c.held(ctx, dc, rec, h, now)
	}
	// The drain check reads what preflight read: pairs and documents left.
	drain := pre.snap.Drain()
	if err := c.afterStep.after("drain-checked"); err != nil {
		return err
	}
	if !drain.Drained(c.MaxLeftoverDocs) {
		return c.notDrained(ctx, dc, rec, drain, now)
	}
	obs.DrainCheck("drained")
	return c.clean(ctx, t, dc, pre)
}

// requester is who requested the tenant's cleanup, from its record.
func requester(rec dataplane.Record) string {
	if rec.RequestedBy != "" {
		return rec.RequestedBy
	}
	return rec.CompletionRequestedBy
}

// markedAt is the first marking from the record, for events (nil: never).
func markedAt(rec dataplane.Record) *time.Time {
	if !rec.Marked() {
		return nil
	}
	t := rec.MarkedAt
	return &t
}

func (c *Cleaner) notDrained(ctx context.Context, dc tenant.DrainCheck, rec dataplane.Record, drain tenant.Drain, now time.Time) error {
	pairs, docs := drain.Pairs, drain.Documents
	deadline := rec.LastMarkedAt.Add(c.Timeout)
	if !now.Before(deadline) {
		observer(c.Observe).DrainCheck("stuck")
		c.Bus.Report(ctx, tenant.Event{TenantID: dc.ID, Outcome: tenant.OutcomeStuck, RequestedBy: requester(rec),
			MarkedAt: markedAt(rec), PairsLeft: &pairs, DocumentsLeft: &docs,
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
	c.Bus.Report(ctx, tenant.Event{TenantID: dc.ID, Outcome: tenant.OutcomeDraining, RequestedBy: requester(rec),
		MarkedAt: markedAt(rec), PairsLeft: &pairs, DocumentsLeft: &docs, NextCheckAt: &at,
		Reason: fmt.Sprintf("drain check %d: %d pairs and %d documents left", next.Attempt, pairs, docs)})
	return nil
}

// held schedules the next check of a held tenant for when its hold ends.
func (c *Cleaner) held(ctx context.Context, dc tenant.DrainCheck, rec dataplane.Record, h tenant.Hold, now time.Time) error {
	at := now.Add(c.CheckMaxDelay)
	if h.Until != nil && h.Until.Before(at) {
		at = *h.Until
	}
	if err := c.Bus.ScheduleDrainCheck(ctx, dc, at); err != nil {
		return err
	}
	c.Bus.Report(ctx, tenant.Event{TenantID: dc.ID, Outcome: tenant.OutcomeHeld, RequestedBy: requester(rec),
		MarkedAt: markedAt(rec), NextCheckAt: &at, Reason: h.Describe() + "; not cleaned while the hold lasts"})
	return nil
}

func (c *Cleaner) clean(ctx context.Context, t *dataplane.Tenant, dc tenant.DrainCheck, pre checked) error {
	now := c.Now()
	if ok, until, reason := c.Breaker.Allow(now); !ok {
		return c.wait(ctx, dc, pre.snap.Record, tenant.OutcomePaused, c.Identity, until, reason)
	}
	start := time.Now()
	err := c.cleanNow(ctx, t, dc, pre)
	if err == nil {
		observer(c.Observe).ObserveStep("cleanup", time.Since(start))
	}
	switch {
	case errors.Is(err, tenant.ErrRefused), errors.Is(err, tenant.ErrLater), errors.Is(err, tenant.ErrUnavailable):
		c.Breaker.Skip()
	default:
		c.Breaker.Record(c.Now(), dc.ID, err)
	}
	return err
}

// wait reports a drained tenant waiting for a cap or the breaker, records the
// pause for status, and hands the drain check back until then.
func (c *Cleaner) wait(ctx context.Context, dc tenant.DrainCheck, rec dataplane.Record, outcome tenant.Outcome, name string, until time.Time, reason string) error {
	kind := string(outcome)
	if err := c.Bus.SetPause(ctx, name, tenant.Pause{Kind: kind, Reason: reason, Until: until, By: c.Identity}); err != nil {
		c.Log.Error("record pause", "tenant_id", dc.ID, "error", err)
	}
	c.Bus.Report(ctx, tenant.Event{TenantID: dc.ID, Outcome: outcome, RequestedBy: requester(rec), MarkedAt: markedAt(rec),
		NextCheckAt: &until, Reason: "drained, waiting: " + reason})
	return tenant.Later(max(time.Until(until), time.Second), reason, nil)
}

// notDrainedError is the final look's finding that the tenant is not
// drained after all (a connector or documents added since preflight).
type notDrainedError struct{ drain tenant.Drain }

func (e *notDrainedError) Error() string {
	return fmt.Sprintf("not drained at the final look: %d pairs and %d documents", e.drain.Pairs, e.drain.Documents)
}

// cleanNow cleans a drained tenant. With the control-plane row locked FOR
// UPDATE (the status, and the hold read under the lock, cannot change; no
// hold can be placed) it first deletes the control-plane rows and inserts
// the ledger row without committing, proving the last step possible
// (unknown referencing rows, triggers, the ledger's shape refuse the tenant
// now, before anything irreversible). Then the schema is dropped, its final
// look under lock inside the first drop transaction (eligibility and
// drained, on what it reads there); then the public rows; then the ledger
// row is completed from the pipeline's record of each step (true whatever
// the number of attempts) and the control-plane transaction commits.
func (c *Cleaner) cleanNow(ctx context.Context, t *dataplane.Tenant, dc tenant.DrainCheck, pre checked) error {
	id := dc.ID
	rec := pre.snap.Record
	res, err := c.Control.Reserve(ctx, id, c.MaxPerHour, c.MaxPerDay)
	if err != nil {
		return err
	}
	if !res.OK {
		limit := c.MaxPerHour
		if res.Cap == "daily" {
			limit = c.MaxPerDay
		}
		return c.wait(ctx, dc, rec, tenant.OutcomeCapped, "cap", res.FreeAt,
			fmt.Sprintf("the %s cap of %d cleanups is reached (%d in the last hour, %d in the last day)",
				res.Cap, limit, res.LastHour, res.LastDay))
	}
	locked, err := c.Control.LockTenant(ctx, id, controlplane.Update, c.RowLockTimeout, c.Now())
	if err != nil {
		return err
	}
	defer locked.Release()
	// A hold placed since the first look wins.
	if locked.Hold != nil {
		locked.Release()
		return c.held(ctx, dc, rec, *locked.Hold, c.Now())
	}
	// A tenant whose drop began passed its final look then: it is completed
	// whatever its status is now (its schema is gone).
	if !begun(pre.snap) {
		if err := eligible(id, locked.Record, locked.Found, pre.snap.Activity, c.Window, c.Now()); err != nil {
			return err
		}
	}
	entry := controlplane.LedgerEntry{
		RequestedBy:        requester(rec),
		MarkedAt:           rec.MarkedAt,
		DocumentsAtMarking: rec.DocumentsAtMarking,
		UsersAtMarking:     rec.UsersAtMarking,
		LastActivityAt:     pre.snap.Activity.Last(),
		CleanedBy:          c.Identity,
	}
	deleted, err := timed(c.Observe, "delete_control_plane_rows", func() ([]controlplane.TableRows, error) {
		return locked.PrepareDelete(ctx, entry)
	})
	if err != nil {
		return err
	}
	if err := c.afterStep.after("control-plane-prepared"); err != nil {
		return err
	}
	drop, err := timed(c.Observe, "drop_schema", func() (dataplane.DropResult, error) {
		return t.Drop(ctx, dataplane.DropChecks{
			Look: func(f dataplane.Facts) error {
				if err := eligible(id, locked.Record, locked.Found, f.Activity, c.Window, c.Now()); err != nil {
					return err
				}
				d := tenant.Drain{SchemaExists: true, Pairs: f.Pairs, Documents: f.Activity.Documents}
				if !d.Drained(c.MaxLeftoverDocs) {
					return &notDrainedError{drain: d}
				}
				return nil
			},
			// The tenant's row (its status, its hold) stays locked until the
			// end: if its transaction died, stop before the next drop.
			Before: locked.Alive,
		})
	})
	var nd *notDrainedError
	if errors.As(err, &nd) {
		locked.Release()
		return c.notDrained(ctx, dc, rec, nd.drain, c.Now())
	}
	if err != nil {
		return err
	}
	if err := c.afterStep.after("dropped"); err != nil {
		return err
	}
	if err := locked.Alive(ctx); err != nil {
		return err
	}
	public, err := timed(c.Observe, "delete_public_rows", func() (dataplane.PublicRows, error) { return t.DeletePublicRows(ctx) })
	if err != nil {
		return err
	}
	if err := c.afterStep.after("public-rows-deleted"); err != nil {
		return err
	}
	done, err := t.Record(ctx)
	if err != nil {
		return err
	}
	final := ledgerFacts(entry, done)
	if err := locked.Finish(ctx, final); err != nil {
		return err
	}
	if err := c.afterStep.after("control-plane-deleted"); err != nil {
		return err
	}
	var counts []string
	for _, d := range deleted {
		counts = append(counts, fmt.Sprintf("%s %d", d.Table, d.Rows))
	}
	publicRows := drop.PublicRows.Total() + public.Total()
	reason := fmt.Sprintf("schema dropped (%d relations, %d transactions); %d public rows; control plane: %s",
		drop.Relations, drop.Transactions, publicRows, strings.Join(counts, ", "))
	if drop.AlreadyGone {
		reason = fmt.Sprintf("schema was already gone (%s); %d public rows; control plane: %s",
			rec.Evidence(), publicRows, strings.Join(counts, ", "))
	}
	c.Bus.Report(ctx, tenant.Event{TenantID: id, Outcome: tenant.OutcomeCleaned, RequestedBy: requester(rec),
		MarkedAt: markedAt(rec), Reason: reason})
	return c.afterStep.after("reported")
}

// ledgerFacts completes the ledger entry with what the pipeline's record
// says the data-plane steps removed, over every attempt.
func ledgerFacts(e controlplane.LedgerEntry, rec dataplane.Record) controlplane.LedgerEntry {
	if !rec.LastActivityAt.IsZero() {
		e.LastActivityAt = rec.LastActivityAt
	}
	e.SchemaExisted = rec.DropStarted()
	e.RelationsDropped = rec.RelationsDropped
	e.PublicRowsDeleted = rec.PublicRowsDeleted
	e.DropStartedAt, e.SchemaDroppedAt, e.PublicRowsDeletedAt = rec.DropStartedAt, rec.DropFinishedAt, rec.PublicRowsDeletedAt
	if !rec.DropStarted() {
		e.Evidence = rec.Evidence()
	}
	return e
}
