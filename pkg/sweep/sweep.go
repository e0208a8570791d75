// Package sweep removes what cleaned tenants left behind in the stores
// outside their schemas: objects in the S3 file store, Redis keys and
// memberships, and large objects the cleaner listed but did not unlink.
// It is the past's counterpart of the cleaner's removal: for tenants
// cleaned before a store was configured (their ledger rows), and for
// tenants cleaned by the original scripts (their cleaned_tenants.csv).
//
// A sweep has two steps. Plan finds, with one pass over each store (a
// listing of the S3 folders, one SCAN of Redis), which of those tenants
// still have anything there, counts it and judges each one; Apply removes
// it, tenant by tenant. Nothing is removed of a tenant that still lives:
// one whose schema exists on the data plane, on any shard of a sharded
// fleet (or whose drop by this pipeline is under way), that has rows in the
// shared public tables (a live tenant,
// one placed on another shard, a half-done cleanup) or a control-plane
// tenant row, whatever its status. A tenant listed in an old CSV that was
// reactivated or never cleaned is refused. The judgement is made again
// right before each store's removal, under the tenant's advisory lock on
// the data plane, the one the cleaner takes, so that a sweep and a cleanup
// of the same tenant never overlap.
//
// What each store removes is decided by the store (pkg/filestore: the
// tenant's prefix PREFIX/TENANT_ID/, pkg/rediskeys: keys TENANT_ID:* and
// its memberships): never a prefix another tenant's id could match. Every
// removal is idempotent, so a sweep interrupted by a store that went away
// is completed by running it again. What each sweep removed is appended to
// tenant_cleanup.sweep_log in the control plane.
//
// Large objects: after DROP SCHEMA nothing ties a large object to a tenant
// (pg_largeobject holds neither a tenant id nor a path; the file_content
// rows that named them are gone). Only those the cleaner listed when it
// began a drop (tenant_cleanup.large_objects) can be attributed and are
// unlinked, on the shard whose list names them; the others are counted
// (Plan.UnattributedLargeObjects) and left.
package sweep

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/filestore"
	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Source says why a tenant is swept.
type Source string

// Sources of the tenants to sweep.
const (
	// FromLedger: the tenant has a row in tenant_cleanup.ledger.
	FromLedger Source = "ledger"
	// FromCSV: the tenant is only in a cleaned_tenants.csv.
	FromCSV Source = "csv"
)

// Sweeper sweeps the configured stores. Data and Control are required;
// Files and Keys are nil when that store is not configured.
type Sweeper struct {
	// Data is the data plane's catalog shard (the public tables); Shards
	// are the other shards of a sharded fleet, by name (none: one shard).
	// A tenant whose schema exists on any of them is refused, and each
	// one's listed large objects are unlinked there.
	Data    *dataplane.Store
	Shards  map[string]*dataplane.Store
	Control *controlplane.Store
	Files   *filestore.Store
	Keys    *rediskeys.Store
	// By names who sweeps, in the sweep log (e.g. tenantctl:ops@host).
	By string
	// LargeObjects, when set, makes Plan count the unattributed large
	// objects of the data plane (a read of every file_content table).
	LargeObjects bool
}

// Item is one tenant that still has something in a store.
type Item struct {
	ID     tenant.ID
	Source Source
	// CleanedAt is the ledger's cleaned_at (zero for FromCSV).
	CleanedAt time.Time
	// S3Objects counts its objects under its prefix; RedisKeys its keys
	// and memberships; LargeObjects the large objects the cleaner listed
	// for it and did not unlink, on every shard.
	S3Objects, RedisKeys, LargeObjects int64
	// Refused says why it must not be swept ("" when it may be).
	Refused string
	// listedOn counts LargeObjects per shard ("" is the catalog, Data).
	listedOn map[string]int64
}

// shard is one data-plane database of the sweep: its name in Shards, ""
// for Data.
type shard struct {
	name  string
	store *dataplane.Store
}

// shards are Data, then Shards by name.
func (s *Sweeper) shards() []shard {
	out := []shard{{"", s.Data}}
	for _, name := range slices.Sorted(maps.Keys(s.Shards)) {
		out = append(out, shard{name, s.Shards[name]})
	}
	return out
}

// on says where, in a sharded fleet, for the reasons given.
func (sh shard) on() string {
	if sh.name == "" {
		return "the data plane"
	}
	return "shard " + sh.name
}

// Plan is what a sweep would do.
type Plan struct {
	// Stores describes the stores looked at.
	Stores []string
	// Ledger and CSV count the tenants considered from each source (a
	// tenant in both counts as ledger).
	Ledger, CSV int
	// Items are the tenants with something left, by id.
	Items []Item
	// UnattributedLargeObjects counts large objects no tenant's rows and no
	// cleanup's list name (with Sweeper.LargeObjects; -1 otherwise).
	UnattributedLargeObjects int64
}

