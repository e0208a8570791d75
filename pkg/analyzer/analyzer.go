// Package analyzer finds the tenants to clean up: it reads every tenant
// schema's activity, documents and users from the data plane in batches, the
// tenants' status from the control plane, applies the eligibility rule and
// groups the fleet the way the original analyze script reported it. A pass
// publishes the eligible tenants as cleanup candidates and writes the
// candidate CSV.
package analyzer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Group is one line of the summary.
type Group int

// The summary groups, in the order the original script printed them.
const (
	GroupInactive     Group = iota // gated and inactive: the candidates
	GroupActiveEarly               // gated, last active 30 days to the window ago
	GroupActiveRecent              // gated, active in the last 30 days
	GroupOther                     // everyone else
)

// maxReaders caps the connections reading activity at once. Each read is
// pipelined (50 tenants per round trip), so one connection already keeps a
// server core busy; the cost of a tenant's read is PostgreSQL opening its
// tables for the first time in the session (relation cache, catalog and
// index pages). On the 2-core bench machine a third and fourth connection
// made the pass slower (they contend for the same buffers and catalog
// pages), and the analyzer should not take every core of a data plane that
// serves traffic.
const maxReaders = 2

// RepublishAfter is how long after its latest marking a candidate is
// published again (its drain checks are scheduled meanwhile; a stuck tenant
// is tried again after this). The pipeline's own record of the marking
// decides, not anything a publisher on the bus can influence.
const RepublishAfter = 7 * 24 * time.Hour

// recentDays is the "this month" boundary of the summary.
const recentDays = 30

// Tenant is one tenant as the analysis sees it.
type Tenant struct {
	ID             tenant.ID
	SchemaExists   bool
	InControlPlane bool
	Status         string
	CreatedAt      time.Time
	Activity       dataplane.Activity
	Eligible       bool
	// InPipeline is true for a candidate this pipeline marked within
	// RepublishAfter (it is not published again).
	InPipeline bool
	// Reason says why the tenant is not eligible.
	Reason string
	Group  Group
	// Shards are the shards its schema was found on (a sharded fleet;
	// several while it is being moved).
	Shards []string
}

// Report is the result of one analysis. It keeps the candidates and counts
// the rest, so that its size follows the candidates, not the fleet; with
// Analyzer.ReadAll it also keeps every tenant (Tenants).
type Report struct {
	At           time.Time
	InactiveDays int
	// Seen counts the tenants analysed: every tenant schema, plus gated
	// interrupted cleanups.
	Seen int
	// Tenants are all of them, by tenant id: only with Analyzer.ReadAll.
	Tenants []Tenant
	// SkippedSchemas are tenant_-like schema names that are not valid ids.
	SkippedSchemas []string
	// NotHere counts control-plane tenants with neither a schema nor public
	// rows on this data plane.
	NotHere int
	// Unreadable lists tenants the pass skipped: a schema it could not read
	// in time (a lock held on one of its tables), a control-plane row it
	// cannot judge (a NULL created_at). One bad tenant never stops the pass.
	Unreadable []Unreadable
	// ForReview lists tenants whose schema is gone but whose rows remain,
	// without evidence that a cleanup of theirs began (a schema renamed for
	// maintenance, a restore, another shard): never selected, left for an
	// operator to look at.
	ForReview []tenant.ID
	// InPipeline lists candidates this pipeline marked within
	// RepublishAfter: they are not published again.
	InPipeline []tenant.ID
	// Shards counts, in a sharded fleet, the tenant schemas and candidates
	// of each shard (catalog first); nil with one shard.
	Shards []ShardCount
	// StrayCopies are tenant schemas found on a shard other than the one
	// public.tenant_shard (or the default) places the tenant on.
	StrayCopies []StrayCopy

	candidates []Tenant
	totals     [4][2]int64 // per Group: tenants, documents
	keepAll    bool
}

// add counts t in its group, and keeps it if it is a candidate (or every
// tenant is kept).
func (r *Report) add(t Tenant) {
	r.Seen++
	r.totals[t.Group][0]++
	r.totals[t.Group][1] += t.Activity.Documents
	if t.Eligible {
		r.candidates = append(r.candidates, t)
		if t.InPipeline {
			r.InPipeline = append(r.InPipeline, t.ID)
		}
	}
	if r.keepAll {
		r.Tenants = append(r.Tenants, t)
	}
}

