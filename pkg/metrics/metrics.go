// Package metrics holds the Prometheus metrics of one tenant-cleanup service
// and the small HTTP server that exposes them with the health endpoints:
//
//	/metrics  the Prometheus exposition of the service's registry
//	/healthz  200 "ok" while the process runs (liveness)
//	/readyz   200 "ready" when the service's dependencies answer, else 503 (readiness)
//
// Every metric is named tenant_cleanup_* and carries the constant label
// component="<analyzer|marker|cleaner>" (not "service", which Prometheus
// Operator sets to the Kubernetes Service of the scrape target). Each Metrics has a registry of its own
// (with the Go and process collectors), so tests and several services in one
// process never collide. A nil *Metrics is valid and records nothing.
package metrics

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The metric names, as they appear in the exposition (a histogram adds the
// _bucket, _sum and _count series to its name).
const (
	// TenantsTotal counts tenants, once each time one reaches an outcome
	// that ends or starts its cleanup: counter, label outcome (one of
	// TenantOutcomes: marked, cleaned, refused, stuck, held, dead). The
	// repeated progress reports (requested, draining, capped, paused) are
	// not tenants and are counted by EventsTotal only.
	TenantsTotal = "tenant_cleanup_tenants_total"
	// EventsTotal counts every outcome event reported: counter, label
	// outcome (also draining on every drain check, capped, paused, requested).
	EventsTotal = "tenant_cleanup_events_total"
	// AnalyzerPassDurationSeconds times the analyzer's passes: histogram.
	AnalyzerPassDurationSeconds = "tenant_cleanup_analyzer_pass_duration_seconds"
	// AnalyzerTenantsSeen is how many tenants the last pass looked at: gauge.
	AnalyzerTenantsSeen = "tenant_cleanup_analyzer_tenants_seen"
	// AnalyzerCandidates is how many of them were candidates: gauge.
	AnalyzerCandidates = "tenant_cleanup_analyzer_candidates"
	// AnalyzerLastSuccessTimestamp is when a pass last succeeded, in Unix
	// seconds (0: never): gauge.
	AnalyzerLastSuccessTimestamp = "tenant_cleanup_analyzer_last_success_timestamp_seconds"
	// AnalyzerPassFailuresTotal counts failed passes: counter.
	AnalyzerPassFailuresTotal = "tenant_cleanup_analyzer_pass_failures_total"
	// BuildInfo is 1, with the labels version, commit and goversion: gauge.
	BuildInfo = "tenant_cleanup_build_info"
	// DrainChecksTotal counts drain checks: counter, label result
	// (drained, not_drained, stuck, refused, error).
	DrainChecksTotal = "tenant_cleanup_drain_checks_total"
	// StepDurationSeconds times the steps of the pipeline: histogram, label step.
	StepDurationSeconds = "tenant_cleanup_step_duration_seconds"
	// ShardStepDurationSeconds times, in a sharded fleet only (it is
	// registered by SetShards with several shards: a cleaner of one shard
	// does not expose it), the per-tenant steps on one shard: histogram,
	// labels step and shard (a configured shard's name, else "other").
	ShardStepDurationSeconds = "tenant_cleanup_shard_step_duration_seconds"
	// TenantsInPhase is the number of tenants in each phase: gauge, label phase.
	TenantsInPhase = "tenant_cleanup_tenants_in_phase"
	// OldestTenantAgeSeconds is how long the oldest tenant of each phase has
	// been in it: gauge, label phase.
	OldestTenantAgeSeconds = "tenant_cleanup_oldest_tenant_age_seconds"
	// Ready is 1 when the last /readyz check passed, 0 otherwise: gauge.
	Ready = "tenant_cleanup_ready"
	// PaceLimit is how many drops the cleaner's pacer lets run at once
	// (0 while paused): gauge.
	PaceLimit = "tenant_cleanup_pace_limit"
	// PaceInFlight is the cleaner's drops running now: gauge.
	PaceInFlight = "tenant_cleanup_pace_in_flight"
	// PaceThrottled is 1 for the signal that throttles or pauses the drops
	// now (none when running at the limit): gauge, label reason.
	PaceThrottled = "tenant_cleanup_pace_throttled"
	// StoreRemovedTotal counts what the cleaner removed from the tenants'
	// other stores: counter, labels store (large_objects, s3, redis) and
	// unit (objects, bytes, keys, memberships).
	StoreRemovedTotal = "tenant_cleanup_store_removed_total"
	// StoreFailuresTotal counts removals from a store that failed (the
	// tenant waits and is retried): counter, label store.
	StoreFailuresTotal = "tenant_cleanup_store_failures_total"
)

// Names lists the names of every tenant_cleanup_* metric this package defines
// (for dashboards and the tests that check them).
func Names() []string {
	return []string{TenantsTotal, EventsTotal, DrainChecksTotal, StepDurationSeconds, ShardStepDurationSeconds, TenantsInPhase, OldestTenantAgeSeconds, Ready,
		PaceLimit, PaceInFlight, PaceThrottled, StoreRemovedTotal, StoreFailuresTotal, AnalyzerPassDurationSeconds,
		AnalyzerTenantsSeen, AnalyzerCandidates, AnalyzerLastSuccessTimestamp, AnalyzerPassFailuresTotal, BuildInfo}
}

// TenantOutcomes are the outcomes TenantsTotal counts: each is reached once
// per tenant and request.
var TenantOutcomes = []string{"marked", "cleaned", "refused", "stuck", "held", "dead"}

// ComponentLabel is the constant label naming the service.
const ComponentLabel = "component"

// DrainResults are the results DrainCheck is meant to be called with; their
// series exist (at 0) from the start so that rates are defined.
var DrainResults = []string{"drained", "not_drained", "stuck", "refused", "error"}

// StepBuckets are the step-duration histogram's upper bounds, in seconds:
// from 1ms to 10min.
var StepBuckets = []float64{
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10, 30, 60, 120, 300, 600,
}

// Metrics are the metrics of one service. Create it with New; its methods
// are safe for concurrent use, and do nothing on a nil *Metrics.
type Metrics struct {
	service  string
	registry *prometheus.Registry
	tenants  *prometheus.CounterVec
	events   *prometheus.CounterVec
	drains   *prometheus.CounterVec
	steps    *prometheus.HistogramVec
	// shards are the configured shard names (SetShards): the only values
	// of the shard label, which keeps its cardinality bounded; shardSteps
	// is ShardStepDurationSeconds, registered with them.
	shardsMu   sync.Mutex
	shards     map[string]bool
	shardSteps *prometheus.HistogramVec
	// reg is the registerer with the service label, for shardSteps.
	reg     prometheus.Registerer
	inPhase *prometheus.GaugeVec
	oldest  *prometheus.GaugeVec
	ready   prometheus.Gauge
	paceLim *prometheus.GaugeVec
	paceRun *prometheus.GaugeVec
	paceWhy *prometheus.GaugeVec
	removed *prometheus.CounterVec
	failed  *prometheus.CounterVec
	pass    analyzerMetrics

	mu       sync.Mutex
	phases   map[string]bool // every phase SetPhases has seen, to reset the missing ones
	onScrape func(context.Context)
}

// New creates the metrics of service (analyzer, marker or cleaner) on a
// registry of its own, with the Go and process collectors and the build
// info; every series carries the label component=<service>.
func New(service string) *Metrics {
	reg := prometheus.NewRegistry()
	r := prometheus.WrapRegistererWith(prometheus.Labels{ComponentLabel: service}, reg)
	m := &Metrics{
		service:  service,
		registry: reg,
		tenants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: TenantsTotal,
			Help: "Tenants that reached an outcome: marked, cleaned, refused, stuck, held, dead (each tenant once per outcome and request).",
		}, []string{"outcome"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: EventsTotal,
			Help: "Outcome events reported, progress reports (draining on every drain check, capped, paused) included.",
		}, []string{"outcome"}),
		drains: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: DrainChecksTotal,
			Help: "Drain checks by result (drained, not_drained, stuck, refused, error).",
		}, []string{"result"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    StepDurationSeconds,
			Help:    "Duration of the pipeline's steps (analysis pass, mark, drain check, drop, ...).",
			Buckets: StepBuckets,
		}, []string{"step"}),
		inPhase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: TenantsInPhase,
			Help: "Tenants in each phase of the pipeline.",
		}, []string{"phase"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: OldestTenantAgeSeconds,
			Help: "Time the oldest tenant of each phase has spent in it, in seconds (0: none).",
		}, []string{"phase"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: Ready,
			Help: "1 when the last /readyz check passed (databases and JetStream reachable), else 0.",
		}),
		paceLim: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: PaceLimit,
			Help: "Drops the cleaner's pacer of a shard lets run at once (0 while paused by the shard's load).",
		}, []string{"shard"}),
		paceRun: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: PaceInFlight,
			Help: "The cleaner's drops running now on a shard.",
		}, []string{"shard"}),
		paceWhy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: PaceThrottled,
			Help: "1 for the reason the pacer of a shard throttles or pauses drops now (none: not throttled).",
		}, []string{"shard", "reason"}),
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: StoreRemovedTotal,
			Help: "What cleanups removed from the tenants' other stores, by store and unit.",
		}, []string{"store", "unit"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: StoreFailuresTotal,
			Help: "Removals from a store that failed (the tenant waits and is retried), by store.",
		}, []string{"store"}),
		phases: map[string]bool{},
	}
	m.reg = r
	r.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.tenants, m.events, m.drains, m.steps, m.inPhase, m.oldest, m.ready, buildInfo(),
	)
	if service == "analyzer" {
		m.pass = newAnalyzerMetrics()
		m.pass.register(r)
	}
	for _, o := range TenantOutcomes {
		m.tenants.WithLabelValues(o)
	}
	if service == "cleaner" {
		r.MustRegister(m.paceLim, m.paceRun, m.paceWhy, m.removed, m.failed)
	}
	for _, res := range DrainResults {
		m.drains.WithLabelValues(res)
	}
	return m
}