// Refused counts the items that may not be swept.
func (p *Plan) Refused() int {
	n := 0
	for _, it := range p.Items {
		if it.Refused != "" {
			n++
		}
	}
	return n
}

// Plan lists the tenants to consider (every ledger row, and csv, the ids
// of a cleaned_tenants.csv), finds those that still have anything in a
// store, counts it and judges each one. It removes nothing.
func (s *Sweeper) Plan(ctx context.Context, csv []tenant.ID) (*Plan, error) {
	p := &Plan{UnattributedLargeObjects: -1}
	targets := map[tenant.ID]Item{}
	ledger, err := s.Control.Ledger(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range ledger {
		id, err := tenant.ParseID(string(e.ID))
		if err != nil {
			continue // tenantctl verify reports invalid ids; never used here
		}
		targets[id] = Item{ID: id, Source: FromLedger, CleanedAt: e.CleanedAt}
	}
	p.Ledger = len(targets)
	for _, id := range csv {
		if _, ok := targets[id]; !ok {
			targets[id] = Item{ID: id, Source: FromCSV}
			p.CSV++
		}
	}

	listed := map[string]map[string]int64{} // tenant id as stored → shard → count
	for _, sh := range s.shards() {
		on, err := sh.store.ListedLargeObjects(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sh.on(), err)
		}
		for key, n := range on {
			if listed[key] == nil {
				listed[key] = map[string]int64{}
			}
			listed[key][sh.name] = n
		}
	}
	found := map[tenant.ID]bool{}
	for key := range listed {
		if id, err := tenant.ParseID(key); err == nil {
			found[id] = true
		}
	}
	var keys rediskeys.Inventory
	if s.Files != nil {
		p.Stores = append(p.Stores, s.Files.Describe())
		folders, err := s.Files.Folders(ctx)
		if err != nil {
			return nil, err
		}
		for _, f := range folders {
			if id, err := tenant.ParseID(f); err == nil {
				found[id] = true
			}
		}
	}
	if s.Keys != nil {
		p.Stores = append(p.Stores, s.Keys.Describe())
		if keys, err = s.Keys.Inventory(ctx); err != nil {
			return nil, err
		}
		for _, m := range []map[string]int64{keys.Keys, counts(keys.Gated), counts(keys.Active)} {
			for key := range m {
				if id, err := tenant.ParseID(key); err == nil {
					found[id] = true
				}
			}
		}
	}

	if len(s.Shards) == 0 {
		p.Stores = append(p.Stores, "the large objects the cleaner listed (data plane)")
	} else {
		names := []string{"the catalog"}
		for _, sh := range s.shards()[1:] {
			names = append(names, sh.name)
		}
		p.Stores = append(p.Stores, "the large objects the cleaner listed (every shard: "+strings.Join(names, ", ")+")")
	}
	for _, id := range slices.Sorted(maps.Keys(found)) {
		it, ok := targets[id]
		if !ok {
			continue
		}
		it.listedOn = listed[string(id)]
		for _, n := range it.listedOn {
			it.LargeObjects += n
		}
		it.RedisKeys = keys.Count(string(id))
		if s.Files != nil {
			if it.S3Objects, err = s.Files.Leftovers(ctx, id); err != nil {
				return nil, err
			}
		}
		if it.S3Objects+it.RedisKeys+it.LargeObjects == 0 {
			continue
		}
		if it.Refused, err = s.refusal(ctx, id, it.Source); err != nil {
			return nil, err
		}
		p.Items = append(p.Items, it)
	}
	if s.LargeObjects {
		p.UnattributedLargeObjects = 0
		for _, sh := range s.shards() {
			n, err := sh.store.UnattributedLargeObjects(ctx)
			if err != nil {
				return nil, err
			}
			p.UnattributedLargeObjects += n
		}
	}
	return p, nil
}

func counts(set map[string]bool) map[string]int64 {
	m := make(map[string]int64, len(set))
	for k := range set {
		m[k] = 1
	}
	return m
}

