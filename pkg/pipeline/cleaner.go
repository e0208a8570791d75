package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/filestore"
	"github.com/tenantcleanup/tenant-cleanup/pkg/pacer"
	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Cleaner handles due drain checks.
type Cleaner struct {
	Stores
	Rules
	// CheckDelay and CheckMaxDelay drive the backoff between drain checks
	// (DRAIN_CHECK_DELAY, DRAIN_CHECK_MAX_DELAY).
	CheckDelay, CheckMaxDelay time.Duration
	// Timeout is DRAIN_TIMEOUT, counted from the latest marking.
	Timeout time.Duration
	// MaxLeftoverDocs is DRAIN_MAX_LEFTOVER_DOCS.
	MaxLeftoverDocs int64
	// MaxPerHour and MaxPerDay cap cleanups across all replicas
	// (CLEANUP_MAX_PER_HOUR, CLEANUP_MAX_PER_DAY; 0 = no cap).
	MaxPerHour, MaxPerDay int
	// Identity names this replica in the ledger (host/pid).
	Identity string
	Now      func() time.Time
	// Files and Keys are the tenant's other stores: the S3 file store and
	// Redis (nil: not configured, skipped). A tenant counts as cleaned only
	// once each configured store holds nothing of it.
	Files FileStore
	Keys  KeyStore
	// Pacers pace the drops by each data-plane shard's health (pkg/pacer),
	// by shard name: a tenant's drop starts only when the pacer of every
	// shard it has a schema on admits it. A shard without one is not paced.
	Pacers map[string]Pacer
	// ObserveStep, when set, receives how long each irreversible step took:
	// delete_control_plane_rows (prepared), drop_schema,
	// unlink_large_objects, delete_public_rows.
	ObserveStep func(step string, took time.Duration)
	// ObserveShardStep, when set, receives in a sharded fleet how long a
	// per-tenant step took on one shard (drop_schema, unlink_large_objects);
	// shard is a configured shard's name.
	ObserveShardStep func(step, shard string, took time.Duration)
	// ObserveStore, when set, receives each attempt's removal from a store
	// (large_objects, s3, redis): what it removed by unit, and its error.
	ObserveStore func(store string, removed map[string]int64, err error)

	afterStep stepHook
}

// FileStore is the S3 file store (filestore.Store).
type FileStore interface {
	Ping(ctx context.Context) error
	Prefix(id tenant.ID) (string, error)
	RemoveTenant(ctx context.Context, id tenant.ID, recordKeys []string) (filestore.Removed, error)
}

// KeyStore is Redis (rediskeys.Store).
type KeyStore interface {
	Ping(ctx context.Context) error
	RemoveTenant(ctx context.Context, id tenant.ID) (rediskeys.Removed, error)
}

// storesAnswer checks, before anything irreversible, that each configured
// store answers (the S3 bucket exists and these credentials reach it;
// Redis answers a PING): a store that is down or misconfigured stops the
// cleanup before the drop, not after it. Its failure is "unavailable":
// retried with backoff, never dead-lettered.
func (c *Cleaner) storesAnswer(ctx context.Context) error {
	if c.Files != nil {
		if err := c.Files.Ping(ctx); err != nil {
			return tenant.Unavailable(fmt.Errorf("the S3 file store does not answer, so nothing was dropped: %w", err))
		}
	}
	if c.Keys != nil {
		if err := c.Keys.Ping(ctx); err != nil {
			return tenant.Unavailable(fmt.Errorf("redis does not answer, so nothing was dropped: %w", err))
		}
	}
	return nil
}

// Pacer is what the cleaner needs of a pacer (pacer.Pacer).
type Pacer interface {
	Acquire(ctx context.Context) (release func(pacer.Outcome), err error)
	Observe(commit time.Duration)
	State() pacer.State
}

// PacedKind is the kind of the pause a paced tenant records (tenant.Pause).
const PacedKind = "paced"

