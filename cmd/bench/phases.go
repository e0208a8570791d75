package main

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// cleaning is one way of cleaning the fleet: the floor (no pace), the
// pipeline with PACE=pace, or none ("-": the foreground alone).
type cleaning struct{ name, pace string }

var floorRun = cleaning{"raw-SQL floor, 2 sessions", ""}

// clean cleans ids on a fresh settled clone of the throughput fleet.
func (b *bench) clean(ctx context.Context, c cleaning, ids []string) (r pipelineRun) {
	testenv.Scope(func(t *testenv.Outside) {
		d := b.clone(ctx, t)
		if c.pace == "" {
			r.start, r.took = runFloor(ctx, t, d, ids)
			return
		}
		r = b.runPipeline(ctx, d, ids, "PACE="+c.pace)
		info("%s: pacer calibration before the clock %.1f s; peak RSS marker %.0f MiB, cleaner %.0f MiB",
			c.name, r.calibration.Seconds(), r.rssMiB["marker"], r.rssMiB["cleaner"])
	})
	return r
}

// throughput: the floor, the pipeline paced (the default) and unpaced on an
// otherwise idle server, -rounds times each; the best round of each counts
// (a round slowed by other work on a shared machine measures that work).
func (b *bench) throughput(ctx context.Context) {
	ids := b.ids[:b.o.tenants]
	step("throughput: %d drained tenants × %d tables per run, %d round(s)", len(ids), 13+b.o.filler, b.o.rounds)
	runs := []cleaning{floorRun, {"pipeline, PACE=auto (default)", "auto"}, {"pipeline, PACE=off", "off"}}
	rates := make([][]float64, len(runs))
	for range b.o.rounds {
		for i, c := range runs {
			took := b.clean(ctx, c, ids).took
			rates[i] = append(rates[i], perMin(len(ids), took))
			info("%-32s %d tenants in %5.1f s: %4.0f tenants/min", c.name, len(ids), took.Seconds(), perMin(len(ids), took))
		}
	}
	s := b.res.section("THROUGHPUT on an idle server: %d drained tenants × %d tables, best of %d round(s)", len(ids), 13+b.o.filler, b.o.rounds).table(
		"  %-32s %12.0f %8.2f  %.0f", "run", "tenants/min", "× floor", "rounds")
	best := make([]float64, len(runs))
	for i, c := range runs {
		best[i] = slices.Max(rates[i])
		s.row(c.name, best[i], best[i]/best[0], rates[i])
	}
	b.res.target("pipeline paced (default) on an idle server ≥ 0.8 × floor (issue 5)", best[1]/best[0] >= 0.8,
		"%.2f × (%.0f vs %.0f tenants/min)", best[1]/best[0], best[1], best[0])
	b.res.target("pipeline PACE=off on an idle server ≥ 0.9 × floor (issue 17)", best[2]/best[0] >= 0.9,
		"%.2f × (%.0f vs %.0f tenants/min)", best[2]/best[0], best[2], best[0])
}