// refusal says why the tenant must not be swept now ("" when it may be):
// it still lives, on the data plane or the control plane, or its cleanup by
// this pipeline is under way.
func (s *Sweeper) refusal(ctx context.Context, id tenant.ID, source Source) (string, error) {
	dropStarted := false
	for _, sh := range s.shards() {
		p, err := sh.store.Presence(ctx, id)
		if err != nil {
			return "", err
		}
		switch {
		case p.SchemaExists:
			return "its schema exists on " + sh.on() + ": a live tenant", nil
		case p.DropUnderway:
			return "this pipeline's drop of it is under way: the cleaner removes its stores itself", nil
		case p.PublicRows > 0:
			return fmt.Sprintf("it has %d rows in the shared public tables (a live tenant, one on another shard, "+
				"or a half-done cleanup: see tenantctl verify)", p.PublicRows), nil
		}
		dropStarted = dropStarted || p.Record.DropStarted()
	}
	rec, found, err := s.Control.Tenant(ctx, id)
	if err != nil {
		return "", err
	}
	if found {
		return fmt.Sprintf("it has a control-plane tenant row (status %s): not cleaned", tenant.QuoteInput(rec.Status)), nil
	}
	cleaned, err := s.Control.Cleaned(ctx, []tenant.ID{id})
	if err != nil {
		return "", err
	}
	switch {
	case source == FromLedger && !cleaned[id]:
		return "its ledger row is gone since the plan", nil
	case !cleaned[id] && dropStarted:
		return "this pipeline began its cleanup and has not finished it: the cleaner completes it (tenantctl status)", nil
	}
	return "", nil
}

// Outcome is what Apply did with one tenant.
type Outcome string

// Outcomes of Apply.
const (
	Swept   Outcome = "swept"   // every configured store holds nothing of it now
	Refused Outcome = "refused" // it still lives (Result.Reason): nothing removed
	Busy    Outcome = "busy"    // the cleaner is at work on it: nothing removed; run again later
	Failed  Outcome = "failed"  // a store or a database failed (Result.Err); what was removed is counted
	Skipped Outcome = "skipped" // not attempted: an earlier tenant found a store unavailable
)

// Removed counts what was removed of one tenant.
type Removed struct {
	S3Objects, S3Bytes          int64
	RedisKeys, RedisMemberships int64
	LargeObjects                int64
}

func (r Removed) log() map[string]int64 {
	return map[string]int64{"s3_objects": r.S3Objects, "s3_bytes": r.S3Bytes, "redis_keys": r.RedisKeys,
		"redis_memberships": r.RedisMemberships, "large_objects": r.LargeObjects}
}

// Result is what Apply did with one item.
type Result struct {
	Item
	Outcome Outcome
	// Reason is why it was refused or skipped.
	Reason  string
	Removed Removed
	Err     error
}

// ErrStopped is wrapped by Apply's error when it stopped early because a
// store could not be reached: running the sweep again continues.
var ErrStopped = errors.New("sweep stopped")

// Apply sweeps the plan's items one tenant at a time, and calls progress
// (when set) after each with its result. Refused items are left as they
// are. For each other one, under the tenant's advisory lock, it judges the
// tenant again, then, judging again before each store, removes its S3
// objects, its Redis keys and memberships and its listed large objects,
// and appends what it removed to the sweep log. When a store cannot be
// reached (tenant.ErrUnavailable) the remaining tenants are skipped and the
// error wraps ErrStopped; other failures are reported in their Result and
// the sweep goes on.
func (s *Sweeper) Apply(ctx context.Context, p *Plan, progress func(done int, r Result)) ([]Result, error) {
	if err := s.sane(ctx); err != nil {
		return nil, err
	}
	if err := s.Control.EnsureSweepLog(ctx); err != nil {
		return nil, err
	}
	results := make([]Result, 0, len(p.Items))
	var stop error
	for i, it := range p.Items {
		r := Result{Item: it}
		switch {
		case ctx.Err() != nil:
			return results, ctx.Err()
		case stop != nil:
			r.Outcome, r.Reason = Skipped, "not attempted: "+stop.Error()
		case it.Refused != "":
			r.Outcome, r.Reason = Refused, it.Refused
		default:
			r = s.sweep(ctx, it)
			if r.Err != nil && errors.Is(r.Err, tenant.ErrUnavailable) {
				stop = r.Err
			}
		}
		results = append(results, r)
		if progress != nil {
			progress(i+1, r)
		}
	}
	if stop != nil {
		return results, fmt.Errorf("%w: %w", ErrStopped, stop)
	}
	return results, nil
}

// ErrEmptyFleet is returned by Apply when the data plane holds no tenant
// schema or the control plane no tenant: databases that are not the fleet's
// (a wrong URL, a fresh restore), against which every tenant would look gone.
var ErrEmptyFleet = errors.New("no tenant at all")