// ShardCount is one shard's line of the summary.
type ShardCount struct {
	Name                string
	Schemas, Candidates int
	Documents           int64
	// Unreachable says why the shard could not be read this pass ("" when
	// it was): its tenants are not judged until it is back.
	Unreachable string
}

// StrayCopy is a tenant schema on a shard it is not placed on.
type StrayCopy struct {
	ID               tenant.ID
	Shard, Placement string
}

// Unreadable is a tenant a pass skipped, and why.
type Unreadable struct {
	ID     tenant.ID
	Reason string
}

// Candidates returns the eligible tenants, most documents first.
func (r *Report) Candidates() []Tenant {
	out := slices.Clone(r.candidates)
	slices.SortFunc(out, func(a, b Tenant) int {
		if a.Activity.Documents != b.Activity.Documents {
			return int(b.Activity.Documents - a.Activity.Documents)
		}
		return strings.Compare(string(a.ID), string(b.ID))
	})
	return out
}

// Analyzer reads both planes and, in a pass, publishes the candidates.
type Analyzer struct {
	// Data is the data plane's catalog shard; Shards its other shards by
	// name (nil with one shard), CatalogShard and DefaultShard the names of
	// the catalog and of the shard of tenants without a tenant_shard row
	// ("" : "default" and the catalog).
	Data                       *dataplane.Store
	Shards                     map[string]*dataplane.Store
	CatalogShard, DefaultShard string
	Control                    *controlplane.Store
	// Bus is where a pass publishes candidates.
	Bus          *bus.Bus
	InactiveDays int
	// ReportDir is where a pass writes the candidate CSV.
	ReportDir string
	// Workers is the number of data-plane connections reading at once (at
	// most maxReaders).
	Workers int
	// Out receives the printed summary of a pass.
	Out io.Writer
	Now func() time.Time
	Log *slog.Logger
	// RetryDelay is Run's first wait after a failed pass; it doubles after
	// each further failure, up to the interval (0: defaultRetryDelay).
	RetryDelay time.Duration
	// ReadAll reads every tenant schema's activity (tenantctl report's
	// statistics need them all). Otherwise only the schemas of tenants the
	// control plane says could be eligible are read: GATED_ACCESS and
	// created before the window; everyone else is grouped without a read.
	ReadAll bool
	// Observe, when set, is called after every pass (metrics, the last pass
	// recorded for tenantctl status).
	Observe func(ctx context.Context, s PassStats)
}

// defaultRetryDelay is the first wait after a failed pass.
const defaultRetryDelay = 30 * time.Second

