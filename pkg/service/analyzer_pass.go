package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/analyzer"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/metrics"
)

// observePasses returns the analyzer's Observe: each pass goes to the pass
// metrics and, as the last pass, to the state bucket for tenantctl status
// (interval 0 for analyzer --once).
func observePasses(m *metrics.Metrics, b *bus.Bus, interval time.Duration, log *slog.Logger) func(context.Context, analyzer.PassStats) {
	by := Identity("analyzer")
	return func(ctx context.Context, s analyzer.PassStats) {
		m.AnalyzerPass(s.Finished.Sub(s.Started), s.Err == nil, s.Seen, s.Candidates, s.Finished)
		p := bus.AnalyzerPass{By: by, Started: s.Started.UTC(), Finished: s.Finished.UTC(), Seen: s.Seen,
			Candidates: s.Candidates, Interval: interval}
		if s.Err != nil {
			p.Error = s.Err.Error()
		}
		if err := b.SetAnalyzerPass(context.WithoutCancel(ctx), p); err != nil {
			log.Warn("record the analysis pass for tenantctl status", "error", err)
		}
	}
}
