package main

import (
	"context"
	"fmt"
	"time"
)

func perMin(n int, d time.Duration) float64 { return float64(n) / d.Minutes() }

func ratio(a, b time.Duration) float64 { return float64(a) / float64(max(b, 1)) }

// cleaning is one way of cleaning the fleet: the floor (no pace) or the
// pipeline with PACE=pace.
type cleaning struct{ name, pace string }

var floorRun = cleaning{"raw-SQL floor, 2 sessions", ""}

// clean cleans ids on a fresh settled clone of the throughput fleet.
func (b *bench) clean(ctx context.Context, c cleaning, ids []string) (pipelineRun, error) {
	f := b.clone(ctx, fleet{b.tplData, b.tplControl})
	defer f.drop()
	if c.pace == "" {
		start := time.Now()
		took, err := runFloor(ctx, f, ids)
		return pipelineRun{start: start, took: took}, err
	}
	r, err := b.runPipeline(ctx, f, ids, "PACE="+c.pace)
	info("%s: pacer calibration before the clock %.1f s; peak RSS marker %.0f MiB, cleaner %.0f MiB",
		c.name, r.calibration.Seconds(), r.rssMiB["marker"], r.rssMiB["cleaner"])
	return r, err
}

// throughput: the floor, the pipeline paced (the default) and unpaced on an
// otherwise idle server, -rounds times each; the best round of each counts
// (a round slowed by other work on a shared machine says nothing about what
// is measured).
func (b *bench) throughput(ctx context.Context) error {
	ids := b.ids[:b.o.tenants]
	step("throughput: %d drained tenants × %d tables per run, %d round(s)", len(ids), 13+b.o.filler, b.o.rounds)
	runs := []cleaning{floorRun, {"pipeline, PACE=auto (default)", "auto"}, {"pipeline, PACE=off", "off"}}
	rates := make([][]float64, len(runs))
	for range b.o.rounds {
		for i, c := range runs {
			r, err := b.clean(ctx, c, ids)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			rates[i] = append(rates[i], perMin(len(ids), r.took))
			info("%-32s %d tenants in %5.1f s: %4.0f tenants/min", c.name, len(ids), r.took.Seconds(), perMin(len(ids), r.took))
		}
	}
	s := b.res.section(fmt.Sprintf("THROUGHPUT on an idle server: %d drained tenants × %d tables, best of %d round(s)", len(ids), 13+b.o.filler, b.o.rounds),
		fmt.Sprintf("  %-32s %12s %8s  %s", "run", "tenants/min", "× floor", "rounds"))
	best := func(i int) float64 { return maxOf(rates[i]) }
	for i, c := range runs {
		s.add("  %-32s %12.0f %8.2f  %.0f", c.name, best(i), best(i)/best(0), rates[i])
	}
	b.res.target("pipeline paced (default) on an idle server ≥ 0.8 × floor (issue 5)", best(1)/best(0) >= 0.8,
		"%.2f × (%.0f vs %.0f tenants/min)", best(1)/best(0), best(1), best(0))
	b.res.target("pipeline PACE=off on an idle server ≥ 0.9 × floor (issue 17)", best(2)/best(0) >= 0.9,
		"%.2f × (%.0f vs %.0f tenants/min)", best(2)/best(0), best(2), best(0))
	return nil
}

// load: one pgbench process runs throughout; the foreground's figures are
// the windows of its log alone, during the floor, the pipeline unpaced and
// paced (each cleaning -load-tenants tenants of a fresh clone), and alone
// again.
func (b *bench) load(ctx context.Context) error {
	ids := b.ids[:b.o.loadTenants]
	step("load: pgbench -c %d -R %d (scale %d) on the same server; %d tenants per cleaning run", b.o.clients, b.o.rate, b.o.scale, len(ids))
	fg, err := b.startForeground(ctx)
	if err != nil {
		return err
	}
	defer fg.stop()
	type row struct {
		name string
		fg   latency
		took time.Duration
	}
	var rows []row
	for _, c := range []cleaning{{"pgbench alone (before)", "-"}, floorRun, {"pipeline, PACE=off", "off"},
		{"pipeline, PACE=auto (default)", "auto"}, {"pgbench alone (after)", "-"}} {
		r := pipelineRun{start: time.Now(), took: b.o.alone}
		if c.pace == "-" {
			select { // the measurement's own duration
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(b.o.alone):
			}
		} else if r, err = b.clean(ctx, c, ids); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		lat, err := fg.window(ctx, r.start, r.start.Add(r.took))
		if err != nil {
			return err
		}
		rows = append(rows, row{c.name, summarise(lat, r.took), r.took})
		if c.pace == "-" {
			rows[len(rows)-1].took = 0
		}
		info("%-30s %5.1f s; foreground p50 %s, p99 %s (%d transactions)", c.name, r.took.Seconds(), ms(rows[len(rows)-1].fg.p50),
			ms(rows[len(rows)-1].fg.p99), len(lat))
	}
	s := b.res.section(fmt.Sprintf("UNDER LOAD: pgbench -c %d -j 2 -R %d (scale %d) on the same server; %d drained tenants × %d tables per run",
		b.o.clients, b.o.rate, b.o.scale, len(ids), 13+b.o.filler),
		fmt.Sprintf("  %-30s %8s %8s %7s %7s %12s %8s", "run", "fg p50", "fg p99", "p99 ×", "fg tps", "tenants/min", "× floor"))
	// The stricter of the two baselines: other work on a shared machine
	// can only have slowed the foreground.
	alone, floor, paced := min(rows[0].fg.p99, rows[4].fg.p99), perMin(len(ids), rows[1].took), rows[3]
	for _, r := range rows {
		clean, vs := "—", "—"
		if r.took > 0 {
			clean, vs = fmt.Sprintf("%.0f", perMin(len(ids), r.took)), fmt.Sprintf("%.2f", perMin(len(ids), r.took)/floor)
		}
		s.add("  %-30s %8s %8s %7.2f %7.0f %12s %8s", r.name, ms(r.fg.p50), ms(r.fg.p99), ratio(r.fg.p99, alone), r.fg.tps, clean, vs)
	}
	b.res.target("paced: foreground p99 during cleaning ≤ 1.5 × alone (the lower of before/after; issue 17)", ratio(paced.fg.p99, alone) <= 1.5,
		"%.2f × (%s vs %s alone)", ratio(paced.fg.p99, alone), ms(paced.fg.p99), ms(alone))
	b.res.target("paced: cleaning under load ≥ 0.6 × the floor's rate under the same load (issue 17)",
		perMin(len(ids), paced.took)/floor >= 0.6, "%.2f × (%.0f vs %.0f tenants/min)", perMin(len(ids), paced.took)/floor, perMin(len(ids), paced.took), floor)
	return nil
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
