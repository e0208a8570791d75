// Package analyzer finds the tenants to clean up: it goes through the tenant
// schemas of the data plane a chunk at a time, reads the tenants' status
// from the control plane and, for those that could be eligible, their
// activity, documents and users from the data plane in batches, applies the
// eligibility rule and groups the fleet the way the original analyze script
// reported it. A pass publishes the eligible tenants as cleanup candidates
// as it finds them and writes the candidate CSV.
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

// Report is the result of one analysis. It counts the tenants; Analyze
// keeps the candidates (with Analyzer.ReadAll every tenant too, Tenants),
// while a pass hands each candidate on as it finds it and keeps the
// candidate CSV's rows in bounded memory, so that what it holds does not
// grow with the fleet.
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
	// Withheld counts tenants that would be candidates on the copies read
	// but that have a copy not read: on a shard that failed before that
	// copy was read, or whose list was cut short before their name. Never
	// candidates this pass (the copy not read may be the one in use).
	Withheld int
	// ForReview lists tenants whose schema is gone but whose rows remain,
	// without evidence that a cleanup of theirs began (a schema renamed for
	// maintenance, a restore, another shard): never selected, left for an
	// operator to look at.
	ForReview []tenant.ID
	// InPipeline lists candidates this pipeline marked within
	// RepublishAfter: they are not published again. Analyze lists them; a
	// pass only counts them (InPipelineCount).
	InPipeline []tenant.ID
	// Shards counts, in a sharded fleet, the tenant schemas and candidates
	// of each shard (catalog first); nil with one shard.
	Shards []ShardCount
	// StrayCopies are tenant schemas found on a shard other than the one
	// public.tenant_shard (or the default) places the tenant on.
	StrayCopies []StrayCopy

	candidates     []Tenant
	keepCandidates bool
	// spool keeps a pass's candidates for the CSV (when they are not kept).
	spool      *candidateSpool
	eligible   int
	inPipeline int
	totals     [4][2]int64 // per Group: tenants, documents
	keepAll    bool
}

// add counts t in its group, and keeps it if it is a candidate (or every
// tenant is kept); a pass's candidate goes to the spool instead.
func (r *Report) add(t Tenant) error {
	r.Seen++
	r.totals[t.Group][0]++
	r.totals[t.Group][1] += t.Activity.Documents
	if r.keepAll {
		r.Tenants = append(r.Tenants, t)
	}
	if !t.Eligible {
		return nil
	}
	r.eligible++
	if t.InPipeline {
		r.inPipeline++
	}
	if !r.keepCandidates {
		return r.spool.add(t)
	}
	r.candidates = append(r.candidates, t)
	if t.InPipeline {
		r.InPipeline = append(r.InPipeline, t.ID)
	}
	return nil
}

// CandidateCount is the number of eligible tenants (those in the pipeline
// already included).
func (r *Report) CandidateCount() int { return r.eligible }

// InPipelineCount is the number of candidates in the pipeline already.
func (r *Report) InPipelineCount() int { return r.inPipeline }

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

// Candidates returns the eligible tenants, most documents first (kept by
// Analyze; a pass keeps none).
func (r *Report) Candidates() []Tenant {
	out := slices.Clone(r.candidates)
	slices.SortFunc(out, func(a, b Tenant) int { return byDocuments(a.ID, a.Activity.Documents, b.ID, b.Activity.Documents) })
	return out
}

// byDocuments orders candidates most documents first, then by tenant id.
func byDocuments(a tenant.ID, aDocs int64, b tenant.ID, bDocs int64) int {
	if aDocs != bDocs {
		if aDocs > bDocs {
			return -1
		}
		return 1
	}
	return strings.Compare(string(a), string(b))
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
	// Workers is the number of connections reading activity at once on
	// each shard (at most maxReaders).
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
		stats.Seen, stats.Candidates = r.Seen, r.CandidateCount()
	}
	if a.Observe != nil {
		a.Observe(ctx, stats)
	}
	return err
}

// pass analyses the fleet and publishes each candidate (not in the pipeline
// already) as soon as its chunk is judged, while the next chunks are read:
// the requests go out through a window, so that neither the candidates nor
// their requests are ever held all at once. The candidates' CSV rows go to a
// spool, from which the CSV is written, sorted, once the analysis is done.
// A failed publish stops the analysis; a failed analysis stops taking
// candidates, and the requests sent are still seen through.
func (a *Analyzer) pass(ctx context.Context, start time.Time) (*Report, error) {
	r := &Report{spool: newCandidateSpool(a.ReportDir)}
	defer r.spool.close()
	// What a request's log line says, until it is acknowledged (the
	// requests in the window and on their way to it).
	type logged struct {
		documents, users int64
		last             time.Time
	}
	var (
		mu                    sync.Mutex
		inFlight              = map[tenant.ID]logged{}
		published, duplicates int
	)
	reqs := make(chan tenant.Request, chunkTenants)
	actx, stopAnalysis := context.WithCancel(ctx)
	defer stopAnalysis()
	var pubErr error
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		pubErr = a.Bus.PublishRequestsFrom(ctx, reqs, func(p bus.Published) {
			mu.Lock()
			l := inFlight[p.Request.ID]
			delete(inFlight, p.Request.ID)
			mu.Unlock()
			if p.Duplicate {
				duplicates++
				return
			}
			published++
			a.Log.Info("candidate published", "tenant_id", p.Request.ID, "documents", l.documents,
				"users", l.users, "last_activity", formatTime(l.last))
		})
		if pubErr != nil {
			stopAnalysis()
		}
	}()
	err := a.analyze(actx, r, func(t Tenant) error {
		mu.Lock()
		inFlight[t.ID] = logged{documents: t.Activity.Documents, users: t.Activity.Users, last: t.Activity.Last()}
		mu.Unlock()
		select {
		case reqs <- tenant.Request{ID: t.ID, RequestedBy: "analyzer", RequestedAt: r.At}:
			return nil
		case <-actx.Done():
			return actx.Err()
		}
	})
	close(reqs)
	<-pubDone
	if pubErr != nil {
		return nil, fmt.Errorf("publish candidates (%d published): %w", published, pubErr)
	}
	if err != nil {
		return nil, fmt.Errorf("analysis: %w", err)
	}
	path, err := WriteCSVIn(a.ReportDir, a.InactiveDays, r)
	if err != nil {
		return r, err
	}
	PrintSummary(a.Out, r)
	fmt.Fprintf(a.Out, "published %d candidates (%d already published)\nreport: %s\n", published, duplicates, path)
	a.Log.Info("analysis pass done", "tenants", r.Seen, "candidates", r.CandidateCount(),
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