// paceWait bounds the wait for the pacer before a drained tenant's drain
// check is handed back (it is retried paceRetry later). In a sharded fleet
// a worker waits at most shardPaceWait: the tenants of a loaded shard must
// not hold the workers the other shards' tenants need.
const (
	paceWait      = 30 * time.Second
	shardPaceWait = 2 * time.Second
	paceRetry     = 5 * time.Second
)

// paceTry bounds the wait for a shard's pacer while the drop holds another
// shard's: a drop never waits long for one pacer while it holds another.
const paceTry = 50 * time.Millisecond

// pace waits until the pacer of each shard where the tenant has a schema to
// drop admits the drop. It never waits for one pacer while it holds
// another (a tenant being moved would otherwise hold the slot of a healthy
// shard while it waits for a loaded one, and slow every tenant there): it
// waits only while it holds nothing, and while it holds a shard's pacer it
// only tries the others briefly; one that does not admit the drop is waited
// for alone, the others released meanwhile. The release function is to be
// called with the longest COMMIT the drop took on each shard; a wait that
// ends is the outcome "paused" (the tenant waits, it is not stuck).
func (c *Cleaner) pace(ctx context.Context, out bus.Outcome, copies []shardCopy) (release func(commits map[string]time.Duration), waiting bus.Outcome, err error) {
	var need []string
	for _, cp := range copies {
		if c.Pacers[cp.shard] == nil || slices.Contains(need, cp.shard) || !cp.snap.SchemaExists && !cp.snap.Underway {
			continue
		}
		need = append(need, cp.shard)
	}
	releases := map[string]func(pacer.Outcome){}
	release = func(commits map[string]time.Duration) {
		for shard, r := range releases {
			r(pacer.Outcome{Commit: commits[shard]})
		}
	}
	wait := paceWait
	if c.sharded() {
		wait = shardPaceWait
	}
	actx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for len(releases) < len(need) {
		for _, shard := range need {
			if releases[shard] != nil {
				continue
			}
			p := c.Pacers[shard]
			wctx, wcancel := actx, context.CancelFunc(func() {})
			if len(releases) > 0 {
				wctx, wcancel = context.WithTimeout(actx, paceTry)
			}
			r, err := p.Acquire(wctx)
			wcancel()
			if err == nil {
				releases[shard] = r
				continue
			}
			if len(releases) > 0 && actx.Err() == nil {
				// Busy while another is held: release them, wait for
				// this one alone, then try the others again.
				release(nil)
				clear(releases)
				if r, err = p.Acquire(actx); err == nil {
					releases[shard] = r
					break
				}
			}
			release(nil)
			if errors.Is(err, pacer.ErrPaced) && ctx.Err() == nil {
				reason := "paced by the data plane's load: " + p.State().Reason
				if c.sharded() {
					reason = "paced by the load of shard " + shard + ": " + p.State().Reason
				}
				waiting, err = Waiting(out, tenant.OutcomePaused, "pace@"+c.Identity, c.Identity, c.Now().Add(paceRetry), reason)
				waiting.Pause.Kind = PacedKind
				return nil, waiting, err
			}
			return nil, out, err
		}
	}
	return release, out, nil
}

// timed runs fn and hands its duration to ObserveStep as step.
func timed[T any](c *Cleaner, step string, fn func() (T, error)) (T, error) {
	start := time.Now()
	v, err := fn()
	if c.ObserveStep != nil {
		c.ObserveStep(step, time.Since(start))
	}
	return v, err
}

