package metrics

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantcleanup/tenant-cleanup/pkg/buildinfo"
)

// analyzerMetrics are the analyzer's pass metrics (nil fields in the other
// services).
type analyzerMetrics struct {
	duration    prometheus.Histogram
	seen        prometheus.Gauge
	candidates  prometheus.Gauge
	lastSuccess prometheus.Gauge
	failures    prometheus.Counter
}

// PassBuckets are the pass-duration histogram's upper bounds, in seconds:
// from 1s to 2h.
var PassBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200}

func newAnalyzerMetrics() analyzerMetrics {
	return analyzerMetrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: AnalyzerPassDurationSeconds,
			Help: "Duration of the analyzer's passes, failed ones included.", Buckets: PassBuckets}),
		seen: prometheus.NewGauge(prometheus.GaugeOpts{Name: AnalyzerTenantsSeen,
			Help: "Tenants the last successful pass looked at."}),
		candidates: prometheus.NewGauge(prometheus.GaugeOpts{Name: AnalyzerCandidates,
			Help: "Candidates (gated and inactive) the last successful pass found."}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: AnalyzerLastSuccessTimestamp,
			Help: "When a pass last succeeded, in Unix seconds (0: never since start)."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: AnalyzerPassFailuresTotal,
			Help: "Failed analysis passes."}),
	}
}

func (a analyzerMetrics) register(r prometheus.Registerer) {
	r.MustRegister(a.duration, a.seen, a.candidates, a.lastSuccess, a.failures)
}

// AnalyzerPass records one analysis pass: how long it took and, when it
// succeeded (ok), what it saw and when. Only the analyzer's metrics have
// these series.
func (m *Metrics) AnalyzerPass(took time.Duration, ok bool, seen, candidates int, finished time.Time) {
	if m == nil || m.pass.duration == nil {
		return
	}
	m.pass.duration.Observe(took.Seconds())
	if !ok {
		m.pass.failures.Inc()
		return
	}
	m.pass.seen.Set(float64(seen))
	m.pass.candidates.Set(float64(candidates))
	m.pass.lastSuccess.Set(float64(finished.Unix()))
}

// buildInfo is tenant_cleanup_build_info{version, commit, goversion} 1.
func buildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: BuildInfo,
		Help:        "Always 1; its labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": buildinfo.Version(), "commit": buildinfo.Commit(), "goversion": runtime.Version()}})
	g.Set(1)
	return g
}