// load: one pgbench runs throughout; the foreground's figures are windows
// of its log: alone, during the floor, the pipeline unpaced and paced (each
// cleaning -load-tenants tenants of a fresh clone), and alone again.
func (b *bench) load(ctx context.Context) {
	ids := b.ids[:b.o.loadTenants]
	step("load: pgbench -c %d -R %d (scale %d) on the same server; %d tenants per cleaning run", b.o.clients, b.o.rate, b.o.scale, len(ids))
	type row struct {
		name     string
		p50, p99 time.Duration
		tps      float64
		took     time.Duration // 0: the foreground alone
	}
	var rows []row
	testenv.Scope(func(t *testenv.Outside) {
		fg := testenv.StartPgbench(t, b.o.scale, b.o.clients, b.o.rate)
		for _, c := range []cleaning{{"pgbench alone (before)", "-"}, floorRun, {"pipeline, PACE=off", "off"},
			{"pipeline, PACE=auto (default)", "auto"}, {"pgbench alone (after)", "-"}} {
			r, window := pipelineRun{start: time.Now()}, b.o.alone
			if c.pace == "-" { // the measurement's own duration
				until(ctx, 2*window, "the foreground alone", func() bool { return time.Since(r.start) >= window })
			} else {
				r = b.clean(ctx, c, ids)
				window = r.took
			}
			lat := fg.Window(r.start, r.start.Add(window))
			x := row{c.name, testenv.Percentile(lat, 50), testenv.Percentile(lat, 99), float64(len(lat)) / window.Seconds(), r.took}
			rows = append(rows, x)
			info("%-30s %5.1f s; foreground p50 %s, p99 %s (%d transactions)", c.name, window.Seconds(), ms(x.p50), ms(x.p99), len(lat))
		}
	})
	s := b.res.section("UNDER LOAD: pgbench -c %d -j 2 -R %d (scale %d) on the same server; %d drained tenants × %d tables per run",
		b.o.clients, b.o.rate, b.o.scale, len(ids), 13+b.o.filler).table(
		"  %-30s %8s %8s %7.2f %7.0f %12s %8s", "run", "fg p50", "fg p99", "p99 ×", "fg tps", "tenants/min", "× floor")
	// The stricter of the two baselines: other work on a shared machine
	// can only have slowed the foreground.
	alone, floor, paced := min(rows[0].p99, rows[4].p99), perMin(len(ids), rows[1].took), rows[3]
	for _, r := range rows {
		rate, vs := "—", "—"
		if r.took > 0 {
			rate, vs = fmt.Sprintf("%.0f", perMin(len(ids), r.took)), fmt.Sprintf("%.2f", perMin(len(ids), r.took)/floor)
		}
		s.row(r.name, ms(r.p50), ms(r.p99), ratio(r.p99, alone), r.tps, rate, vs)
	}
	b.res.target("paced: foreground p99 during cleaning ≤ 1.5 × alone (the lower of before/after; issue 17)", ratio(paced.p99, alone) <= 1.5,
		"%.2f × (%s vs %s alone)", ratio(paced.p99, alone), ms(paced.p99), ms(alone))
	pacedRate := perMin(len(ids), paced.took)
	b.res.target("paced: cleaning under load ≥ 0.6 × the floor's rate under the same load (issue 17)", pacedRate/floor >= 0.6,
		"%.2f × (%.0f vs %.0f tenants/min)", pacedRate/floor, pacedRate, floor)
}