// Analyze reads both planes and applies the rule; it changes nothing.
func (a *Analyzer) Analyze(ctx context.Context) (*Report, error) {
	now := a.Now()
	window := tenant.Window(a.InactiveDays)
	// The two planes are listed at once; the public rows are read after the
	// activity, so that a tenant whose schema is dropped meanwhile is seen
	// as an interrupted cleanup only if its public rows outlive the read.
	var (
		control    map[tenant.ID]controlplane.Record
		controlErr error
		wg         sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		control, _, controlErr = a.Control.Tenants(ctx)
	}()
	reads := a.listShards(ctx)
	wg.Wait()
	if reads[0].err != nil {
		return nil, reads[0].err
	}
	if controlErr != nil {
		return nil, controlErr
	}
	// A schema of a tenant's name is read whatever the record says: a drop
	// under way renamed the schema it drops, so one of the tenant's name is
	// another copy (restored, recreated), as alive as any. Only a tenant
	// the control plane says could be eligible needs its activity.
	if err := a.readActivities(ctx, reads, func(sc dataplane.SchemaInfo) bool {
		rec, found := control[sc.ID]
		return a.ReadAll || mayBeEligible(rec, found, now, window)
	}); err != nil {
		return nil, err
	}
	withPublicRows, err := a.Data.TenantsWithPublicRows(ctx)
	if err != nil {
		return nil, err
	}
	placements := map[tenant.ID]string{}
	if a.sharded() {
		if placements, err = a.Data.Placements(ctx); err != nil {
			return nil, err
		}
	}

	r := &Report{At: now, InactiveDays: a.InactiveDays, SkippedSchemas: reads[0].skipped, keepAll: a.ReadAll}
	recordOf := func(id tenant.ID) dataplane.Record {
		var recs []dataplane.Record
		for _, sr := range reads {
			recs = append(recs, sr.records[id])
		}
		return dataplane.MergeRecords(recs)
	}
	counts := map[string]*ShardCount{}
	for _, sr := range reads {
		c := &ShardCount{Name: sr.name}
		if sr.err != nil {
			c.Unreachable = sr.err.Error()
		}
		counts[sr.name] = c
		if a.sharded() {
			r.Shards = append(r.Shards, ShardCount{}) // filled below
		}
		if sr.name != reads[0].name {
			r.SkippedSchemas = append(r.SkippedSchemas, sr.skipped...)
		}
	}
	unreachable := func() []string {
		var names []string
		for _, sr := range reads {
			if sr.err != nil {
				names = append(names, sr.name)
			}
		}
		return names
	}()
	add := func(t Tenant, copies []shardCopy) {
		t = classify(t, control, now, window)
		rec := recordOf(t.ID)
		if t.Eligible && rec.Marked() && now.Sub(rec.LastMarkedAt) < RepublishAfter && !rec.DropStarted() && t.SchemaExists &&
			!slices.ContainsFunc(copies, func(c shardCopy) bool { return c.record.AboutAnotherCopy(c.info.OID) }) {
			t.InPipeline = true
		}
		for _, c := range copies {
			counts[c.shard].Schemas++
			counts[c.shard].Documents += c.activity.Activity.Documents
			if t.Eligible {
				counts[c.shard].Candidates++
			}
		}
		r.add(t)
	}
	seen := make(map[tenant.ID]bool)
	byID := map[tenant.ID][]shardCopy{}
	var ids []tenant.ID
	for _, sr := range reads {
		for _, c := range sr.copies {
			if _, ok := byID[c.info.ID]; !ok {
				ids = append(ids, c.info.ID)
			}
			byID[c.info.ID] = append(byID[c.info.ID], c)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		seen[id] = true
		var (
			copies     []shardCopy
			unreadable string
		)
		for _, c := range byID[id] {
			switch {
			case c.activity.Gone:
				continue // dropped while we read it
			case c.activity.Unreadable != "" && unreadable == "":
				unreadable = c.activity.Unreadable
				if a.sharded() {
					unreadable = "shard " + c.shard + ": " + unreadable
				}
			}
			copies = append(copies, c)
		}
		if len(copies) == 0 {
			continue
		}
		if unreadable != "" {
			r.Unreadable = append(r.Unreadable, Unreadable{ID: id, Reason: unreadable})
			continue
		}
		t := Tenant{ID: id, SchemaExists: true}
		for _, c := range copies {
			t.Activity = dataplane.MergeActivity(t.Activity, c.activity.Activity)
			t.Shards = append(t.Shards, c.shard)
			if len(c.info.MissingTables) > 0 && t.Reason == "" {
				t.Reason = "schema lacks table(s) " + strings.Join(c.info.MissingTables, ", ")
				if a.sharded() {
					t.Reason += " (on shard " + c.shard + ")"
				}
			}
		}
		if len(copies) == 1 {
			t.Activity = copies[0].activity.Activity
		}
		if a.sharded() {
			placement := a.placement(placements[id])
			for _, c := range copies {
				if c.shard != placement {
					r.StrayCopies = append(r.StrayCopies, StrayCopy{ID: id, Shard: c.shard, Placement: placement})
				}
			}
			if !a.configured(placement) && t.Reason == "" {
				t.Reason = fmt.Sprintf("public.tenant_shard places it on shard %q, which is not configured: left alone", placement)
			}
		}
		add(t, copies)
	}
	// Interrupted cleanups: tenants whose schema is gone but whose public
	// rows remain on this data plane, and whose cleanup by this pipeline
	// began (or an operator confirmed it). Without that evidence a tenant is
	// never selected: it is listed for review. In a sharded fleet its
	// schema must be missing on every shard, and it must not be placed on a
	// shard that is not configured.
	for _, id := range withPublicRows {
		if seen[id] {
			continue
		}
		seen[id] = true
		t := Tenant{ID: id}
		placement := a.placement(placements[id])
		switch {
		case a.sharded() && !a.configured(placement):
			t.Reason = fmt.Sprintf("no schema on the configured shards, and public.tenant_shard places it on shard %q, "+
				"which is not configured: left for review", placement)
			r.ForReview = append(r.ForReview, id)
		case len(unreachable) > 0:
			r.Unreadable = append(r.Unreadable, Unreadable{ID: id, Reason: "no schema on the shards that answered, and shard(s) " +
				strings.Join(unreachable, ", ") + " could not be read: its schema may be there"})
			continue
		case recordOf(id).Evidence(now) == "":
			t.Reason = "schema gone, and nothing shows that a cleanup of it began: left for review"
			r.ForReview = append(r.ForReview, id)
		}
		add(t, nil)
	}
	if a.sharded() {
		for i, sr := range reads {
			r.Shards[i] = *counts[sr.name]
		}
	}
	for id, rec := range control {
		switch {
		case rec.Problem != "" && seen[id]:
			r.Unreadable = append(r.Unreadable, Unreadable{ID: id, Reason: rec.Problem})
		case !seen[id]:
			r.NotHere++
		}
	}
	slices.SortFunc(r.Unreadable, func(x, y Unreadable) int { return strings.Compare(string(x.ID), string(y.ID)) })
	slices.Sort(r.InPipeline)
	slices.SortFunc(r.Tenants, func(x, y Tenant) int { return strings.Compare(string(x.ID), string(y.ID)) })
	return r, nil
}

// shardRead is what a pass read of one shard.
type shardRead struct {
	name    string
	store   *dataplane.Store
	schemas []dataplane.SchemaInfo
	skipped []string
	records map[tenant.ID]dataplane.Record
	copies  []shardCopy
	// err is why the shard could not be read (the pass fails for the
	// catalog; another shard's tenants are left for the next pass).
	err error
}

// shardCopy is one tenant schema on one shard, as a pass read it.
type shardCopy struct {
	shard    string
	info     dataplane.SchemaInfo
	record   dataplane.Record
	activity dataplane.TenantActivity
}

func (a *Analyzer) sharded() bool { return len(a.Shards) > 0 }

func (a *Analyzer) catalogName() string {
	if a.CatalogShard == "" {
		return "default"
	}
	return a.CatalogShard
}

// placement is the shard a tenant_shard row (name; "" for none) places a
// tenant on.
func (a *Analyzer) placement(name string) string {
	switch {
	case name != "":
		return name
	case a.DefaultShard != "":
		return a.DefaultShard
	}
	return a.catalogName()
}

func (a *Analyzer) configured(name string) bool {
	_, ok := a.Shards[name]
	return ok || name == a.catalogName()
}

// listShards lists the tenant schemas and reads the records of every shard,
// the catalog first, the other shards at the same time.
func (a *Analyzer) listShards(ctx context.Context) []*shardRead {
	reads := []*shardRead{{name: a.catalogName(), store: a.Data}}
	var names []string
	for name := range a.Shards {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		reads = append(reads, &shardRead{name: name, store: a.Shards[name]})
	}
	var wg sync.WaitGroup
	for _, sr := range reads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sr.schemas, sr.skipped, sr.err = sr.store.ListTenantSchemas(ctx)
			if sr.err != nil {
				return
			}
			var recs []dataplane.TenantRecord
			if recs, sr.err = sr.store.Records(ctx); sr.err != nil {
				return
			}
			sr.records = make(map[tenant.ID]dataplane.Record, len(recs))
			for _, rec := range recs {
				if id, err := tenant.ParseID(rec.ID); err == nil {
					sr.records[id] = rec.Record
				}
			}
		}()
	}
	wg.Wait()
	return reads
}

