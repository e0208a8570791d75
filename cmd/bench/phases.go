package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// cleaning is one way of cleaning the fleet: the floor (no pace), the
// pipeline with PACE=pace, or none ("-": the foreground alone).
type cleaning struct{ name, pace string }

var floorRun = cleaning{"raw-SQL floor, 2 sessions", ""}

// clean cleans ids on a fresh settled clone of the throughput fleet.
func (b *bench) clean(ctx context.Context, c cleaning, ids []string) (r pipelineRun) {
	scope(func(t *tb) {
		d := b.clone(ctx, t)
		if c.pace == "" {
			r.start = time.Now()
			r.took = runFloor(ctx, t, d, ids)
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
		name string
		fg   latency
		took time.Duration // 0: the foreground alone
	}
	var rows []row
	scope(func(t *tb) {
		fg := b.startForeground(ctx, t)
		for _, c := range []cleaning{{"pgbench alone (before)", "-"}, floorRun, {"pipeline, PACE=off", "off"},
			{"pipeline, PACE=auto (default)", "auto"}, {"pgbench alone (after)", "-"}} {
			r := pipelineRun{start: time.Now(), took: b.o.alone}
			if c.pace == "-" {
				sleep(ctx, b.o.alone) // the measurement's own duration
			} else {
				r = b.clean(ctx, c, ids)
			}
			lat := fg.window(ctx, r.start, r.start.Add(r.took))
			x := row{c.name, summarise(lat, r.took), r.took}
			if c.pace == "-" {
				x.took = 0
			}
			rows = append(rows, x)
			info("%-30s %5.1f s; foreground p50 %s, p99 %s (%d transactions)", c.name, r.took.Seconds(), ms(x.fg.p50), ms(x.fg.p99), len(lat))
		}
	})
	s := b.res.section("UNDER LOAD: pgbench -c %d -j 2 -R %d (scale %d) on the same server; %d drained tenants × %d tables per run",
		b.o.clients, b.o.rate, b.o.scale, len(ids), 13+b.o.filler).table(
		"  %-30s %8s %8s %7.2f %7.0f %12s %8s", "run", "fg p50", "fg p99", "p99 ×", "fg tps", "tenants/min", "× floor")
	// The stricter of the two baselines: other work on a shared machine
	// can only have slowed the foreground.
	alone, floor, paced := min(rows[0].fg.p99, rows[4].fg.p99), perMin(len(ids), rows[1].took), rows[3]
	for _, r := range rows {
		rate, vs := "—", "—"
		if r.took > 0 {
			rate, vs = fmt.Sprintf("%.0f", perMin(len(ids), r.took)), fmt.Sprintf("%.2f", perMin(len(ids), r.took)/floor)
		}
		s.row(r.name, ms(r.fg.p50), ms(r.fg.p99), ratio(r.fg.p99, alone), r.fg.tps, rate, vs)
	}
	b.res.target("paced: foreground p99 during cleaning ≤ 1.5 × alone (the lower of before/after; issue 17)", ratio(paced.fg.p99, alone) <= 1.5,
		"%.2f × (%s vs %s alone)", ratio(paced.fg.p99, alone), ms(paced.fg.p99), ms(alone))
	pacedRate := perMin(len(ids), paced.took)
	b.res.target("paced: cleaning under load ≥ 0.6 × the floor's rate under the same load (issue 17)", pacedRate/floor >= 0.6,
		"%.2f × (%.0f vs %.0f tenants/min)", pacedRate/floor, pacedRate, floor)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
		check(ctx.Err())
	case <-time.After(d):
	}
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
	scope(func(t *tb) {
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

// foreground is pgbench at a fixed rate on a database of its own on the
// same server, logging every transaction, so that the latencies of any
// window of time can be read afterwards.
type foreground struct {
	*proc
	prefix string
}

func (b *bench) startForeground(ctx context.Context, t *tb) *foreground {
	name := b.newDatabase(t)
	execSQL(ctx, b.admin, "CREATE DATABASE "+ident(name))
	out, err := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(b.o.scale), testenv.DatabaseURL(name)).CombinedOutput()
	check(err, "pgbench -i", string(out))
	execSQL(ctx, b.admin, "CHECKPOINT")
	fg := &foreground{prefix: filepath.Join(t.TempDir(), "fg")}
	// -R: latency counts from each transaction's scheduled start, so a
	// foreground held up by the cleanup shows it even when it catches up.
	fg.proc = spawn(t, "pgbench", exec.CommandContext(ctx, "pgbench", "-n", "-c", strconv.Itoa(b.o.clients), "-j", "2",
		"-R", strconv.Itoa(b.o.rate), "-T", "86400", "-l", "--log-prefix", fg.prefix, testenv.DatabaseURL(name)))
	return fg
}

// window is the foreground's transactions that ended between from and to.
// pgbench buffers its logs, so it first waits until every log file has
// reached to.
func (fg *foreground) window(ctx context.Context, from, to time.Time) (lat []time.Duration) {
	until(ctx, time.Minute, "pgbench's logs reaching the window's end", func() bool {
		files, _ := filepath.Glob(fg.prefix + ".*")
		lat = lat[:0]
		for _, file := range files {
			f := must(os.Open(file))
			got, last, err := parsePgbenchLog(f, from, to)
			f.Close()
			check(err)
			if last.Before(to) {
				if fg.exited() {
					check(fg.failure())
				}
				return false
			}
			lat = append(lat, got...)
		}
		return len(files) > 0
	})
	return lat
}

// parsePgbenchLog reads a pgbench transaction log (pgbench -l: "client_id
// transaction_no time script_no time_epoch time_us [schedule_lag]", time in
// microseconds, the epoch of the transaction's end) and returns the
// latencies of the transactions that ended in [from, to), and the end of
// the last one logged.
func parsePgbenchLog(r io.Reader, from, to time.Time) ([]time.Duration, time.Time, error) {
	var (
		lat  []time.Duration
		last time.Time
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue // a line pgbench has not finished writing
		}
		us, err1 := strconv.ParseInt(f[2], 10, 64)
		sec, err2 := strconv.ParseInt(f[4], 10, 64)
		usec, err3 := strconv.ParseInt(f[5], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			if f[2] == "skipped" {
				continue
			}
			return nil, last, fmt.Errorf("pgbench log: cannot read %q", sc.Text())
		}
		last = time.Unix(sec, usec*1000)
		if !last.Before(from) && last.Before(to) {
			lat = append(lat, time.Duration(us)*time.Microsecond)
		}
	}
	return lat, last, sc.Err()
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of xs.
func percentile(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// latency summarises a window of the foreground.
type latency struct {
	p50, p99 time.Duration
	tps      float64
}

func summarise(xs []time.Duration, window time.Duration) latency {
	return latency{p50: percentile(xs, 50), p99: percentile(xs, 99), tps: float64(len(xs)) / window.Seconds()}
}