// Handle performs one drain check, for a tenant this pipeline marked (or
// whose interrupted cleanup has evidence): the facts it reports and records
// come from the pipeline's record of the marking, never from the message. A
// tenant under an active hold is neither checked nor cleaned: its next check
// is scheduled for when the hold ends (at the latest after
// DRAIN_CHECK_MAX_DELAY). A tenant that no longer passes preflight is refused
// and left in place. One that is not drained yet gets its next check
// scheduled with backoff, or is reported stuck past the timeout. A drained one
// is cleaned (see clean). A redelivered message finishes a half-done cleanup.
func (c *Cleaner) Handle(ctx context.Context, d bus.Delivery) (bus.Outcome, error) {
	var out bus.Outcome
	dc, err := tenant.ParseDrainCheck(d.Data)
	if err != nil {
		return out, err
	}
	if d.Subject != bus.DrainSubject(dc.ID) {
		return out, fmt.Errorf("%w: drain check for %s arrived on %s", tenant.ErrInvalidID, dc.ID, tenant.QuoteInput(d.Subject))
	}
	id := dc.ID
	out.Tenant = id
	now := c.Now()
	t, err := c.lockTenant(ctx, id)
	if err != nil {
		return out, err
	}
	defer t.Release()
	if entry, found, err := c.Control.LedgerEntry(ctx, id); err != nil {
		return out, err
	} else if found {
		if _, inControl, err := c.Control.Tenant(ctx, id); err != nil {
			return out, err
		} else if inControl {
			return out, tenant.Refuse(id, "the ledger says it was cleaned at %s, yet the control plane has the tenant again: "+
				"left for review", entry.CleanedAt.UTC().Format(time.RFC3339))
		}
		// A repeat delivery after the cleanup committed: report it again, in
		// case the first report was lost with the process that made it.
		out.Events = []tenant.Event{{TenantID: id, Outcome: tenant.OutcomeCleaned, RequestedBy: entry.RequestedBy,
			Reason: "already cleaned at " + entry.CleanedAt.UTC().Format(time.RFC3339)}}
		return out, nil
	}
	pre, err := c.preflight(ctx, t, id, c.Rules, now, false)
	if err != nil {
		return out, err
	}
	defer pre.release()
	rec := pre.snap.Record
	switch {
	case pre.snap.Forgotten:
		return out, tenant.Refuse(id, "its schema is another copy than the one this pipeline marked (restored or recreated "+
			"since): what was recorded of the earlier copy is forgotten; request a cleanup again if it is to go")
	case !rec.Marked() && rec.Evidence(now) == "":
		return out, tenant.Refuse(id, "no record that this pipeline marked it: a drain check it did not schedule; "+
			"request a cleanup instead (tenantctl cleanup %s)", id)
	}
	out.RequestedBy = requester(rec)
	if h, held, err := c.Control.ActiveHold(ctx, id, now); err != nil {
		return out, err
	} else if held {
		return c.held(out, dc, rec, h, now), nil
	}
	// The drain check reads what preflight read: pairs and documents left.
	// A drop under way passed its final look: nothing is left to drain.
	drain := pre.snap.Drain()
	if pre.snap.Underway {
		drain = tenant.Drain{}
	}
	if err := c.afterStep.after("drain-checked"); err != nil {
		return out, err
	}
	if !drain.Drained(c.MaxLeftoverDocs) {
		return c.notDrained(out, dc, rec, drain, now), nil
	}
	return c.clean(ctx, t, out, dc, pre)
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

// event is an event about the tenant of dc, with what its record says.
func event(dc tenant.DrainCheck, rec dataplane.Record, o tenant.Outcome, reason string) tenant.Event {
	return tenant.Event{TenantID: dc.ID, Outcome: o, RequestedBy: requester(rec), MarkedAt: markedAt(rec), Reason: reason}
}

// notDrained schedules the next check with backoff, or reports the tenant
// stuck past DRAIN_TIMEOUT from its latest marking.
func (c *Cleaner) notDrained(out bus.Outcome, dc tenant.DrainCheck, rec dataplane.Record, drain tenant.Drain, now time.Time) bus.Outcome {
	pairs, docs := drain.Pairs, drain.Documents
	deadline := rec.LastMarkedAt.Add(c.Timeout)
	if !now.Before(deadline) {
		ev := event(dc, rec, tenant.OutcomeStuck, fmt.Sprintf("not drained %s after marking; left in place: check Onyx's connector "+
			"deletion (deletion_failure_message of its DELETING pairs), then request it again", c.Timeout))
		ev.PairsLeft, ev.DocumentsLeft = &pairs, &docs
		out.Events = []tenant.Event{ev}
		return out
	}
	next := dc
	next.Attempt++
	at := now.Add(tenant.CheckDelay(next.Attempt, c.CheckDelay, c.CheckMaxDelay))
	if at.After(deadline) {
		at = deadline // one last check at the deadline
	}
	ev := event(dc, rec, tenant.OutcomeDraining, fmt.Sprintf("drain check %d: %d pairs and %d documents left", next.Attempt, pairs, docs))
	ev.PairsLeft, ev.DocumentsLeft, ev.NextCheckAt = &pairs, &docs, &at
	out.Schedule, out.Events = []bus.Scheduled{{Check: next, At: at}}, []tenant.Event{ev}
	return out
}

// held schedules the next check of a held tenant for when its hold ends.
func (c *Cleaner) held(out bus.Outcome, dc tenant.DrainCheck, rec dataplane.Record, h tenant.Hold, now time.Time) bus.Outcome {
	at := now.Add(c.CheckMaxDelay)
	if h.Until != nil && h.Until.Before(at) {
		at = *h.Until
	}
	ev := event(dc, rec, tenant.OutcomeHeld, h.Describe()+"; not cleaned while the hold lasts")
	ev.NextCheckAt = &at
	out.Schedule, out.Events = []bus.Scheduled{{Check: dc, At: at}}, []tenant.Event{ev}
	return out
}

// notDrainedError is the final look's finding that the tenant is not
// drained after all (a connector or documents added since preflight).
type notDrainedError struct{ drain tenant.Drain }

func (e *notDrainedError) Error() string {
	return fmt.Sprintf("not drained at the final look: %d pairs and %d documents", e.drain.Pairs, e.drain.Documents)
}

// clean cleans a drained tenant. With the control-plane row locked FOR
// UPDATE (the status, and the hold read under the lock, cannot change; no
// hold can be placed) it first deletes the control-plane rows and inserts
// the ledger row without committing, proving the last step possible
// (unknown referencing rows, triggers, the ledger's shape refuse the tenant
// now, before anything irreversible). Then the schema is dropped, its final
// look under lock inside the first drop transaction (eligibility and
// drained, on what it reads there), with its public rows; then the ledger
// row is completed from the pipeline's record of each step (true whatever
// the number of attempts) and the control-plane transaction commits.
func (c *Cleaner) clean(ctx context.Context, t *dataplane.TenantSession, out bus.Outcome, dc tenant.DrainCheck, pre checked) (bus.Outcome, error) {
	id := dc.ID
	rec := pre.snap.Record
	if err := c.storesAnswer(ctx); err != nil {
		return out, err
	}
	release, waiting, err := c.pace(ctx, out, pre.copies)
	if err != nil {
		return waiting, err
	}
	longest := map[string]time.Duration{} // the longest COMMIT of the drop on each shard, for its pacer
	// The pacer counts the drop (and the large objects' unlinks) in flight,
	// not the other stores or the control plane's commit after them.
	var once sync.Once
	releasePacers := func() { once.Do(func() { release(longest) }) }
	defer releasePacers()
	res, err := c.Control.Reserve(ctx, id, c.MaxPerHour, c.MaxPerDay)
	if err != nil {
		return out, err
	}
	if !res.OK {
		limit := c.MaxPerHour
		if res.Cap == "daily" {
			limit = c.MaxPerDay
		}
		reason := fmt.Sprintf("the %s cap of %d cleanups is reached (%d in the last hour, %d in the last day)",
			res.Cap, limit, res.LastHour, res.LastDay)
		return Waiting(out, tenant.OutcomeCapped, "cap", c.Identity, res.FreeAt, reason)
	}
	locked, err := c.Control.LockTenant(ctx, id, controlplane.Update, c.RowLockTimeout, c.Now())
	if err != nil {
		return out, err
	}
	defer locked.Release()
	// A hold placed since the first look wins.
	if locked.Hold != nil {
		return c.held(out, dc, rec, *locked.Hold, c.Now()), nil
	}
	// A tenant whose drop began passed its final look then: it is completed
	// whatever its status is now (its schema is gone).
	if !begun(pre.snap) {
		if err := eligible(id, locked.Record, locked.Found, pre.snap.Activity, c.Window, c.Now()); err != nil {
			return out, err
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
	deleted, err := timed(c, "delete_control_plane_rows", func() ([]controlplane.TableRows, error) {
		return locked.PrepareDelete(ctx, entry)
	})
	if err != nil {
		return out, err
	}
	if err := c.afterStep.after("control-plane-prepared"); err != nil {
		return out, err
	}
	dropChecks := dataplane.DropChecks{
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
	}
	committed := func(shard string, d time.Duration) {
		longest[shard] = max(longest[shard], d)
		if p := c.Pacers[shard]; p != nil {
			p.Observe(d)
		}
	}
	drop, err := timed(c, "drop_schema", func() (dataplane.DropResult, error) {
		return dropAll(ctx, pre.copies, dropChecks, committed, c.shardTimer("drop_schema"))
	})
	var nd *notDrainedError
	if errors.As(err, &nd) {
		return c.notDrained(out, dc, rec, nd.drain, c.Now()), nil
	}
	if err != nil {
		return out, err
	}
	if err := c.afterStep.after("dropped"); err != nil {
		return out, err
	}
	// Each database has its own large objects; shared counts those another
	// schema's file_content still names (kept).
	var shared int64
	for _, cp := range pre.copies {
		k, err := cp.t.KeepShared(ctx)
		if err != nil {
			return out, err
		}
		shared += k
		start := time.Now()
		n, err := timed(c, "unlink_large_objects", func() (int64, error) { return cp.t.UnlinkLargeObjects(ctx) })
		if observe := c.shardTimer("unlink_large_objects"); observe != nil {
			observe(cp.shard, time.Since(start))
		}
		c.observeStore("large_objects", map[string]int64{"objects": n}, err)
		if err != nil {
			return out, err
		}
	}
	releasePacers()
	outside, err := c.removeElsewhere(ctx, pre.copies)
	if err != nil {
		return out, err
	}
	if err := locked.Alive(ctx); err != nil {
		return out, err
	}
	public, err := timed(c, "delete_public_rows", func() (dataplane.PublicRows, error) { return t.DeletePublicRows(ctx) })
	if err != nil {
		return out, err
	}
	if err := c.afterStep.after("public-rows-deleted"); err != nil {
		return out, err
	}
	done, err := records(ctx, pre.copies)
	if err != nil {
		return out, err
	}
	if err := c.noNewCopies(ctx, id, pre.copies); err != nil {
		return out, err
	}
	facts := c.ledgerFacts(entry, done, c.Now())
	if c.Files != nil {
		// Kept listed until then, they are counted on whichever attempt ends.
		facts.StoresRemoved["s3_record_keys_outside_prefix_left"] = outside
	}
	if err := locked.Finish(ctx, facts); err != nil {
		return out, err
	}
	if err := c.afterStep.after("control-plane-deleted"); err != nil {
		return out, err
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
			rec.Evidence(c.Now()), publicRows, strings.Join(counts, ", "))
	}
	if done.LargeObjectsUnlinked > 0 {
		reason += fmt.Sprintf("; %d large objects (stored files)", done.LargeObjectsUnlinked)
	}
	if shared > 0 {
		reason += fmt.Sprintf(" (%d large objects another schema's file_content still names were not unlinked: left for review)", shared)
	}
	if c.Files != nil {
		reason += fmt.Sprintf("; S3: %d objects, %d bytes", done.Removed.S3Objects, done.Removed.S3Bytes)
		if outside > 0 {
			reason += fmt.Sprintf(" (%d object keys of its file records lie outside its prefix: left for review)", outside)
		}
	}
	if c.Keys != nil {
		reason += fmt.Sprintf("; Redis: %d keys, %d memberships", done.Removed.RedisKeys, done.Removed.RedisMemberships)
	}
	if c.sharded() {
		reason += "; shards checked: " + shardList(pre.copies)
		if len(pre.skipped) > 0 {
			reason += "; not reachable, not checked for a copy: " + strings.Join(pre.skipped, ", ")
		}
	}
	out.Events = []tenant.Event{event(dc, rec, tenant.OutcomeCleaned, reason)}
	return out, nil
}

// removeElsewhere removes the tenant from its other stores, each configured
// one in turn, and adds what each removed to the tenant's record (so that
// the ledger counts every attempt's). It runs after the drop, before the
// control plane commits: a store that fails or cannot be reached leaves the
// tenant uncleaned, and the redelivery does it again (both removals are
// idempotent). It returns how many object keys of the tenant's file records
// lie outside its prefix and are still there (left for review).
func (c *Cleaner) removeElsewhere(ctx context.Context, copies []shardCopy) (outside int64, err error) {
	t := copies[0].t // the catalog's session: what was removed is recorded there
	if c.Files != nil {
		var keys []string
		for _, cp := range copies { // each copy's file records, listed by its drop
			k, err := cp.t.FileKeys(ctx)
			if err != nil {
				return 0, err
			}
			keys = append(keys, k...)
		}
		slices.Sort(keys)
		keys = slices.Compact(keys)
		r, err := timed(c, "remove_s3_files", func() (filestore.Removed, error) { return c.Files.RemoveTenant(ctx, t.ID(), keys) })
		c.observeStore("s3", map[string]int64{"objects": r.Objects, "bytes": r.Bytes}, err)
		done := ""
		if err == nil {
			done, err = c.Files.Prefix(t.ID())
		}
		if rerr := recordRemoved(ctx, t, dataplane.Removed{S3Objects: r.Objects, S3Bytes: r.Bytes}, done); rerr != nil && err == nil {
			err = rerr
		}
		for _, cp := range copies[1:] { // their file keys, listed by their drops
			if err == nil {
				err = recordRemoved(ctx, cp.t, dataplane.Removed{}, done)
			}
		}
		if err != nil {
			return 0, err
		}
		outside = r.OutsidePresent
	}
	if c.Keys != nil {
		r, err := timed(c, "remove_redis_keys", func() (rediskeys.Removed, error) { return c.Keys.RemoveTenant(ctx, t.ID()) })
		c.observeStore("redis", map[string]int64{"keys": r.Keys, "memberships": r.Memberships}, err)
		if rerr := recordRemoved(ctx, t, dataplane.Removed{RedisKeys: r.Keys, RedisMemberships: r.Memberships}, ""); rerr != nil && err == nil {
			err = rerr
		}
		if err != nil {
			return 0, err
		}
	}
	return outside, nil
}

// recordRemoved records what a store's removal removed even when the
// attempt was cancelled meanwhile (shutdown's grace ran out, the work was
// handed back): what was deleted is gone, and the next attempt will not
// find it to count it again.
func recordRemoved(ctx context.Context, t *dataplane.TenantSession, r dataplane.Removed, done string) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return t.RecordRemoved(rctx, r, done)
}

func (c *Cleaner) observeStore(store string, removed map[string]int64, err error) {
	if c.ObserveStore != nil {
		c.ObserveStore(store, removed, err)
	}
}

// Waiting is the outcome of a drained tenant that waits for a cap or a
// paused cleaner: the pause is recorded for status, the tenant reported
// with its outcome (capped, paused), and its drain check handed back until
// then (a tenant.ErrLater error).
func Waiting(out bus.Outcome, outcome tenant.Outcome, name, by string, until time.Time, reason string) (bus.Outcome, error) {
	out.Pause = &bus.Pause{Name: name, Pause: tenant.Pause{Kind: string(outcome), Reason: reason, Until: until, By: by}}
	out.Events = []tenant.Event{{TenantID: out.Tenant, Outcome: outcome, RequestedBy: out.RequestedBy, NextCheckAt: &until,
		Reason: "waiting: " + reason}}
	return out, tenant.Later(max(time.Until(until), time.Second), reason, nil)
}

// ledgerFacts completes the ledger entry with what the pipeline's record
// says the data-plane steps removed, over every attempt.
func (c *Cleaner) ledgerFacts(e controlplane.LedgerEntry, rec dataplane.Record, now time.Time) controlplane.LedgerEntry {
	if !rec.LastActivityAt.IsZero() {
		e.LastActivityAt = rec.LastActivityAt
	}
	e.SchemaExisted = rec.DropStarted()
	e.RelationsDropped = rec.RelationsDropped
	e.PublicRowsDeleted = rec.PublicRowsDeleted
	e.DropStartedAt, e.SchemaDroppedAt, e.PublicRowsDeletedAt = rec.DropStartedAt, rec.DropFinishedAt, rec.PublicRowsDeletedAt
	e.StoresRemoved = map[string]int64{"large_objects": rec.LargeObjectsUnlinked}
	if c.Files != nil {
		e.StoresRemoved["s3_objects"], e.StoresRemoved["s3_bytes"] = rec.Removed.S3Objects, rec.Removed.S3Bytes
	}
	if c.Keys != nil {
		e.StoresRemoved["redis_keys"], e.StoresRemoved["redis_memberships"] = rec.Removed.RedisKeys, rec.Removed.RedisMemberships
	}
	if !rec.DropStarted() {
		e.Evidence = rec.Evidence(now)
	}
	return e
}

// records reads the tenant's record on every copy and merges them (the
// record of its one database in a one-shard setup).
func records(ctx context.Context, copies []shardCopy) (dataplane.Record, error) {
	var recs []dataplane.Record
	for _, cp := range copies {
		r, err := cp.t.Record(ctx)
		if err != nil {
			return dataplane.Record{}, err
		}
		recs = append(recs, r)
	}
	if len(recs) == 1 {
		return recs[0], nil
	}
	return dataplane.MergeRecords(recs), nil
}

// shardTimer is ObserveShardStep for step, nil with one shard (or none set).
func (c *Cleaner) shardTimer(step string) func(shard string, took time.Duration) {
	if c.ObserveShardStep == nil || !c.sharded() {
		return nil
	}
	return func(shard string, took time.Duration) { c.ObserveShardStep(step, shard, took) }
}

// noNewCopies looks, right before the control plane commits, at the shards
// where preflight found nothing of the tenant: a schema of its name that
// appeared on one meanwhile (a move under way) would otherwise be left
// behind while the ledger says the tenant is cleaned. It is "later": the
// next attempt looks at every copy from the start. A shard that cannot be
// reached is skipped, as preflight skips it.
func (c *Cleaner) noNewCopies(ctx context.Context, id tenant.ID, copies []shardCopy) error {
	if !c.sharded() {
		return nil
	}
	for _, name := range c.shardNames(c.Rules) {
		if slices.ContainsFunc(copies, func(cp shardCopy) bool { return cp.shard == name }) {
			continue
		}
		store := c.Data
		if name != c.catalogName() {
			store = c.Shards[name]
		}
		exists, err := store.SchemaExists(ctx, id)
		if err != nil && ctx.Err() != nil {
			return err
		}
		if exists {
			return tenant.Later(time.Second, "a copy of its schema appeared on shard "+name+
				" while it was being cleaned: the tenant is looked at again from the start", nil)
		}
	}
	return nil
}