// stores: the cleaner (PACE=off) with S3 and Redis configured cleans
// -store-tenants tenants without files or keys, then as many with -files S3
// objects, -files large objects and -keys Redis keys each: the difference
// per tenant is what files and keys cost.
func (b *bench) stores(ctx context.Context) {
	k := b.o.storeTenants
	plain, loaded := b.ids[:k], b.ids[k:2*k]
	step("stores: %d tenants without, %d with %d S3 files + %d large objects + %d Redis keys each", k, k, b.o.files, b.o.files, b.o.keys)
	var without, with pipelineRun
	testenv.Scope(func(t *testenv.Outside) {
		d := b.clone(ctx, t)
		st := testworld.StartOtherStores(t)
		start := time.Now()
		for _, id := range loaded {
			st.Seed(t, d, id, b.o.files) // files in S3 and as many Redis keys
			execSQL(ctx, d.Data, "SELECT count(*) FROM fixture.add_files($1, $2, 'postgres')", id, b.o.files)
			pipe := st.Client.Pipeline()
			for i := b.o.files; i < b.o.keys; i++ {
				pipe.Set(ctx, fmt.Sprintf("%s:cache:%d", id, i), "x", 0)
			}
			must(pipe.Exec(ctx))
		}
		b.res.setupLine("stores: files, large objects and keys of %d tenants in %.0f s", k, time.Since(start).Seconds())
		var other config.OtherStores
		config.Defaults(&other)
		st.Configure(&other)
		settings := append([]string{"PACE=off"}, config.Environ(&other)...)
		without = b.runPipeline(ctx, d, plain, settings...)
		with = b.runPipeline(ctx, d, loaded, settings...)
		los := d.CountData(t, "SELECT count(*) FROM pg_largeobject_metadata")
		left, keys := len(st.S3.Keys(testworld.Bucket, "")), must(st.Client.DBSize(ctx).Result())
		if left+int(los)+int(keys) != 0 {
			check(fmt.Errorf("left behind: %d S3 objects, %d large objects, %d Redis keys", left, los, keys))
		}
	})
	s := b.res.section("FILES AND KEYS: cleaner with S3 (gofakes3 over HTTP) and Redis configured, PACE=off; %d tenants × %d tables per run; "+
		"ms per tenant, wall and per step of the cleaner (its step_duration metrics)", k, 13+b.o.filler).table(
		"  %-22s %7.0f %12.1f %21.1f %16.1f %18.1f", "tenants", "wall", "drop_schema", "unlink_large_objects", "remove_s3_files", "remove_redis_keys")
	per := func(r pipelineRun, step string) float64 { return r.steps[step] * 1000 / float64(k) }
	for i, r := range []pipelineRun{without, with} {
		s.row([]string{"without files or keys", "with files and keys"}[i], ms1(r.took)/float64(k),
			per(r, "drop_schema"), per(r, "unlink_large_objects"), per(r, "remove_s3_files"), per(r, "remove_redis_keys"))
	}
	cost := 0.0
	for _, step := range []string{"unlink_large_objects", "remove_s3_files", "remove_redis_keys"} {
		cost += per(with, step) - per(without, step)
	}
	s.add("  %d S3 files + %d large objects + %d Redis keys cost %.0f ms per tenant in the cleaner's store steps; every one removed, none left",
		b.o.files, b.o.files, b.o.keys, cost)
}

// shards: the same fleet cleaned by bin/marker and bin/cleaner (PACE=off:
// the cleaning's own rate, unpaced) on one shard, then with every
// other tenant's schema on a second server the bench starts (testenv's
// initdb, the first server's settings), placed the Onyx way: a
// public.tenant_shard row on the catalog, the shard in ONYX_DB_SHARDS.
func (b *bench) shards(ctx context.Context) {
	n := b.o.shardTenants
	ids, far := tenantIDs(shardID, n), map[string]bool{}
	for i, id := range ids {
		far[id] = i%2 == 1 // alternating: the requests reach both shards
	}
	step("shards: %d drained tenants × %d tables on one shard, then split over two servers", n, 13+b.o.filler)
	var took [2]time.Duration
	testenv.Scope(func(t *testenv.Outside) {
		start, d := time.Now(), testenv.NewDatabases(t)
		addTenants(ctx, d, shardID, 0, n, 1, b.drained)
		b.res.setupLine("shards, one shard: %d tenants × %d tables in %.0f s", n, 13+b.o.filler, time.Since(start).Seconds())
		settle(ctx, b.admin)
		took[0] = b.runPipeline(ctx, d, ids, "PACE=off").took
		info("one shard:  %d tenants in %5.1f s: %4.0f tenants/min", n, took[0].Seconds(), perMin(n, took[0]))
	})
	testenv.Scope(func(t *testenv.Outside) {
		start := time.Now()
		rows, _ := b.admin.Query(ctx, "SELECT name || '=' || setting FROM pg_settings WHERE name = ANY($1)", serverSettings)
		server := testenv.StartPostgres(t, must(pgx.CollectRows(rows, pgx.RowTo[string]))...)
		d, other := testenv.NewDatabases(t), testenv.NewDatabasesOn(t, server.AdminURL)
		addTenants(ctx, d, shardID, 0, n, 1, func(id string) string {
			if far[id] { // its public and control-plane rows here, its schema there
				return fmt.Sprintf("DROP SCHEMA %s CASCADE; INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ('%s', 'far');", ident(id), id)
			}
			return b.drained(id)
		})
		addTenants(ctx, other, func(i int) string { return shardID(2*i + 1) }, 0, n/2, 1, b.drained)
		b.res.setupLine("shards, split: a second server on port %d, %d + %d tenants in %.0f s", server.Port, n-n/2, n/2, time.Since(start).Seconds())
		settle(ctx, b.admin, other.Data)
		took[1] = b.runPipeline(ctx, d, ids, "PACE=off", fmt.Sprintf(`ONYX_DB_SHARDS={"far": {"host": "127.0.0.1", "port": %d, "db": %q, "user": "postgres"}}`,
			server.Port, dbName(other.DataURL))).took
		if left := other.CountData(t, "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)", ids); left != 0 {
			check(fmt.Errorf("%d tenant schemas left on the second server", left))
		}
		info("two servers: %d tenants in %5.1f s: %4.0f tenants/min", n, took[1].Seconds(), perMin(n, took[1]))
	})
	s := b.res.section("SHARDS: %d drained tenants × %d tables, bin/marker + bin/cleaner (PACE=off), on one shard, then every other tenant on a second PostgreSQL server",
		n, 13+b.o.filler).table("  %-36s %12.0f %8.2f", "run", "tenants/min", "× one")
	s.row("one shard (one server)", perMin(n, took[0]), 1.0)
	s.row("two shards on two servers", perMin(n, took[1]), ratio(took[0], took[1]))
	s.add("  this machine has %d CPUs and one disk, shared by both servers, the services and the bench: the gain is bounded by the CPU, "+
		"not what a second machine would add", runtime.NumCPU())
}