// readActivities reads, on every shard that could be listed, the activity
// of the schemas want selects (the others are copies without a read); an
// error fails the pass on the catalog, and marks another shard unreachable.
func (a *Analyzer) readActivities(ctx context.Context, reads []*shardRead, want func(dataplane.SchemaInfo) bool) error {
	for _, sr := range reads {
		if sr.err != nil {
			continue
		}
		var toRead []dataplane.SchemaInfo
		for _, sc := range sr.schemas {
			if want(sc) {
				toRead = append(toRead, sc)
			}
		}
		activities, err := sr.store.Activities(ctx, toRead, min(a.Workers, maxReaders))
		if err != nil {
			if sr == reads[0] {
				return err
			}
			sr.err = err
			continue
		}
		next := 0 // activities are in the order of toRead, a subsequence of schemas
		for _, sc := range sr.schemas {
			c := shardCopy{shard: sr.name, info: sc, record: sr.records[sc.ID]}
			if next < len(activities) && activities[next].ID == sc.ID {
				c.activity = activities[next]
				next++
			}
			sr.copies = append(sr.copies, c)
		}
	}
	return nil
}

// mayBeEligible reports whether a tenant with control-plane row rec (found
// false: none) could be eligible, whatever its activity: the rule applied as
// if it had never been active.
func mayBeEligible(rec controlplane.Record, found bool, now time.Time, window time.Duration) bool {
	return tenant.Eligibility(rec.Facts(found, time.Time{}), now, window).Eligible
}

