package main

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/pipeline"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// tracer times every statement of the pools it is set on (a pgx
// QueryTracer; the data plane sends no batches), by source and statement
// with the tenant's schema folded, as the client sees it (including the
// wait for a CPU on a busy machine).
type tracer struct {
	mu    sync.Mutex
	stats map[[2]string]*stmtStat
}

type stmtStat struct {
	calls      int
	total, max time.Duration
}

type traced struct {
	t      *tracer
	source string
}

type traceStart struct {
	sql string
	at  time.Time
}

type traceKey struct{}

func (t *tracer) on(cfg *pgxpool.Config, source string) *pgxpool.Config {
	cfg.ConnConfig.Tracer = traced{t, source}
	return cfg
}

func (s traced) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, traceKey{}, traceStart{d.SQL, time.Now()})
}

func (s traced) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if st, ok := ctx.Value(traceKey{}).(traceStart); ok {
		s.t.add(s.source, st.sql, time.Since(st.at))
	}
}

var (
	reSchema = regexp.MustCompile(`"?tenant_[0-9a-f-]{36}"?`)
	reSpace  = regexp.MustCompile(`\s+`)
)

func (t *tracer) add(source, sql string, took time.Duration) {
	sql = reSpace.ReplaceAllString(reSchema.ReplaceAllString(sql, "<t>"), " ")
	if len(sql) > 110 {
		sql = sql[:110] + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := [2]string{source, strings.TrimSpace(sql)}
	s := t.stats[k]
	if s == nil {
		s = &stmtStat{}
		t.stats[k] = s
	}
	s.calls++
	s.total += took
	s.max = max(s.max, took)
}

// top writes the statements that took most time, per tenant of n, into s.
func (t *tracer) top(s *section, n, rows int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([][2]string, 0, len(t.stats))
	totals := map[string]time.Duration{}
	calls := map[string]int{}
	for k, v := range t.stats {
		keys = append(keys, k)
		totals[k[0]] += v.total
		calls[k[0]] += v.calls
	}
	for _, src := range slices.Sorted(maps.Keys(totals)) {
		s.add("  %-14s %6.1f round trips, %7.1f ms per tenant", src, float64(calls[src])/float64(n), ms1(totals[src])/float64(n))
	}
	sort.Slice(keys, func(i, j int) bool { return t.stats[keys[i]].total > t.stats[keys[j]].total })
	s.add("  %-14s %8s %9s %8s  %s", "source", "calls/t", "ms/tenant", "max ms", "statement")
	for _, k := range keys[:min(rows, len(keys))] {
		v := t.stats[k]
		s.add("  %-14s %8.2f %9.2f %8.1f  %s", k[0], float64(v.calls)/float64(n), ms1(v.total)/float64(n), ms1(v.max), k[1])
	}
}

func ms1(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// configure gives a service's configuration its defaults and the clone's
// URLs, as the binary would have them from the environment.
func configure(spec any, c *config.Common, f fleet, natsURL string) {
	config.Defaults(spec)
	c.DataPlaneURL, c.ControlPlaneURL, c.NATSURL = dbURL(f.data), dbURL(f.control), natsURL
}

// openTraced opens the stores and the bus of a service run in-process, its
// data-plane pool traced.
func openTraced(ctx context.Context, t *tb, tr *tracer, c *config.Common, name string, opts dataplane.Options) (pipeline.Stores, *bus.Bus) {
	pcfg, err := pgxpool.ParseConfig(c.DataPlaneURL)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.MaxConns = c.DBMaxConns
	data, err := dataplane.Open(ctx, tr.on(pcfg, name+"/data"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(data.Close)
	if _, err := data.Ensure(ctx, true); err != nil {
		t.Fatal(err)
	}
	control, err := controlplane.Open(ctx, c.ControlPlaneDSN(), "bench-"+name, c.DBMaxConns, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(control.Close)
	if err := control.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	bs, err := connectBus(ctx, c.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bs.Close)
	return pipeline.Stores{Data: data, Control: control}, bs
}

// profile: the marker and the cleaner run in this process with their
// configuration's defaults (as pkg/service assembles them, without pacing
// and metrics), their data-plane SQL traced, over the throughput fleet.
func (b *bench) profile(ctx context.Context) error {
	ids := b.ids[:b.o.tenants]
	step("profile: marker and cleaner in-process, data-plane SQL timed by a pgx tracer, %d tenants", len(ids))
	f := b.clone(ctx, fleet{b.tplData, b.tplControl})
	defer f.drop()
	js := testenv.StartJetStream(b.t)
	defer js.Shutdown()
	var mcfg config.Marker
	var ccfg config.Cleaner
	configure(&mcfg, &mcfg.Common, f, js.URL)
	configure(&ccfg, &ccfg.Common, f, js.URL)
	mcfg.CheckDelay, ccfg.CheckDelay = 0, 0
	tr := &tracer{stats: map[[2]string]*stmtStat{}}
	mstores, mbus := openTraced(ctx, b.t, tr, &mcfg.Common, "marker", dataplane.Options{})
	cstores, cbus := openTraced(ctx, b.t, tr, &ccfg.Common, "cleaner", dataplane.Options{DropSlots: ccfg.DropSlots, LockTimeout: ccfg.DDLLockTimeout})
	rules := pipeline.Rules{Window: tenant.Window(mcfg.InactiveDays), ShardName: mcfg.ShardName, RowLockTimeout: 15 * time.Second}
	m := &pipeline.Marker{Stores: mstores, Rules: rules, Pending: mbus, CheckDelay: mcfg.CheckDelay, Now: time.Now}
	c := &pipeline.Cleaner{Stores: cstores, Rules: rules, CheckDelay: ccfg.CheckDelay, CheckMaxDelay: ccfg.CheckMaxDelay,
		Timeout: ccfg.Timeout, MaxLeftoverDocs: ccfg.MaxLeftoverDocs, MaxPerHour: ccfg.MaxPerHour, MaxPerDay: ccfg.MaxPerDay,
		Identity: "bench-cleaner", Now: time.Now}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	wg.Go(func() {
		_ = mbus.Consume(runCtx, bus.ConsumeOptions{Consumer: bus.ConsumerMarker, FilterSubject: bus.SubjectCandidate,
			Concurrency: mcfg.Concurrency, AckWait: mcfg.AckWait, MaxFailures: mcfg.MaxFailures}, m.Handle)
	})
	wg.Go(func() {
		_ = cbus.Consume(runCtx, bus.ConsumeOptions{Consumer: bus.ConsumerCleaner, FilterSubject: bus.DrainSubjects,
			Concurrency: ccfg.Concurrency, AckWait: ccfg.AckWait, MaxFailures: ccfg.MaxFailures}, c.Handle)
	})
	ev, stopEvents, err := watchEvents(ctx, mbus)
	if err != nil {
		return err
	}
	defer stopEvents()
	start := time.Now()
	if err := mbus.PublishRequests(ctx, requests(ids), nil); err != nil {
		return err
	}
	if err := ev.wait(ctx, tenant.OutcomeCleaned, len(ids), nil, nil); err != nil {
		return err
	}
	took := time.Since(start)
	s := b.res.section(fmt.Sprintf("PROFILE: marker + cleaner in-process (PACE=off), %d tenants in %.1f s (%.0f tenants/min with the tracer); data-plane SQL by statement, as the client saw it",
		len(ids), took.Seconds(), perMin(len(ids), took)))
	tr.top(s, len(ids), 16)
	return verifyGone(ctx, f, "tenant_cleanup.ledger", ids)
}