// sane refuses to sweep against a data plane or control plane without any
// tenant.
func (s *Sweeper) sane(ctx context.Context) error {
	data := false
	for _, sh := range s.shards() {
		has, err := sh.store.HasTenants(ctx)
		if err != nil {
			return err
		}
		data = data || has
	}
	control, err := s.Control.HasTenants(ctx)
	if err != nil {
		return err
	}
	switch {
	case !data:
		return fmt.Errorf("%w on the data plane (no schema named tenant_…): is DATA_PLANE_DATABASE_URL the fleet's? "+
			"Against it every tenant would look gone; nothing was removed", ErrEmptyFleet)
	case !control:
		return fmt.Errorf("%w in the control plane (no tenant row): is it the fleet's? "+
			"Against it every tenant would look gone; nothing was removed", ErrEmptyFleet)
	}
	return nil
}

// busyReason is why a tenant whose lock is taken is not swept now.
const busyReason = "the cleaner (or another sweep) is at work on it: run the sweep again later"

// sweep sweeps one tenant.
func (s *Sweeper) sweep(ctx context.Context, it Item) Result {
	r := Result{Item: it}
	locked, err := s.Data.Lock(ctx, it.ID)
	if errors.Is(err, dataplane.ErrBusy) {
		r.Outcome, r.Reason = Busy, busyReason
		return r
	}
	if err != nil {
		r.Outcome, r.Err = Failed, err
		return r
	}
	defer locked.Release()
	removing := false // something was attempted: log it
	err = s.steps(ctx, it, locked, &r, &removing)
	switch {
	case err != nil && r.Outcome == Refused:
		// judged alive again: nothing (more) is removed
	case errors.Is(err, dataplane.ErrBusy):
		// its lock on another shard is taken
		r.Outcome, r.Reason = Busy, busyReason
	case err != nil:
		r.Outcome, r.Err = Failed, err
	default:
		r.Outcome = Swept
	}
	if removing || r.Err != nil {
		e := controlplane.SweepEntry{ID: it.ID, SweptBy: s.By, Source: string(it.Source), Removed: r.Removed.log(),
			Complete: r.Outcome == Swept}
		switch {
		case r.Err != nil:
			e.Error = r.Err.Error()
		case r.Outcome == Refused:
			e.Error = "refused: " + r.Reason
		}
		if lerr := s.Control.LogSweep(context.WithoutCancel(ctx), e); lerr != nil && r.Err == nil {
			r.Outcome, r.Err = Failed, lerr
		}
	}
	return r
}

// errRefused stops the steps of a tenant judged alive.
var errRefused = errors.New("refused")

func (s *Sweeper) steps(ctx context.Context, it Item, locked *dataplane.TenantSession, r *Result, removing *bool) error {
	judge := func() error {
		why, err := s.refusal(ctx, it.ID, it.Source)
		if err != nil {
			return err
		}
		if why != "" {
			r.Outcome, r.Reason = Refused, why
			return errRefused
		}
		return nil
	}
	if s.Files != nil {
		if err := judge(); err != nil {
			return err
		}
		*removing = true
		// No record keys: the tenant's file records went with its schema,
		// and a key outside its prefix is never deleted anyway.
		fr, err := s.Files.RemoveTenant(ctx, it.ID, nil)
		r.Removed.S3Objects, r.Removed.S3Bytes = fr.Objects, fr.Bytes
		if err != nil {
			return err
		}
	}
	if s.Keys != nil {
		if err := judge(); err != nil {
			return err
		}
		*removing = true
		kr, err := s.Keys.RemoveTenant(ctx, it.ID)
		r.Removed.RedisKeys, r.Removed.RedisMemberships = kr.Keys, kr.Memberships
		if err != nil {
			return err
		}
	}
	for _, sh := range s.shards() {
		if it.listedOn[sh.name] == 0 {
			continue
		}
		if err := judge(); err != nil {
			return err
		}
		named, err := sh.store.ListedStillNamed(ctx, it.ID)
		if err != nil {
			return err
		}
		if len(named) > 0 {
			r.Outcome = Refused
			r.Reason = fmt.Sprintf("%d of the large objects listed for it on %s (e.g. oid %d) are named by a schema's file_content "+
				"(another tenant's file?): none of them unlinked; check by hand", len(named), sh.on(), named[0])
			return errRefused
		}
		*removing = true
		n, err := s.unlink(ctx, sh, it.ID, locked)
		r.Removed.LargeObjects += n
		if err != nil {
			return err
		}
	}
	return nil
}

// unlink unlinks the large objects listed for the tenant on sh, under its
// lock there (locked, on the catalog, is the lock already held).
func (s *Sweeper) unlink(ctx context.Context, sh shard, id tenant.ID, locked *dataplane.TenantSession) (int64, error) {
	if sh.name == "" {
		return locked.UnlinkLargeObjects(ctx)
	}
	t, err := sh.store.Lock(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", sh.on(), err)
	}
	defer t.Release()
	return t.UnlinkLargeObjects(ctx)
}