const analyzerRounds = 2 // each approach, alternating; the fastest counts

var rePublished = regexp.MustCompile(`published (\d+) candidates`)

// analyzerPass runs bin/analyzer --once on the analyzer fleet, on a
// JetStream of its own: its time, candidates and peak RSS.
func (b *bench) analyzerPass(ctx context.Context) (took time.Duration, published int, rssMiB float64) {
	testenv.Scope(func(t *testenv.Outside) {
		js := testenv.StartJetStream(t)
		start := time.Now()
		p := b.startProc(ctx, t, "analyzer", b.small, js.URL, "ANALYZER_REPORT_DIR="+t.TempDir())
		until(ctx, 10*time.Minute, "bin/analyzer --once done", func() bool { p.PeakRSS(); return p.Exited() })
		took = time.Since(start)
		check(p.Stop())
		m := rePublished.FindStringSubmatch(p.Output.String())
		if m == nil {
			check(fmt.Errorf("bin/analyzer --once printed no summary: %w", p.Failure()))
		}
		published, _ = strconv.Atoi(m[1])
		rssMiB = p.PeakRSS()
	})
	return took, published, rssMiB
}

// perSchemaLoop is the original analyze script: list the tenant schemas,
// then one plain-text query per schema (last USER query, documents, users).
// With one session and the control plane it is the script (and counts the
// candidates); with two sessions and no control plane it is the read floor.
func perSchemaLoop(ctx context.Context, d *testenv.Databases, sessions int, withControl bool) (took time.Duration, candidates int) {
	start := time.Now()
	testenv.Scope(func(t *testenv.Outside) {
		simple := func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol }
		conns := make([]*pgx.Conn, sessions)
		for i := range conns {
			conns[i] = connect(ctx, t, d.DataURL, simple)
		}
		rows, _ := conns[0].Query(ctx, `SELECT nspname::text FROM pg_namespace
			WHERE nspname LIKE 'tenant\_%' AND nspname <> 'tenant_cleanup' ORDER BY 1`)
		schemas := must(pgx.CollectRows(rows, pgx.RowTo[string]))
		acts := make([]struct {
			last        *time.Time
			docs, users int64
		}, len(schemas))
		parallel(sessions, len(schemas), func(w, i int) {
			check(conns[w].QueryRow(ctx, fmt.Sprintf(`SELECT (SELECT max(time_sent) FROM %[1]s.chat_message WHERE message_type = 'USER'),
				(SELECT count(*) FROM %[1]s.document), (SELECT count(*) FROM %[1]s."user")`, ident(schemas[i]))).Scan(&acts[i].last, &acts[i].docs, &acts[i].users))
		})
		if withControl {
			status := map[string]string{}
			var id, st string
			rows, _ = connect(ctx, t, d.ControlURL, func(*pgx.ConnConfig) {}).Query(ctx, `SELECT tenant_id, application_status FROM tenant WHERE created_at < now() - interval '90 days'`)
			must(pgx.ForEachRow(rows, []any{&id, &st}, func() error { status[id] = st; return nil }))
			cutoff := time.Now().Add(-90 * 24 * time.Hour)
			for i, s := range schemas {
				if status[s] == "GATED_ACCESS" && (acts[i].last == nil || acts[i].last.Before(cutoff)) {
					candidates++
				}
			}
		}
		took = time.Since(start)
	})
	return took, candidates
}

