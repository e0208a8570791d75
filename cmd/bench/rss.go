package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

type rssSample struct {
	Seconds   float64 `json:"seconds"`
	Processed int     `json:"processed"`
	MiB       float64 `json:"vmhwm_mib"`
}

type rssPhase struct {
	Processed int         `json:"processed"`
	Seconds   float64     `json:"seconds"`
	InFlight  uint64      `json:"work_stream_messages_at_start"`
	Complete  bool        `json:"complete"`
	Samples   []rssSample `json:"samples"`
}

type rssResult struct {
	Tenants         int                  `json:"tenants"`
	TablesPerTenant int                  `json:"tables_per_tenant"`
	PeakRSSMiB      map[string]float64   `json:"peak_rss_mib"`
	Phases          map[string]*rssPhase `json:"phases"`
	Complete        bool                 `json:"complete"`
}

// runRSS is (e), on the RSS fleet (eligible tenants that are not drained;
// it is the last use of that fleet, so no clone):
//
//  1. bin/analyzer --once over the whole fleet publishes every tenant as a
//     candidate: N requests in flight;
//  2. bin/marker alone works through them with DRAIN_CHECK_DELAY=1h, so every
//     drain check it schedules stays in flight;
//  3. N due drain checks are published (as the marker does with
//     DRAIN_CHECK_DELAY=0s) and bin/cleaner alone works through them with
//     DRAIN_CHECK_DELAY=1h: each tenant is found not drained and rescheduled
//     2 h out, so it stays in flight.
//
// Each phase lasts until every tenant is processed or half of -rss-timeout
// has passed. The peak RSS is the highest VmHWM in /proc/<pid>/status.
func (b *bench) runRSS(ctx context.Context) error {
	n := b.o.rssTenants
	f := b.small[n]
	step("(e) peak RSS with %d tenants in flight (%d tables each)", n, fixtureTables+b.o.smallFiller)
	js, err := b.startJetStream("e")
	if err != nil {
		return err
	}
	defer js.shutdown(b.o.keep)
	r := &rssResult{Tenants: n, TablesPerTenant: fixtureTables + b.o.smallFiller, PeakRSSMiB: map[string]float64{},
		Phases: map[string]*rssPhase{}}

	a, err := b.analyzerPass(ctx, b.dbURL(f.data), b.dbURL(f.control), "e", js)
	if err != nil {
		return err
	}
	if a.published != n {
		return fmt.Errorf("analyzer published %d candidates, want %d", a.published, n)
	}
	r.PeakRSSMiB["analyzer"] = a.rssMiB
	info("analyzer: %d candidates published in %.1f s, peak RSS %.1f MiB", a.published, a.took.Seconds(), a.rssMiB)

	nc, err := nats.Connect(js.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	ev, err := followEvents(nc)
	if err != nil {
		return err
	}
	phase := func(svc, outcome string) error {
		ph := &rssPhase{InFlight: workMessages(ctx, nc)}
		r.Phases[svc] = ph
		p, err := b.startProc(svc+"-e", svc, 100*time.Millisecond, serviceEnv(b.dbURL(f.data), b.dbURL(f.control), js.url,
			"DRAIN_CHECK_DELAY=1h", "HTTP_ADDR="+freeAddr()))
		if err != nil {
			return err
		}
		defer p.stop() //nolint:errcheck
		t0 := time.Now()
		deadline := t0.Add(b.o.rssTimeout / 2)
		lastSample := time.Time{}
		for {
			if p.exited() {
				return fmt.Errorf("%s exited: %v\n%s", svc, p.err, p.tail())
			}
			if bad := ev.bad(); bad != "" {
				return fmt.Errorf("unexpected event: %s", bad)
			}
			ph.Processed = ev.count(outcome)
			done := ph.Processed >= n
			if done || time.Now().After(deadline) || time.Since(lastSample) >= 15*time.Second {
				p.sample()
				s := rssSample{Seconds: time.Since(t0).Seconds(), Processed: ph.Processed, MiB: p.peakMiB()}
				ph.Samples = append(ph.Samples, s)
				if !lastSample.IsZero() {
					info("%s: %d/%d %s after %.0f s, VmHWM %.1f MiB", svc, s.Processed, n, outcome, s.Seconds, s.MiB)
				}
				lastSample = time.Now()
			}
			if done {
				ph.Complete = true
				break
			}
			if time.Now().After(deadline) {
				info("%s: half of -rss-timeout (%s) reached: measured with %d of %d processed", svc, b.o.rssTimeout/2, ph.Processed, n)
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		ph.Seconds = time.Since(t0).Seconds()
		p.sample()
		if err := p.stop(); err != nil {
			return fmt.Errorf("%s: %w\n%s", svc, err, p.tail())
		}
		r.PeakRSSMiB[svc] = p.peakMiB()
		return nil
	}
	if err := phase("marker", "marked"); err != nil {
		return err
	}
	if err := publishDrainChecks(ctx, js.url, f.ids); err != nil {
		return err
	}
	if err := phase("cleaner", "draining"); err != nil {
		return err
	}
	r.Complete = r.Phases["marker"].Complete && r.Phases["cleaner"].Complete
	b.res.RSS = r
	info("peak RSS: analyzer %.1f MiB, marker %.1f MiB, cleaner %.1f MiB", r.PeakRSSMiB["analyzer"], r.PeakRSSMiB["marker"], r.PeakRSSMiB["cleaner"])
	return nil
}

// publishDrainChecks makes a drain check due for every tenant at once, with
// the product's own bus client (what the marker does with DRAIN_CHECK_DELAY=0s).
func publishDrainChecks(ctx context.Context, url string, ids []string) error {
	bs, err := bus.Connect(ctx, url, bus.Options{Name: "bench", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer bs.Close()
	now := time.Now()
	for _, s := range ids {
		id, err := tenant.ParseID(s)
		if err != nil {
			return err
		}
		if err := bs.ScheduleDrainCheck(ctx, tenant.DrainCheck{ID: id}, now); err != nil {
			return err
		}
	}
	info("published %d due drain checks", len(ids))
	return nil
}

// workMessages is the number of messages in the requests and work streams
// (requests, schedules and due drain checks in flight).
func workMessages(ctx context.Context, nc *nats.Conn) uint64 {
	jsc, err := jetstream.New(nc)
	if err != nil {
		return 0
	}
	var n uint64
	for _, name := range []string{bus.StreamRequests, bus.StreamWork} {
		st, err := jsc.Stream(ctx, name)
		if err != nil {
			continue
		}
		if si, err := st.Info(ctx); err == nil {
			n += si.State.Msgs
		}
	}
	return n
}
