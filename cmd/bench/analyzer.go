package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// analyzerRounds: each approach runs this many times, alternating; the
// fastest counts.
const analyzerRounds = 2

var rePublished = regexp.MustCompile(`published (\d+) candidates`)

// analyzerPass runs bin/analyzer --once on the analyzer fleet, on a
// JetStream of its own, and returns its time, candidates and peak RSS.
func (b *bench) analyzerPass(ctx context.Context) (time.Duration, int, float64, error) {
	js := testenv.StartJetStream(b.t)
	defer js.Shutdown()
	start := time.Now()
	p, err := b.startProc(ctx, "analyzer", b.small, js.URL, "ANALYZER_REPORT_DIR="+b.t.TempDir())
	if err != nil {
		return 0, 0, 0, err
	}
	if err := poll(ctx, 10*time.Minute, func() (bool, error) { p.sample(); return p.exited(), nil }); err != nil {
		return 0, 0, 0, err
	}
	took := time.Since(start)
	if err := p.stop(); err != nil {
		return 0, 0, 0, err
	}
	out, _ := os.ReadFile(p.log)
	m := rePublished.FindSubmatch(out)
	if m == nil {
		return 0, 0, 0, fmt.Errorf("bin/analyzer --once printed no summary: %w", p.failure())
	}
	n, _ := strconv.Atoi(string(m[1]))
	return took, n, p.peakMiB, nil
}