// analyzer: bin/analyzer --once against the per-schema loop and the read
// floor on 13-table tenants (the reads touch four tables of each: filler
// would only slow the build), all gated, then a quarter gated.
func (b *bench) analyzer(ctx context.Context) {
	n := b.o.analyzerTenants
	step("analyzer: %d tenants × 13 tables (measured at %d, then %d)", n, n/2, n)
	b.analyzerFleet(ctx)
	perSchemaLoop(ctx, b.small, 1, false) // untimed: sets every row's hint bits
	type best struct{ analyzer, loop, floor time.Duration }
	measure := func(want int) best {
		forever := time.Duration(math.MaxInt64)
		r := best{forever, forever, forever}
		for range analyzerRounds {
			loop, cands := perSchemaLoop(ctx, b.small, 1, true)
			floor, _ := perSchemaLoop(ctx, b.small, 2, false)
			took, published, rss := b.analyzerPass(ctx)
			if cands != want || published != want {
				check(fmt.Errorf("candidates: %d of the per-schema loop, %d of the analyzer, want %d", cands, published, want))
			}
			b.analyzerRSS[1] = max(b.analyzerRSS[1], rss)
			info("loop %.2f s, read floor %.2f s, analyzer %.2f s (%d candidates)", loop.Seconds(), floor.Seconds(), took.Seconds(), published)
			r = best{min(r.analyzer, took), min(r.loop, loop), min(r.floor, floor)}
		}
		return r
	}
	gated := measure(n)
	quarter := func(status string) {
		execSQL(ctx, b.small.Control, "UPDATE tenant SET application_status = $1 WHERE right(tenant_id, 1) NOT IN ('0', '4', '8', 'c')", status)
	}
	quarter("ACTIVE")
	mixed := measure(n / 4)
	quarter("GATED_ACCESS")
	s := b.res.section("ANALYZER: bin/analyzer --once vs the per-schema loop, %d tenants × 13 tables, best of %d", n, analyzerRounds).table(
		"  %-22s %10.2f %10.2f %14.2f %10.2f %16.2f", "fleet", "loop s", "analyzer s", "read floor s", "× loop", "× floor's rate")
	for i, r := range []best{gated, mixed} {
		s.row([]string{"all gated", "a quarter gated"}[i], r.loop.Seconds(), r.analyzer.Seconds(), r.floor.Seconds(),
			ratio(r.loop, r.analyzer), ratio(r.floor, r.analyzer))
	}
	s.add("  ms per tenant: %.3f at %d tenants, %.3f at %d (one pass each); read floor = the loop's reads on two sessions, no control plane",
		ms1(b.halfTook)/float64(n/2), n/2, ms1(gated.analyzer)/float64(n), n)
	b.res.target("analyzer, a quarter gated: ≥ 3 × faster than the per-schema loop (issue 17)", ratio(mixed.loop, mixed.analyzer) >= 3,
		"%.2f × (%.2f s vs %.2f s)", ratio(mixed.loop, mixed.analyzer), mixed.analyzer.Seconds(), mixed.loop.Seconds())
	b.res.target("analyzer, all gated: ≥ 0.75 × the read floor's rate (issue 17)", ratio(gated.floor, gated.analyzer) >= 0.75,
		"%.2f × (%.2f s vs %.2f s)", ratio(gated.floor, gated.analyzer), gated.analyzer.Seconds(), gated.floor.Seconds())
}

