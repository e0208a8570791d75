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
	Data    *dataplane.Store
	Control *controlplane.Store
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
	schemas, skipped, err := a.Data.ListTenantSchemas(ctx)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	if controlErr != nil {
		return nil, controlErr
	}
	records, err := a.Data.Records(ctx)
	if err != nil {
		return nil, err
	}
	recordOf := make(map[tenant.ID]dataplane.Record, len(records))
	for _, rec := range records {
		if id, err := tenant.ParseID(rec.ID); err == nil {
			recordOf[id] = rec.Record
		}
	}
	// A schema of a tenant's name is read whatever the record says: a drop
	// under way renamed the schema it drops, so one of the tenant's name is
	// another copy (restored, recreated), as alive as any. Only a tenant
	// the control plane says could be eligible needs its activity.
	oidOf := make(map[tenant.ID]int64, len(schemas))
	var toRead []dataplane.SchemaInfo
	for _, sc := range schemas {
		oidOf[sc.ID] = sc.OID
		if rec, found := control[sc.ID]; a.ReadAll || mayBeEligible(rec, found, now, window) {
			toRead = append(toRead, sc)
		}
	}
	activities, err := a.Data.Activities(ctx, toRead, min(a.Workers, maxReaders))
	if err != nil {
		return nil, err
	}
	withPublicRows, err := a.Data.TenantsWithPublicRows(ctx)
	if err != nil {
		return nil, err
	}

	r := &Report{At: now, InactiveDays: a.InactiveDays, SkippedSchemas: skipped, keepAll: a.ReadAll}
	add := func(t Tenant) {
		t = classify(t, control, now, window)
		if rec := recordOf[t.ID]; t.Eligible && rec.Marked() && now.Sub(rec.LastMarkedAt) < RepublishAfter &&
			!rec.DropStarted() && t.SchemaExists && !rec.AboutAnotherCopy(oidOf[t.ID]) {
			t.InPipeline = true
		}
		r.add(t)
	}
	seen := make(map[tenant.ID]bool, len(schemas))
	next := 0 // activities are in the order of toRead, a subsequence of schemas
	for _, sc := range schemas {
		seen[sc.ID] = true
		var ta dataplane.TenantActivity
		if next < len(activities) && activities[next].ID == sc.ID {
			ta = activities[next]
			next++
		}
		if ta.Gone {
			continue // dropped while we read it
		}
		if ta.Unreadable != "" {
			r.Unreadable = append(r.Unreadable, Unreadable{ID: sc.ID, Reason: ta.Unreadable})
			continue
		}
		t := Tenant{ID: sc.ID, SchemaExists: true, Activity: ta.Activity}
		if len(sc.MissingTables) > 0 {
			t.Reason = "schema lacks table(s) " + strings.Join(sc.MissingTables, ", ")
		}
		add(t)
	}
	// Interrupted cleanups: tenants whose schema is gone but whose public
	// rows remain on this data plane, and whose cleanup by this pipeline
	// began (or an operator confirmed it). Without that evidence a tenant is
	// never selected: it is listed for review.
	for _, id := range withPublicRows {
		if seen[id] {
			continue
		}
		seen[id] = true
		t := Tenant{ID: id}
		if recordOf[id].Evidence(now) == "" {
			t.Reason = "schema gone, and nothing shows that a cleanup of it began: left for review"
			r.ForReview = append(r.ForReview, id)
		}
		add(t)
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
