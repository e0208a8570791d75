package service

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/metrics"
	"github.com/tenantcleanup/tenant-cleanup/pkg/pacer"
)

// startPacers starts the cleaner's pacers (PACE_*), one per data-plane
// shard by its name: each server is paced by its own health, so that a
// loaded shard slows only its own tenants' drops. With PACE=auto each
// samples its shard through a connection of its own until ctx ends. The
// returned function closes what they opened.
func startPacers(ctx context.Context, cfg *config.Cleaner, log *slog.Logger) (map[string]*pacer.Pacer, func(), error) {
	shards, err := cfg.Common.DataPlane.Shards()
	if err != nil {
		return nil, nil, err
	}
	pacers := map[string]*pacer.Pacer{}
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for _, sh := range shards {
		var src pacer.Source
		if cfg.Pace.Mode != pacer.ModeOff {
			pcfg, err := dataPlanePool(&cfg.Common, sh.URL, "cleaner")
			if err != nil {
				closeAll()
				return nil, nil, err
			}
			sampler, err := pacer.OpenSampler(ctx, pcfg, cfg.Pace.Config, pacer.SamplerOptions{DropLockKey: dataplane.DropLockKey,
				OwnApplicationName: ApplicationName("cleaner")})
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("shard %s: %w", sh.Name, err)
			}
			src = sampler
			closers = append(closers, sampler.Close)
		}
		plog := log.With("component", "pacer")
		if len(shards) > 1 {
			plog = plog.With("shard", sh.Name)
		}
		p, err := pacer.New(cfg.Pace.Config, src, plog)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		go p.Run(ctx)
		pacers[sh.Name] = p
	}
	return pacers, closeAll, nil
}

// reportPace publishes the pacer's state for tenantctl status (a pace
// report in the state bucket) and the pace metrics, on every change and
// at least every third of bus.PaceReportTTL, until ctx ends.
func reportPace(ctx context.Context, p *pacer.Pacer, b *bus.Bus, m *metrics.Metrics, by, shard string, sharded bool, log *slog.Logger) {
	tick := time.NewTicker(bus.PaceReportTTL / 3)
	defer tick.Stop()
	for {
		changed := p.Changed()
		s := p.State()
		limit := s.Limit
		if s.Throttle == pacer.Paused {
			limit = 0
		}
		m.SetPace(shard, limit, s.InFlight, s.Label, pacer.Labels())
		r := bus.PaceReport{By: by, State: paceState(s), Limit: limit, Max: s.MaxConcurrency,
			InFlight: s.InFlight, Waiting: s.Waiting, Reason: s.Reason, At: time.Now()}
		if sharded {
			r.Shard = shard
		}
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