// Service is the service name the metrics were created for.
func (m *Metrics) Service() string {
	if m == nil {
		return ""
	}
	return m.service
}

// Registry is the metrics' own registry, for a caller that registers
// collectors of its own (they then get no service label unless they add it).
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.registry
}

// Outcome counts one outcome event (tenant_cleanup_events_total{outcome})
// and, for the outcomes of TenantOutcomes, the tenant
// (tenant_cleanup_tenants_total{outcome}).
func (m *Metrics) Outcome(outcome string) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(outcome).Inc()
	if slices.Contains(TenantOutcomes, outcome) {
		m.tenants.WithLabelValues(outcome).Inc()
	}
}

// DrainCheck counts one drain check (tenant_cleanup_drain_checks_total{result}),
// result being one of DrainResults.
func (m *Metrics) DrainCheck(result string) {
	if m == nil {
		return
	}
	m.drains.WithLabelValues(result).Inc()
}

// ObserveStep records that step took d
// (tenant_cleanup_step_duration_seconds{step}).
func (m *Metrics) ObserveStep(step string, d time.Duration) {
	if m == nil {
		return
	}
	m.steps.WithLabelValues(step).Observe(d.Seconds())
}

// SetShards sets the shard names ObserveShardStep accepts (the configured
// shards) and, with several, registers ShardStepDurationSeconds (once). With
// one shard nothing changes: ObserveShardStep records nothing.
func (m *Metrics) SetShards(names []string) {
	if m == nil {
		return
	}
	m.shardsMu.Lock()
	defer m.shardsMu.Unlock()
	m.shards = map[string]bool{}
	for _, n := range names {
		m.shards[n] = true
	}
	if len(names) > 1 && m.shardSteps == nil {
		m.shardSteps = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    ShardStepDurationSeconds,
			Help:    "Duration of the per-tenant steps on one shard of a sharded fleet (drop_schema, unlink_large_objects), by configured shard.",
			Buckets: StepBuckets,
		}, []string{"step", "shard"})
		m.reg.MustRegister(m.shardSteps)
	}
}