// memory: the peak RSS of each service with -memory-tenants tenants in
// flight: the analyzer fleet and bystanders (addBystanders). The analyzer's
// pass over all of them; the marker with a request queued for every tenant,
// the analyzer fleet's first, and the cleaner with a drain check due for
// every tenant (DRAIN_CHECK_DELAY=1h keeps them in flight), each until it
// processed the analyzer fleet's, the rest still queued. What the marker and
// the cleaner gained from half to all of those is printed per tenant (a leak
// would show there).
func (b *bench) memory(ctx context.Context) {
	n, total := b.o.analyzerTenants, b.o.memoryTenants
	if b.small == nil { // the analyzer phase did not run: its fleet and figures
		b.analyzerFleet(ctx)
		_, _, b.analyzerRSS[1] = b.analyzerPass(ctx)
	}
	step("memory: peak RSS with %d tenants, %d of them with tables", total, n)
	start := time.Now()
	addBystanders(ctx, b.small, n, total)
	b.res.setupLine("memory fleet: +%d bystanders (an empty schema and an ACTIVE control-plane row each) in %.0f s", total-n, time.Since(start).Seconds())
	_, published, all := b.analyzerPass(ctx)
	if published != n {
		check(fmt.Errorf("bin/analyzer --once published %d candidates of %d tenants, want %d", published, total, n))
	}
	rss := map[string][2]float64{}
	testenv.Scope(func(t *testenv.Outside) {
		w := testworld.New(t, testworld.Options{Databases: b.small})
		everyone := tenantIDs(smallID, total)
		ids := everyone[:n]
		check(w.Bus.PublishRequests(ctx, requests(everyone), nil))
		service := func(name string, outcome tenant.Outcome) {
			p := b.startProc(ctx, t, name, b.small, w.JS.URL, "DRAIN_CHECK_DELAY=1h")
			var half float64
			await(ctx, w, outcome, ids, []*proc{p}, func() { half = p.PeakRSS() })
			check(p.Stop())
			rss[name] = [2]float64{half, p.PeakRSS()}
		}
		service("marker", tenant.OutcomeMarked)
		now := time.Now()
		for _, id := range everyone {
			check(w.Bus.ScheduleDrainCheck(ctx, tenant.DrainCheck{ID: tenant.ID(id)}, now))
		}
		service("cleaner", tenant.OutcomeDraining)
	})
	s := b.res.section("MEMORY: peak RSS with %d tenants in flight (%d with tables, %d bystanders)", total, n, total-n).table(
		"  %-10s %-64s %14s", "service", "peak RSS (MiB)", "processing")
	s.row("analyzer", fmt.Sprintf("%.1f at %d, %.1f at %d, %.1f at %d tenants (a pass each)", b.analyzerRSS[0], n/2, b.analyzerRSS[1], n, all, total), "")
	b.res.target(fmt.Sprintf("analyzer peak RSS ≤ 64 MiB with %d tenants (issue 17; measured)", total), all <= 64, "%.1f MiB", all)
	for _, name := range []string{"marker", "cleaner"} {
		r := rss[name]
		s.row(name, fmt.Sprintf("%.1f with %d processed, %.1f with %d (of %d in flight)", r[0], n/2, r[1], n, total),
			fmt.Sprintf("%+.2f KiB/tenant", (r[1]-r[0])*1024/float64(n-n/2)))
		b.res.target(fmt.Sprintf("%s peak RSS ≤ 64 MiB with %d tenants in flight (issue 17; measured)", name, total), r[1] <= 64, "%.1f MiB", r[1])
	}
}