func classify(t Tenant, control map[tenant.ID]controlplane.Record, now time.Time, window time.Duration) Tenant {
	rec, found := control[t.ID]
	t.InControlPlane, t.Status, t.CreatedAt = found, rec.Status, rec.CreatedAt
	if t.Reason == "" {
		v := tenant.Eligibility(rec.Facts(found, t.Activity.Last()), now, window)
		t.Eligible, t.Reason = v.Eligible, v.Reason
	}
	last := t.Activity.Last()
	switch {
	case t.Eligible:
		t.Group = GroupInactive
	case t.Status != tenant.StatusGatedAccess || last.IsZero():
		t.Group = GroupOther
	case now.Sub(last) < recentDays*24*time.Hour:
		t.Group = GroupActiveRecent
	case now.Sub(last) < window:
		t.Group = GroupActiveEarly
	default:
		t.Group = GroupOther
	}
	return t
}

// PassStats is what one pass did, for Analyzer.Observe.
type PassStats struct {
	Started, Finished time.Time
	// Seen and Candidates are 0 when the analysis itself failed.
	Seen, Candidates int
	// Err is why the pass failed (nil: it succeeded).
	Err error
}

// Pass runs one analysis, publishes every candidate, writes the candidate
// CSV and prints the summary; then it calls Observe, when set, with what it
// did.
func (a *Analyzer) Pass(ctx context.Context) error {
	stats := PassStats{Started: time.Now()}
	r, err := a.pass(ctx, stats.Started)
	stats.Finished, stats.Err = time.Now(), err
	if r != nil {
		stats.Seen, stats.Candidates = r.Seen, len(r.Candidates())
	}
	if a.Observe != nil {
		a.Observe(ctx, stats)
	}
	return err
}

func (a *Analyzer) pass(ctx context.Context, start time.Time) (*Report, error) {
	r, err := a.Analyze(ctx)
	if err != nil {
		return nil, fmt.Errorf("analysis: %w", err)
	}
	candidates := r.Candidates()
	var reqs []tenant.Request
	byID := make(map[tenant.ID]*Tenant, len(candidates))
	for i := range candidates {
		t := &candidates[i]
		if t.InPipeline {
			continue
		}
		reqs = append(reqs, tenant.Request{ID: t.ID, RequestedBy: "analyzer", RequestedAt: r.At})
		byID[t.ID] = t
	}
	published, duplicates := 0, 0
	err = a.Bus.PublishRequests(ctx, reqs,
		func(p bus.Published) {
			if p.Duplicate {
				duplicates++
				return
			}
			published++
			t := byID[p.Request.ID]
			a.Log.Info("candidate published", "tenant_id", t.ID, "documents", t.Activity.Documents,
				"users", t.Activity.Users, "last_activity", formatTime(t.Activity.Last()))
		})
	if err != nil {
		return r, fmt.Errorf("publish candidates (%d of %d published): %w", published, len(candidates), err)
	}
	path, err := WriteCSVIn(a.ReportDir, a.InactiveDays, r)
	if err != nil {
		return r, err
	}
	PrintSummary(a.Out, r)
	fmt.Fprintf(a.Out, "published %d candidates (%d already published)\nreport: %s\n", published, duplicates, path)
	a.Log.Info("analysis pass done", "tenants", r.Seen, "candidates", len(candidates),
		"published", published, "already_published", duplicates, "report", path,
		"skipped_schemas", len(r.SkippedSchemas), "duration", time.Since(start).String())
	return r, nil
}

// Run runs a pass now and then every interval until ctx is cancelled. A
// failed pass is logged and retried after RetryDelay, doubling up to the
// interval while passes keep failing.
func (a *Analyzer) Run(ctx context.Context, interval time.Duration) error {
	first := a.RetryDelay
	if first <= 0 {
		first = defaultRetryDelay
	}
	retry := first
	for {
		wait := interval
		if err := a.Pass(ctx); err != nil && ctx.Err() == nil {
			// A failed pass (a database or the bastion away for a while) is
			// tried again soon, backing off up to the interval, so that one
			// failure does not cost a whole interval.
			wait = min(retry, interval)
			retry *= 2
			a.Log.Error("analysis pass failed; retrying", "error", err, "retry_in", wait.String(),
				"next", time.Now().Add(wait).UTC().Format(time.RFC3339))
		} else {
			retry = first
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