// ObserveShardStep records that a per-tenant step took d on shard
// (tenant_cleanup_shard_step_duration_seconds{step,shard}); a name SetShards
// did not give is recorded as "other", so the label never grows beyond the
// configured shards.
func (m *Metrics) ObserveShardStep(step, shard string, d time.Duration) {
	if m == nil {
		return
	}
	m.shardsMu.Lock()
	defer m.shardsMu.Unlock()
	if m.shardSteps == nil {
		return
	}
	if !m.shards[shard] {
		shard = "other"
	}
	m.shardSteps.WithLabelValues(step, shard).Observe(d.Seconds())
}

// SetPhases sets tenant_cleanup_tenants_in_phase{phase} from count and
// tenant_cleanup_oldest_tenant_age_seconds{phase} from oldest. A phase set by
// an earlier call and absent from both maps now is reset to 0 (it is not
// removed, so that its series stays continuous); a phase present in only one
// of the maps has 0 in the other gauge.
func (m *Metrics) SetPhases(count map[string]int, oldest map[string]time.Duration) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := range count {
		m.phases[p] = true
	}
	for p := range oldest {
		m.phases[p] = true
	}
	for p := range m.phases {
		m.inPhase.WithLabelValues(p).Set(float64(count[p]))
		m.oldest.WithLabelValues(p).Set(oldest[p].Seconds())
	}
}

// SetPace sets the pace gauges of the pacer of shard (each data-plane shard
// has its own): the limit (0 while paused), the drops in flight, and 1 for
// reason among reasons (the others 0).
func (m *Metrics) SetPace(shard string, limit, inFlight int, reason string, reasons []string) {
	if m == nil {
		return
	}
	m.paceLim.WithLabelValues(shard).Set(float64(limit))
	m.paceRun.WithLabelValues(shard).Set(float64(inFlight))
	for _, r := range reasons {
		v := 0.0
		if r == reason {
			v = 1
		}
		m.paceWhy.WithLabelValues(shard, r).Set(v)
	}
}

// StoreRemoved adds n of unit removed from store.
func (m *Metrics) StoreRemoved(store, unit string, n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.removed.WithLabelValues(store, unit).Add(float64(n))
}

// StoreFailed counts a failed removal from store.
func (m *Metrics) StoreFailed(store string) {
	if m == nil {
		return
	}
	m.failed.WithLabelValues(store).Inc()
}

// setReady records the result of the last readiness check.
func (m *Metrics) setReady(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.ready.Set(1)
	} else {
		m.ready.Set(0)
	}
}

// OnScrape registers fn to run (with the request's context) before each
// scrape of /metrics, e.g. to refresh gauges that are costly to keep current.
func (m *Metrics) OnScrape(fn func(context.Context)) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.onScrape = fn
	m.mu.Unlock()
}

// Handler serves the metrics in the Prometheus exposition formats (/metrics).
// On a nil *Metrics it serves an empty exposition.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return promhttp.HandlerFor(prometheus.NewRegistry(), promhttp.HandlerOpts{})
	}
	h := promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		fn := m.onScrape
		m.mu.Unlock()
		if fn != nil {
			fn(r.Context())
		}
		h.ServeHTTP(w, r)
	})
}