// perSchemaLoop is the original analyze script's approach: list the tenant
// schemas, then one query per schema (last USER query, documents, users),
// in plain-text queries (the simple protocol). With one session and the
// control plane it is the script (and returns the candidates); with two
// sessions and no control plane it is the read floor: the loop's own reads
// split over both cores.
func perSchemaLoop(ctx context.Context, f fleet, sessions int, withControl bool) (time.Duration, int, error) {
	start := time.Now()
	conns := make([]*pgx.Conn, sessions)
	for i := range conns {
		cfg, err := pgx.ParseConfig(dbURL(f.data))
		if err != nil {
			return 0, 0, err
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		if conns[i], err = pgx.ConnectConfig(ctx, cfg); err != nil {
			return 0, 0, err
		}
		defer conns[i].Close(context.Background())
	}
	rows, _ := conns[0].Query(ctx, `SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\_%' ORDER BY 1`)
	schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, 0, err
	}
	type activity struct {
		last        *time.Time
		docs, users int64
	}
	acts := make([]activity, len(schemas))
	errs := make([]error, sessions)
	var wg sync.WaitGroup
	for w, conn := range conns {
		wg.Go(func() {
			for i := w; i < len(schemas) && errs[w] == nil; i += sessions {
				errs[w] = conn.QueryRow(ctx, fmt.Sprintf(`SELECT (SELECT max(time_sent) FROM %[1]s.chat_message WHERE message_type = 'USER'),
					(SELECT count(*) FROM %[1]s.document), (SELECT count(*) FROM %[1]s."user")`, ident(schemas[i]))).Scan(&acts[i].last, &acts[i].docs, &acts[i].users)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, 0, err
		}
	}
	if !withControl {
		return time.Since(start), 0, nil
	}
	status := map[string]string{}
	var id, st string
	control, err := pgx.Connect(ctx, dbURL(f.control))
	if err != nil {
		return 0, 0, err
	}
	defer control.Close(context.Background())
	rows, _ = control.Query(ctx, `SELECT tenant_id, application_status FROM tenant WHERE created_at < now() - interval '90 days'`)
	if _, err := pgx.ForEachRow(rows, []any{&id, &st}, func() error { status[id] = st; return nil }); err != nil {
		return 0, 0, err
	}
	cutoff := time.Now().Add(-90 * 24 * time.Hour)
	candidates := 0
	for i, s := range schemas {
		if status[s] == "GATED_ACCESS" && (acts[i].last == nil || acts[i].last.Before(cutoff)) {
			candidates++
		}
	}
	return time.Since(start), candidates, nil
}

// analyzerFleet builds half the analyzer fleet, runs the analyzer over it,
// and builds the rest.
func (b *bench) analyzerFleet(ctx context.Context) (err error) {
	n := b.o.analyzerTenants
	b.growSmallFleet(ctx, 0, n/2)
	b.halfTook, _, b.analyzerRSS[0], err = b.analyzerPass(ctx)
	b.growSmallFleet(ctx, n/2, n)
	return err
}

// analyzer: bin/analyzer --once against the per-schema loop and the read
// floor on a fleet of 13-table tenants (the reads touch four tables of each,
// so the other 130 would change nothing but the build time), all gated and
// then with a quarter gated; the analyzer's peak RSS at half and full size.
func (b *bench) analyzer(ctx context.Context) error {
	n := b.o.analyzerTenants
	step("analyzer: %d tenants × 13 tables (measured at %d, then %d)", n, n/2, n)
	if err := b.analyzerFleet(ctx); err != nil {
		return err
	}
	if _, _, err := perSchemaLoop(ctx, b.small, 1, false); err != nil { // untimed: sets every row's hint bits
		return err
	}
	type best struct{ analyzer, loop, floor time.Duration }
	measure := func(want int) (best, error) {
		var r best
		for range analyzerRounds {
			loop, cands, err := perSchemaLoop(ctx, b.small, 1, true)
			if err != nil || cands != want {
				return r, fmt.Errorf("per-schema loop: %d candidates (want %d), %v", cands, want, err)
			}
			floor, _, err := perSchemaLoop(ctx, b.small, 2, false)
			if err != nil {
				return r, err
			}
			took, published, rss, err := b.analyzerPass(ctx)
			if err != nil || published != want {
				return r, fmt.Errorf("analyzer: %d candidates (want %d), %v", published, want, err)
			}
			b.analyzerRSS[1] = max(b.analyzerRSS[1], rss)
			info("loop %.2f s, read floor %.2f s, analyzer %.2f s (%d candidates)", loop.Seconds(), floor.Seconds(), took.Seconds(), published)
			r = best{minDur(r.analyzer, took), minDur(r.loop, loop), minDur(r.floor, floor)}
		}
		return r, nil
	}
	gated, err := measure(n)
	if err != nil {
		return err
	}
	quarter := func(status string) error {
		return execOn(ctx, dbURL(b.small.control), "UPDATE tenant SET application_status = $1 WHERE right(tenant_id, 1) NOT IN ('0', '4', '8', 'c')", status)
	}
	if err := quarter("ACTIVE"); err != nil {
		return err
	}
	mixed, err := measure(n / 4)
	if err != nil {
		return err
	}
	if err := quarter("GATED_ACCESS"); err != nil {
		return err
	}
	s := b.res.section(fmt.Sprintf("ANALYZER: bin/analyzer --once vs the per-schema loop, %d tenants × 13 tables, best of %d", n, analyzerRounds),
		fmt.Sprintf("  %-22s %10s %10s %14s %10s %16s", "fleet", "loop s", "analyzer s", "read floor s", "× loop", "× floor's rate"))
	for _, r := range []struct {
		name string
		b    best
	}{{"all gated", gated}, {"a quarter gated", mixed}} {
		s.add("  %-22s %10.2f %10.2f %14.2f %10.2f %16.2f", r.name, r.b.loop.Seconds(), r.b.analyzer.Seconds(), r.b.floor.Seconds(),
			ratio(r.b.loop, r.b.analyzer), ratio(r.b.floor, r.b.analyzer))
	}
	s.add("  ms per tenant: %.3f at %d tenants, %.3f at %d (one pass each); read floor = the loop's reads on two sessions, no control plane",
		ms1(b.halfTook)/float64(n/2), n/2, ms1(gated.analyzer)/float64(n), n)
	b.res.target("analyzer, a quarter gated: ≥ 3 × faster than the per-schema loop (issue 17)", ratio(mixed.loop, mixed.analyzer) >= 3,
		"%.2f × (%.2f s vs %.2f s)", ratio(mixed.loop, mixed.analyzer), mixed.analyzer.Seconds(), mixed.loop.Seconds())
	b.res.target("analyzer, all gated: ≥ 0.75 × the read floor's rate (issue 17)", ratio(gated.floor, gated.analyzer) >= 0.75,
		"%.2f × (%.2f s vs %.2f s)", ratio(gated.floor, gated.analyzer), gated.analyzer.Seconds(), gated.floor.Seconds())
	return nil
}

func minDur(a, b time.Duration) time.Duration {
	if a == 0 {
		return b
	}
	return min(a, b)
}

// memory: the peak RSS of the marker and the cleaner with the analyzer
// fleet's tenants in flight (the marker with every request queued, then the
// cleaner with every drain check due; DRAIN_CHECK_DELAY=1h keeps them all in
// flight), with the analyzer's from the analyzer phase; each extrapolated
// linearly to 100,000 tenants from its growth between half and full.
func (b *bench) memory(ctx context.Context) error {
	n := b.o.analyzerTenants
	if b.small.data == "" { // the analyzer phase did not run: its fleet and figures
		if err := b.analyzerFleet(ctx); err != nil {
			return err
		}
		var err error
		if _, _, b.analyzerRSS[1], err = b.analyzerPass(ctx); err != nil {
			return err
		}
	}
	step("memory: peak RSS with %d tenants in flight", n)
	js := testenv.StartJetStream(b.t)
	defer js.Shutdown()
	bs, err := connectBus(ctx, js.URL)
	if err != nil {
		return err
	}
	defer bs.Close()
	ev, stopEvents, err := watchEvents(ctx, bs)
	if err != nil {
		return err
	}
	defer stopEvents()
	var ids []string
	for i := range n {
		ids = append(ids, smallID(i))
	}
	if err := bs.PublishRequests(ctx, requests(ids), nil); err != nil {
		return err
	}
	rss := map[string][2]float64{"analyzer": b.analyzerRSS}
	service := func(name string, outcome tenant.Outcome) error {
		p, err := b.startProc(ctx, name, b.small, js.URL, "DRAIN_CHECK_DELAY=1h")
		if err != nil {
			return err
		}
		var half float64
		if err := ev.wait(ctx, outcome, n, []*proc{p}, func() { half = p.sample() }); err != nil {
			return err
		}
		if err := p.stop(); err != nil {
			return err
		}
		rss[name] = [2]float64{half, p.peakMiB}
		return nil
	}
	if err := service("marker", tenant.OutcomeMarked); err != nil {
		return err
	}
	now := time.Now()
	for _, id := range ids {
		if err := bs.ScheduleDrainCheck(ctx, tenant.DrainCheck{ID: tenant.ID(id)}, now); err != nil {
			return err
		}
	}
	if err := service("cleaner", tenant.OutcomeDraining); err != nil {
		return err
	}
	s := b.res.section(fmt.Sprintf("MEMORY: peak RSS with %d tenants in flight, extrapolated to 100,000 (a 100,000-tenant fleet is not built here)", n),
		fmt.Sprintf("  %-10s %-44s %10s %16s", "service", "peak RSS (MiB)", "KiB/tenant", "at 100,000 (MiB)"))
	for _, name := range []string{"analyzer", "marker", "cleaner"} {
		r := rss[name]
		slope := max(0, r[1]-r[0]) / float64(n-n/2) // MiB per tenant
		at := r[1] + slope*float64(100_000-n)
		what := fmt.Sprintf("%.1f at %d, %.1f at %d tenants", r[0], n/2, r[1], n)
		if name != "analyzer" {
			what = fmt.Sprintf("%.1f at half, %.1f at all processed", r[0], r[1])
		}
		s.add("  %-10s %-44s %10.2f %16.1f", name, what, slope*1024, at)
		b.res.target(fmt.Sprintf("%s peak RSS ≤ 64 MiB with 100,000 tenants in flight (issue 17; extrapolated from %d)", name, n),
			at <= 64, "%.1f MiB (measured %.1f MiB at %d)", at, r[1], n)
	}
	return nil
}
