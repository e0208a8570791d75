package main

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/tracelog"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/pipeline"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// tracer sums the time of every statement of the pools it is set on, as
// the client saw it (a wait for a CPU on a busy machine included), by
// source and statement with the tenant's schema folded.
type tracer struct {
	mu    sync.Mutex
	stats map[[2]string]*stmtStat
}

type stmtStat struct {
	calls      int
	total, max time.Duration
}

var (
	reSchema = regexp.MustCompile(`"?tenant_[0-9a-f-]{36}"?`)
	reSpace  = regexp.MustCompile(`\s+`)
)

// on sets the tracer on cfg: pgx's tracelog, whose "Query" entries carry
// the statement and its time (the data plane sends no batches).
func (tr *tracer) on(cfg *pgxpool.Config, source string) *pgxpool.Config {
	cfg.ConnConfig.Tracer = &tracelog.TraceLog{LogLevel: tracelog.LogLevelInfo, Logger: tracelog.LoggerFunc(
		func(_ context.Context, _ tracelog.LogLevel, msg string, data map[string]any) {
			if sql, ok := data["sql"].(string); ok && msg == "Query" {
				tr.add(source, sql, data["time"].(time.Duration))
			}
		})}
	return cfg
}

func (tr *tracer) add(source, sql string, took time.Duration) {
	sql = reSpace.ReplaceAllString(reSchema.ReplaceAllString(sql, "<t>"), " ")
	if len(sql) > 110 {
		sql = sql[:110] + "…"
	}
	sql = strings.TrimSpace(sql)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	s := tr.stats[[2]string{source, sql}]
	if s == nil {
		s = &stmtStat{}
		tr.stats[[2]string{source, sql}] = s
	}
	s.calls++
	s.total += took
	s.max = max(s.max, took)
}

// top writes the round trips and time per tenant of n of each source, then
// the statements that took most time, into s.
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
	s.format = "  %-14s %8.2f %9.2f %8.1f  %s"
	s.add(reVerb.ReplaceAllString(s.format, "%${1}s"), "source", "calls/t", "ms/tenant", "max ms", "statement")
	for _, k := range keys[:min(rows, len(keys))] {
		v := tr.stats[k]
		s.row(k[0], float64(v.calls)/float64(n), ms1(v.total)/float64(n), ms1(v.max), k[1])
	}
}

// profile: the marker and the cleaner run in this process with their
// configurations' defaults (as pkg/service assembles them, without pacing
// and metrics), their data-plane SQL traced, over the throughput fleet.
func (b *bench) profile(ctx context.Context) {
	ids := b.ids[:b.o.tenants]
	step("profile: marker and cleaner in-process, data-plane SQL timed by a pgx tracer, %d tenants", len(ids))
	tr := &tracer{stats: map[[2]string]*stmtStat{}}
	var took time.Duration
	scope(func(t *tb) {
		d := b.clone(ctx, t)
		w := testworld.New(t, testworld.Options{Databases: d})
		w.SetCheckDelay(0)
		mcfg, ccfg := &w.Marker, &w.Cleaner
		stores := func(c *config.Common, name string, opts dataplane.Options) pipeline.Stores {
			pcfg := must(pgxpool.ParseConfig(c.DataPlaneURL))
			pcfg.MaxConns = c.DBMaxConns
			data := must(dataplane.Open(ctx, tr.on(pcfg, name+"/data"), opts))
			t.Cleanup(data.Close)
			must(data.Ensure(ctx, true)) // as the services do at start
			control := must(controlplane.Open(ctx, c.ControlPlaneDSN(), "bench-"+name, c.DBMaxConns, nil))
			t.Cleanup(control.Close)
			check(control.Ensure(ctx))
			return pipeline.Stores{Data: data, Control: control}
		}
		rules := pipeline.Rules{Window: tenant.Window(mcfg.InactiveDays), ShardName: mcfg.ShardName, RowLockTimeout: 15 * time.Second}
		m := &pipeline.Marker{Stores: stores(&mcfg.Common, "marker", dataplane.Options{}), Rules: rules, Pending: w.Bus,
			CheckDelay: mcfg.CheckDelay, Now: time.Now}
		c := &pipeline.Cleaner{Stores: stores(&ccfg.Common, "cleaner", dataplane.Options{DropSlots: ccfg.DropSlots, LockTimeout: ccfg.DDLLockTimeout}),
			Rules: rules, CheckDelay: ccfg.CheckDelay, CheckMaxDelay: ccfg.CheckMaxDelay, Timeout: ccfg.Timeout,
			MaxLeftoverDocs: ccfg.MaxLeftoverDocs, MaxPerHour: ccfg.MaxPerHour, MaxPerDay: ccfg.MaxPerDay, Identity: "bench-cleaner", Now: time.Now}
		w.Go(func(ctx context.Context) error {
			return w.Bus.Consume(ctx, bus.ConsumeOptions{Consumer: bus.ConsumerMarker, FilterSubject: bus.SubjectCandidate,
				Concurrency: mcfg.Concurrency, AckWait: mcfg.AckWait, MaxFailures: mcfg.MaxFailures}, m.Handle)
		})
		w.Go(func(ctx context.Context) error {
			return w.Bus.Consume(ctx, bus.ConsumeOptions{Consumer: bus.ConsumerCleaner, FilterSubject: bus.DrainSubjects,
				Concurrency: ccfg.Concurrency, AckWait: ccfg.AckWait, MaxFailures: ccfg.MaxFailures}, c.Handle)
		})
		start := time.Now()
		check(w.Bus.PublishRequests(ctx, requests(ids), nil))
		await(ctx, w, tenant.OutcomeCleaned, len(ids), nil, nil)
		took = time.Since(start)
		verifyGone(ctx, d, "tenant_cleanup.ledger", ids)
	})
	s := b.res.section(fmt.Sprintf("PROFILE: marker + cleaner in-process (PACE=off), %d tenants in %.1f s (%.0f tenants/min with the tracer); data-plane SQL by statement, as the client saw it",
		len(ids), took.Seconds(), perMin(len(ids), took)))
	tr.top(s, len(ids), 16)
}
