package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/tracelog"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/pacer"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// proc is a service's binary started by the bench.
type proc struct {
	*testenv.Process
	name, addr string
}

// startProc starts bin/<name> for t's scope on d and JetStream, with the
// given settings, then -service-env, and everything else at its default: the
// bench's own environment is not passed on, so that a shell's settings cannot
// leak in.
func (b *bench) startProc(ctx context.Context, t *testenv.Outside, name string, d *testenv.Databases, natsURL string, settings ...string) *proc {
	p := &proc{name: name, addr: testenv.FreeAddr(t)}
	cmd := exec.CommandContext(ctx, filepath.Join(b.o.bin, name))
	if name == "analyzer" {
		cmd.Args = append(cmd.Args, "--once")
	}
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "DATA_PLANE_DATABASE_URL=" + d.DataURL,
		"CONTROL_PLANE_DATABASE_URL=" + d.ControlURL, "NATS_URL=" + natsURL, "HTTP_ADDR=" + p.addr}, settings...)
	cmd.Env = append(cmd.Env, b.o.serviceEnv...)
	p.Process = testenv.StartProcess(t, cmd)
	return p
}

// ready waits until the service at addr answers 200 on /readyz (its stores
// reachable, its loop consuming); p, when not nil, is its process.
func ready(ctx context.Context, addr string, p *proc) {
	until(ctx, time.Minute, addr+" ready", func() bool {
		if p != nil && p.Exited() {
			check(p.Failure())
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		return err == nil && resp.Body.Close() == nil && resp.StatusCode == http.StatusOK
	})
}

var reStepSum = regexp.MustCompile(`(?m)^tenant_cleanup_step_duration_seconds_sum\{[^}]*step="([a-z_0-9]+)"[^}]*\} (\S+)$`)

// steps reads the seconds per step of the cleaner's /metrics.
func (p *proc) steps() map[string]float64 {
	out := map[string]float64{}
	if resp, err := http.Get("http://" + p.addr + "/metrics"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, m := range reStepSum.FindAllStringSubmatch(string(body), -1) {
			out[m[1]], _ = strconv.ParseFloat(m[2], 64)
		}
	}
	return out
}

// badOutcomes must not happen in a bench.
var badOutcomes = []tenant.Outcome{tenant.OutcomeRefused, tenant.OutcomeStuck, tenant.OutcomeHeld, tenant.OutcomeCapped, tenant.OutcomeDead}

// await waits until every tenant of ids reached outcome o in w's events; it
// fails on a bad outcome of one of them, a process that exited, or no
// progress for five minutes. Once half of them reached it, it calls half
// (when not nil).
func await(ctx context.Context, w *testworld.World, o tenant.Outcome, ids []string, procs []*proc, half func()) {
	ours := map[tenant.ID]bool{}
	for _, id := range ids {
		ours[tenant.ID(id)] = true
	}
	n, last, lastAt := len(ids), -1, time.Now()
	until(ctx, 24*time.Hour, fmt.Sprintf("%d tenants %s", n, o), func() bool {
		reached := map[tenant.ID]bool{}
		for _, ev := range w.Events() {
			if !ours[ev.TenantID] {
				continue
			}
			if slices.Contains(badOutcomes, ev.Outcome) {
				check(fmt.Errorf("unexpected event: %s %s: %s", ev.Outcome, ev.TenantID, ev.Reason))
			}
			if ev.Outcome == o {
				reached[ev.TenantID] = true
			}
		}
		for _, p := range procs {
			if p.Exited() {
				check(p.Failure())
			}
		}
		count := len(reached)
		if half != nil && count >= n/2 {
			half()
			half = nil
		}
		if count != last {
			last, lastAt = count, time.Now()
		} else if time.Since(lastAt) > 5*time.Minute {
			check(fmt.Errorf("no progress for 5 minutes at %d/%d %s", count, n, o))
		}
		return count >= n
	})
}

func requests(ids []string) []tenant.Request {
	reqs := make([]tenant.Request, len(ids))
	for i, id := range ids {
		reqs[i] = tenant.Request{ID: tenant.ID(id), RequestedBy: "bench"}
	}
	return reqs
}

// cleanAll requests the cleanup of ids from w's services (procs, if they
// are processes), waits until all are cleaned and verifies that they are
// gone: when it requested them and how long until the last was cleaned.
func cleanAll(ctx context.Context, t *testenv.Outside, w *testworld.World, ids []string, procs []*proc) (time.Time, time.Duration) {
	start := time.Now()
	check(w.Bus.PublishRequests(ctx, requests(ids), nil))
	await(ctx, w, tenant.OutcomeCleaned, ids, procs, nil)
	took := time.Since(start)
	verifyGone(t, w.DBs, "tenant_cleanup.ledger", ids)
	return start, took
}

// pipelineRun is one run of the pipeline (or the floor) over some tenants.
type pipelineRun struct {
	start             time.Time
	took, calibration time.Duration
	rssMiB            map[string]float64
	steps             map[string]float64 // the cleaner's seconds per step
}

// runPipeline starts bin/marker and bin/cleaner on d (DRAIN_CHECK_DELAY=0s,
// then settings) with a JetStream of their own and, once both are ready and
// the pacer has calibrated, cleans ids with them (cleanAll).
func (b *bench) runPipeline(ctx context.Context, d *testenv.Databases, ids []string, settings ...string) (r pipelineRun) {
	testenv.Scope(func(t *testenv.Outside) {
		w := testworld.New(t, testworld.Options{Databases: d})
		var procs []*proc
		for _, name := range []string{"marker", "cleaner"} {
			procs = append(procs, b.startProc(ctx, t, name, d, w.JS.URL, append([]string{"DRAIN_CHECK_DELAY=0s"}, settings...)...))
		}
		for _, p := range procs {
			ready(ctx, p.addr, p)
		}
		// A paced cleaner first learns the probe's baseline (about 10 s)
		// and drops nothing meanwhile: a cost at start, measured apart.
		calibrating := time.Now()
		until(ctx, 2*time.Minute, "pacer calibration", func() bool {
			paces := must(w.Bus.Paces(ctx, time.Now()))
			return slices.Contains(settings, "PACE=off") || len(paces) > 0 && !slices.ContainsFunc(paces,
				func(p bus.PaceReport) bool { return p.State == "calibrating" }) // one pacer per shard
		})
		r = pipelineRun{calibration: time.Since(calibrating), rssMiB: map[string]float64{}}
		r.start, r.took = cleanAll(ctx, t, w, ids, procs)
		r.steps = procs[1].steps()
		for _, p := range procs {
			check(p.Stop())
			r.rssMiB[p.name] = p.PeakRSS()
		}
	})
	return r
}

// tracer sums the time of every statement of the pools it is set on, as the
// client saw it, by source and statement (the tenant's schema folded).
type tracer struct {
	mu    sync.Mutex
	stats map[[2]string]stmtStat
}

type stmtStat struct {
	calls      int
	total, max time.Duration
}

var (
	reSchema = regexp.MustCompile(`"?tenant_[0-9a-f-]{36}"?`)
	reSpace  = regexp.MustCompile(`\s+`)
)

// on is ctx with the tracer (pgx's tracelog: the data plane sends no
// batches) for the data-plane pools the service source opens under it.
func (tr *tracer) on(ctx context.Context, source string) context.Context {
	return service.WithQueryTracer(ctx, &tracelog.TraceLog{LogLevel: tracelog.LogLevelInfo, Logger: tracelog.LoggerFunc(
		func(_ context.Context, _ tracelog.LogLevel, msg string, data map[string]any) {
			if sql, ok := data["sql"].(string); ok && msg == "Query" {
				tr.add(source+"/data", sql, data["time"].(time.Duration))
			}
		})})
}

func (tr *tracer) add(source, sql string, took time.Duration) {
	if sql = reSpace.ReplaceAllString(reSchema.ReplaceAllString(sql, "<t>"), " "); len(sql) > 110 {
		sql = sql[:110] + "…"
	}
	k := [2]string{source, strings.TrimSpace(sql)}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	s := tr.stats[k]
	tr.stats[k] = stmtStat{s.calls + 1, s.total + took, max(s.max, took)}
}

// top writes into s each source's round trips and time per tenant of n,
// then the statements that took most time.
func (tr *tracer) top(s *section, n, rows int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	totals, calls := map[string]time.Duration{}, map[string]int{}
	for k, v := range tr.stats {
		totals[k[0]] += v.total
		calls[k[0]] += v.calls
	}
	for _, src := range slices.Sorted(maps.Keys(totals)) {
		s.add("  %-14s %6.1f round trips, %7.1f ms per tenant", src, float64(calls[src])/float64(n), ms1(totals[src])/float64(n))
	}
	keys := slices.SortedFunc(maps.Keys(tr.stats), func(a, b [2]string) int { return int(tr.stats[b].total - tr.stats[a].total) })
	s.table("  %-14s %8.2f %9.2f %8.1f  %s", "source", "calls/t", "ms/tenant", "max ms", "statement")
	for _, k := range keys[:min(rows, len(keys))] {
		v := tr.stats[k]
		s.row(k[0], float64(v.calls)/float64(n), ms1(v.total)/float64(n), ms1(v.max), k[1])
	}
}

// profile: the marker and the cleaner run in this process as pkg/service
// runs them (PACE=off, the world's configurations), their data-plane SQL
// traced, over the throughput fleet.
func (b *bench) profile(ctx context.Context) {
	ids := b.ids[:b.o.tenants]
	step("profile: marker and cleaner in-process, data-plane SQL timed by a pgx tracer, %d tenants", len(ids))
	tr := &tracer{stats: map[[2]string]stmtStat{}}
	var took time.Duration
	testenv.Scope(func(t *testenv.Outside) {
		d := b.clone(ctx, t)
		w := testworld.New(t, testworld.Options{Databases: d})
		w.SetCheckDelay(0)
		w.Cleaner.Pace.Mode = pacer.ModeOff
		w.Marker.HTTPAddr, w.Cleaner.HTTPAddr = testenv.FreeAddr(t), testenv.FreeAddr(t)
		log := slog.New(slog.DiscardHandler)
		w.Go(func(ctx context.Context) error { return service.RunMarker(tr.on(ctx, "marker"), &w.Marker, log) })
		w.Go(func(ctx context.Context) error { return service.RunCleaner(tr.on(ctx, "cleaner"), &w.Cleaner, log) })
		ready(ctx, w.Marker.HTTPAddr, nil)
		ready(ctx, w.Cleaner.HTTPAddr, nil)
		_, took = cleanAll(ctx, t, w, ids, nil)
	})
	s := b.res.section("PROFILE: marker + cleaner in-process (PACE=off), %d tenants in %.1f s (%.0f tenants/min with the tracer); data-plane SQL by statement, as the client saw it",
		len(ids), took.Seconds(), perMin(len(ids), took))
	tr.top(s, len(ids), 16)
}
