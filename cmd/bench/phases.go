package main

import (
	"context"
	"fmt"
	"time"
)

func perMin(n int, d time.Duration) float64 { return float64(n) / d.Minutes() }

// throughput: the floor, the pipeline paced (the default) and unpaced on an
// otherwise idle server, each on a fresh settled clone, -rounds times; the
// best round of each counts (a round slowed by other work on a shared
// machine says nothing about what is measured).
func (b *bench) throughput(ctx context.Context) error {
	ids := b.ids[:b.o.tenants]
	step("throughput: %d drained tenants × %d tables per run, %d round(s)", len(ids), 13+b.o.filler, b.o.rounds)
	runs := []struct {
		name     string
		settings []string
		rates    []float64
		rss      map[string]float64
		calib    time.Duration
	}{{name: "raw-SQL floor, 2 sessions"}, {name: "pipeline, default (PACE=auto)"}, {name: "pipeline, PACE=off", settings: []string{"PACE=off"}}}
	for range b.o.rounds {
		for i := range runs {
			r := &runs[i]
			f := b.clone(ctx, fleet{b.tplData, b.tplControl})
			var took time.Duration
			var err error
			if i == 0 {
				took, err = runFloor(ctx, f, ids)
			} else {
				var p pipelineRun
				p, err = b.runPipeline(ctx, f, ids, r.settings...)
				took, r.rss, r.calib = p.took, p.rssMiB, p.calibration
			}
			f.drop()
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			r.rates = append(r.rates, perMin(len(ids), took))
			info("%-32s %d tenants in %5.1f s: %4.0f tenants/min", r.name, len(ids), took.Seconds(), r.rates[len(r.rates)-1])
		}
	}
	s := b.res.section(fmt.Sprintf("THROUGHPUT on an idle server: %d drained tenants × %d tables, best of %d round(s)", len(ids), 13+b.o.filler, b.o.rounds),
		fmt.Sprintf("  %-32s %12s %8s  %s", "run", "tenants/min", "× floor", "rounds; peak RSS"))
	floor := maxOf(runs[0].rates)
	b.res.floorIdle = floor
	for _, r := range runs {
		s.add("  %-32s %12.0f %8.2f  %s; %s; pacer calibration before the clock %.0f s", r.name, maxOf(r.rates), maxOf(r.rates)/floor,
			fmtRates(r.rates), fmtRSS(r.rss), r.calib.Seconds())
	}
	b.res.target("pipeline paced (default) on an idle server ≥ 0.8 × floor (issue 5)", maxOf(runs[1].rates)/floor >= 0.8,
		"%.2f × (%.0f vs %.0f tenants/min)", maxOf(runs[1].rates)/floor, maxOf(runs[1].rates), floor)
	b.res.target("pipeline PACE=off on an idle server ≥ 0.9 × floor (issue 17)", maxOf(runs[2].rates)/floor >= 0.9,
		"%.2f × (%.0f vs %.0f tenants/min)", maxOf(runs[2].rates)/floor, maxOf(runs[2].rates), floor)
	return nil
}

// load: the foreground alone, then during the floor, the pipeline unpaced
// and paced, each cleaning -load-tenants tenants of a fresh clone, and alone
// again; one pgbench process runs throughout and each figure is the window
// of its log during that run.
func (b *bench) load(ctx context.Context) error {
	ids := b.ids[:b.o.loadTenants]
	step("load: pgbench -c %d -R %d (scale %d) on the same server; %d tenants per cleaning run", b.o.clients, b.o.rate, b.o.scale, len(ids))
	fg, err := b.startForeground(ctx)
	if err != nil {
		return err
	}
	alone := func() (latency, error) {
		from := time.Now()
		select { // the measurement's own duration
		case <-ctx.Done():
			return latency{}, ctx.Err()
		case <-time.After(b.o.alone):
		}
		lat, err := fg.window(ctx, from, time.Now())
		return summarise(lat, b.o.alone), err
	}
	type row struct {
		name  string
		fg    latency
		took  time.Duration
		ratio float64
	}
	var rows []row
	first, err := alone()
	if err != nil {
		return err
	}
	rows = append(rows, row{name: "pgbench alone (before)", fg: first})
	info("foreground alone: p50 %s, p99 %s (%d transactions)", ms(first.p50), ms(first.p99), first.n)
	for _, run := range []struct{ name, pace string }{{"raw-SQL floor, 2 sessions", ""}, {"pipeline, PACE=off", "off"}, {"pipeline, PACE=auto (default)", "auto"}} {
		f := b.clone(ctx, fleet{b.tplData, b.tplControl})
		start := time.Now()
		var took time.Duration
		if run.pace == "" {
			took, err = runFloor(ctx, f, ids)
		} else {
			var p pipelineRun
			p, err = b.runPipeline(ctx, f, ids, "PACE="+run.pace)
			took, start = p.took, p.start
			info("pacer calibration before the clock: %.1f s", p.calibration.Seconds())
		}
		f.drop()
		if err != nil {
			return fmt.Errorf("%s: %w", run.name, err)
		}
		lat, err := fg.window(ctx, start, start.Add(took))
		if err != nil {
			return err
		}
		r := row{name: run.name, fg: summarise(lat, took), took: took}
		rows = append(rows, r)
		info("%-30s %d tenants in %5.1f s; foreground p50 %s, p99 %s", run.name, len(ids), took.Seconds(), ms(r.fg.p50), ms(r.fg.p99))
	}
	after, err := alone()
	if err != nil {
		return err
	}
	rows = append(rows, row{name: "pgbench alone (after)", fg: after})
	fg.stop()

	s := b.res.section(fmt.Sprintf("UNDER LOAD: pgbench -c %d -j 2 -R %d (scale %d) on the same server; %d drained tenants × %d tables per run",
		b.o.clients, b.o.rate, b.o.scale, len(ids), 13+b.o.filler),
		fmt.Sprintf("  %-30s %8s %8s %7s %7s %12s %8s", "run", "fg p50", "fg p99", "p99 ×", "fg tps", "tenants/min", "× floor"))
	floor := perMin(len(ids), rows[1].took)
	b.res.floorLoad = floor
	for _, r := range rows {
		clean, vs := "—", "—"
		if r.took > 0 {
			clean, vs = fmt.Sprintf("%.0f", perMin(len(ids), r.took)), fmt.Sprintf("%.2f", perMin(len(ids), r.took)/floor)
		}
		s.add("  %-30s %8s %8s %7.2f %7.0f %12s %8s", r.name, ms(r.fg.p50), ms(r.fg.p99), ratio(r.fg.p99, first.p99), r.fg.tps, clean, vs)
	}
	paced := rows[3]
	b.res.target("paced: foreground p99 during cleaning ≤ 1.5 × alone (issue 17)", ratio(paced.fg.p99, first.p99) <= 1.5,
		"%.2f × (%s vs %s alone)", ratio(paced.fg.p99, first.p99), ms(paced.fg.p99), ms(first.p99))
	b.res.target("paced: cleaning under load ≥ 0.6 × the floor's rate under the same load (issue 17)",
		perMin(len(ids), paced.took)/floor >= 0.6, "%.2f × (%.0f vs %.0f tenants/min)", perMin(len(ids), paced.took)/floor, perMin(len(ids), paced.took), floor)
	return nil
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func fmtRates(xs []float64) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%.0f", x)
	}
	return s
}

func fmtRSS(m map[string]float64) string {
	if m == nil {
		return "—"
	}
	return fmt.Sprintf("marker %.0f MiB, cleaner %.0f MiB", m["marker"], m["cleaner"])
}
