package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/metrics"
	"github.com/tenantcleanup/tenant-cleanup/pkg/pacer"
)

// startPacer starts the cleaner's pacer (PACE_*): with PACE=auto it samples
// the data plane through a connection of its own until ctx ends. The
// returned function closes what it opened.
func startPacer(ctx context.Context, cfg *config.Cleaner, log *slog.Logger) (*pacer.Pacer, func(), error) {
	var src pacer.Source
	closeSrc := func() {}
	if cfg.Pace.Mode != pacer.ModeOff {
		// The pacer samples the catalog shard (one pacer per replica; the
		// other shards' own drop slots and lock budgets bound their drops).
		shards, err := cfg.Common.DataPlane.Shards()
		if err != nil {
			return nil, nil, err
		}
		pcfg, err := dataPlanePool(&cfg.Common, shards[0].URL, "cleaner")
		if err != nil {
			return nil, nil, err
		}
		sampler, err := pacer.OpenSampler(ctx, pcfg, cfg.Pace.Config, pacer.SamplerOptions{DropLockKey: dataplane.DropLockKey})
		if err != nil {
			return nil, nil, err
		}
		src, closeSrc = sampler, sampler.Close
	}
	p, err := pacer.New(cfg.Pace.Config, src, log.With("component", "pacer"))
	if err != nil {
		closeSrc()
		return nil, nil, err
	}
	go p.Run(ctx)
	return p, closeSrc, nil
}

// reportPace publishes the pacer's state for tenantctl status (a pace
// report in the state bucket) and the pace metrics, on every change and
// at least every third of bus.PaceReportTTL, until ctx ends.
func reportPace(ctx context.Context, p *pacer.Pacer, b *bus.Bus, m *metrics.Metrics, by string, log *slog.Logger) {
	tick := time.NewTicker(bus.PaceReportTTL / 3)
	defer tick.Stop()
	for {
		changed := p.Changed()
		s := p.State()
		limit := s.Limit
		if s.Throttle == pacer.Paused {
			limit = 0
		}
		m.SetPace(limit, s.InFlight, s.Label, pacer.Labels())
		r := bus.PaceReport{By: by, State: paceState(s), Limit: limit, Max: s.MaxConcurrency,
			InFlight: s.InFlight, Waiting: s.Waiting, Reason: s.Reason, At: time.Now()}
		if err := b.SetPace(ctx, r); err != nil && ctx.Err() == nil {
			log.Warn("record the pace for tenantctl status", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			// At most one write a second, however often it changes.
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		case <-tick.C:
		}
	}
}

// paceState names what the pacer does: off, calibrating, running,
// throttled or paused.
func paceState(s pacer.State) string {
	switch {
	case s.Mode == pacer.ModeOff:
		return "off"
	case s.Calibrating:
		return "calibrating"
	}
	return s.Throttle.String()
}
