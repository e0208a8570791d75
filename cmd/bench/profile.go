package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

type profileResult struct {
	Tenants   int     `json:"tenants"`
	Seconds   float64 `json:"seconds"`
	PerMinute float64 `json:"tenants_per_minute_with_proxy_and_profiler"`
	Dir       string  `json:"dir"`
	// CPUSeconds is the Go CPU time the profile sampled, per label
	// (service=marker, service=cleaner; "other" is the embedded JetStream
	// server and the bench itself).
	CPUSeconds map[string]float64 `json:"go_cpu_seconds"`
	// Components is the flat CPU time by component (package group), per
	// label view (all, marker, cleaner).
	Components map[string]map[string]float64 `json:"go_cpu_seconds_by_component"`
	Top        map[string][]string           `json:"pprof_top"`
	// DB is the round-trip time the proxies measured per source
	// (service/plane), and the statements.
	DBSeconds  map[string]float64 `json:"db_round_trip_seconds"`
	RoundTrips map[string]float64 `json:"round_trips_per_tenant"`
	Statements []stmtRow          `json:"statements"`
}

// collect takes the statement timings of the proxies and writes them to
// statements.txt in dir.
func (r *profileResult) collect(proxies map[string]*pgProxy, dir, what string) error {
	r.DBSeconds, r.RoundTrips = map[string]float64{}, map[string]float64{}
	for _, name := range sortedKeys(proxies) {
		rows, total, trips := proxies[name].rows(r.Tenants)
		r.DBSeconds[name] = total.Seconds()
		r.RoundTrips[name] = float64(trips) / float64(r.Tenants)
		r.Statements = append(r.Statements, rows...)
	}
	sort.SliceStable(r.Statements, func(i, j int) bool { return r.Statements[i].TotalSec > r.Statements[j].TotalSec })
	return writeStatements(filepath.Join(dir, "statements.txt"), r, proxies, what)
}

// startProxies starts one timing proxy per name, all to the server of the
// admin URL; sessions reach it through viaProxy.
func (b *bench) startProxies(names ...string) (map[string]*pgProxy, error) {
	admin, err := url.Parse(b.o.admin)
	if err != nil {
		return nil, err
	}
	target := admin.Host
	if !strings.Contains(target, ":") {
		target += ":5432"
	}
	proxies := map[string]*pgProxy{}
	for _, name := range names {
		p, err := startProxy(name, target)
		if err != nil {
			closeProxies(proxies)
			return nil, err
		}
		proxies[name] = p
	}
	return proxies, nil
}

func closeProxies(proxies map[string]*pgProxy) {
	for _, p := range proxies {
		p.close()
	}
}

// viaProxy is dbURL pointed at the proxy.
func viaProxy(p *pgProxy, dbURL string) string {
	u, _ := url.Parse(dbURL)
	u.Host = p.addr()
	return u.String()
}

// runProfile is (p): the marker and one cleaner run inside this process
// (service.RunMarker, service.RunCleaner, configured by config.Load from the
// environment exactly as the binaries are) under the CPU profiler, with
// goroutine labels service=marker|cleaner, and their four database pools go
// through wire-protocol proxies that time each statement.
func (b *bench) runProfile(ctx context.Context) error {
	n := len(b.fleet.ids)
	step("(p) profile: marker + 1 cleaner in-process under pprof, SQL timed by a wire proxy, %d tenants", n)
	dir, err := filepath.Abs(b.o.profileDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, control, err := b.clone(ctx, "p", b.fleet.data, b.fleet.control)
	if err != nil {
		return err
	}
	defer b.dropDatabases(data, control)
	js, err := b.startJetStream("p")
	if err != nil {
		return err
	}
	defer js.shutdown(b.o.keep)

	proxies, err := b.startProxies("marker/data", "marker/control", "cleaner/data", "cleaner/control")
	if err != nil {
		return err
	}
	defer closeProxies(proxies)
	via := func(proxy, db string) string { return viaProxy(proxies[proxy], b.dbURL(db)) }

	var mcfg config.Marker
	if err := loadConfig(&mcfg, via("marker/data", data), via("marker/control", control), js.url, nil); err != nil {
		return err
	}
	var ccfg config.Cleaner
	if err := loadConfig(&ccfg, via("cleaner/data", data), via("cleaner/control", control), js.url, nil); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(b.tmp, "profile-services.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	logger := func(svc string) *slog.Logger {
		return slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo})).With("service", svc)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg      sync.WaitGroup
		runErrs = make([]error, 2)
	)
	wg.Add(2)
	go pprof.Do(runCtx, pprof.Labels("service", "marker"), func(ctx context.Context) {
		defer wg.Done()
		runErrs[0] = service.RunMarker(ctx, &mcfg, logger("marker"))
	})
	go pprof.Do(runCtx, pprof.Labels("service", "cleaner"), func(ctx context.Context) {
		defer wg.Done()
		runErrs[1] = service.RunCleaner(ctx, &ccfg, logger("cleaner"))
	})
	defer func() { stop(); wg.Wait() }()

	nc, err := nats.Connect(js.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := waitReady(ctx, js, nc, 2, []string{bus.ConsumerMarker, bus.ConsumerCleaner}, nil); err != nil {
		return err
	}
	ev, err := followEvents(nc)
	if err != nil {
		return err
	}
	csvPath := filepath.Join(b.tmp, "p-tenants.csv")
	if err := writeCSV(csvPath, b.fleet.ids); err != nil {
		return err
	}
	// Only what happens from here on counts: reset the statement counters
	// (the services' start-up queries) and start the profiler.
	for _, p := range proxies {
		p.mu.Lock()
		p.stats = map[string]*stmtStat{}
		p.mu.Unlock()
	}
	cpuPath := filepath.Join(dir, "cpu.pprof")
	cpuFile, err := os.Create(cpuPath)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(cpuFile); err != nil {
		cpuFile.Close()
		return err
	}
	t0 := time.Now()
	ctl := exec.CommandContext(ctx, filepath.Join(b.o.bin, "tenantctl"), "cleanup", "--csv", csvPath)
	ctl.Env = serviceEnv("", "", js.url)
	out, err := ctl.CombinedOutput()
	if err == nil {
		err = waitProgress(ctx, n, 3*time.Minute, func() (int, error) {
			if bad := ev.bad(); bad != "" {
				return 0, fmt.Errorf("unexpected event: %s", bad)
			}
			return ev.count("cleaned"), nil
		}, func(done int) { info("%d/%d cleaned after %s", done, n, time.Since(t0).Round(time.Second)) })
	} else {
		err = fmt.Errorf("tenantctl: %w\n%s", err, out)
	}
	took := time.Since(t0)
	pprof.StopCPUProfile()
	cpuFile.Close()
	if err != nil {
		return err
	}
	if f, err := os.Create(filepath.Join(dir, "allocs.pprof")); err == nil {
		_ = pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	stop()
	wg.Wait()
	for i, e := range runErrs {
		if e != nil {
			return fmt.Errorf("%s: %w", []string{"marker", "cleaner"}[i], e)
		}
	}

	r := &profileResult{Tenants: n, Seconds: took.Seconds(), PerMinute: float64(n) / took.Minutes(), Dir: dir}
	if err := r.collect(proxies, dir, "marker and cleaner"); err != nil {
		return err
	}
	r.CPUSeconds, r.Components, r.Top = analyzeProfile(cpuPath, dir, "marker", "cleaner")
	b.res.Profile = r
	info("%d tenants in %s (%.0f tenants/min with the proxies and the profiler: not a result)", n, took.Round(time.Second), r.PerMinute)
	info("Go CPU sampled: %s", fmtSeconds(r.CPUSeconds))
	info("database round trips per tenant: %s", fmtPerTenant(r.RoundTrips))
	info("database time (s): %s", fmtSeconds(r.DBSeconds))
	info("top statements by total time:")
	for _, s := range r.Statements[:min(12, len(r.Statements))] {
		info("  %-16s %6.1f s %5.1f calls/tenant %7.2f ms mean  %s", s.Source, s.TotalSec, s.PerTenant, s.MeanMs, shorten(s.Statement, 90))
	}
	info("profiles and statement tables in %s", dir)
	return nil
}

func fmtPerTenant(m map[string]float64) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// loadConfig sets the environment a service would get (the URLs,
// DRAIN_CHECK_DELAY=0s, every other setting unset, so at its default; the
// metrics endpoint off) and loads spec from it with the product's config.Load.
func loadConfig(spec any, dataURL, controlURL, natsURL string, extra map[string]string) error {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); serviceSetting(k) {
			os.Unsetenv(k)
		}
	}
	for k, v := range map[string]string{"DATA_PLANE_DATABASE_URL": dataURL, "CONTROL_PLANE_DATABASE_URL": controlURL,
		"NATS_URL": natsURL, "DRAIN_CHECK_DELAY": "0s", "HTTP_ADDR": ""} {
		os.Setenv(k, v)
	}
	for k, v := range extra {
		os.Setenv(k, v)
	}
	return config.Load(spec)
}

func writeStatements(path string, r *profileResult, proxies map[string]*pgProxy, what string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "Round trips of the %s, %d tenants, timed by the wire proxy\n\n", what, r.Tenants)
	for _, name := range sortedKeys(proxies) {
		fmt.Fprintf(w, "%s: %.1f s in %.1f round trips per tenant\n", name, r.DBSeconds[name], r.RoundTrips[name])
		fmt.Fprintf(w, "  %8s %8s %9s %9s %9s %6s  %s\n", "calls", "/tenant", "total s", "mean ms", "max ms", "share", "statement")
		for _, s := range r.Statements {
			if s.Source == name {
				fmt.Fprintf(w, "  %8d %8.2f %9.2f %9.3f %9.1f %5.1f%%  %s\n", s.Calls, s.PerTenant, s.TotalSec, s.MeanMs, s.MaxMs, s.ShareOfSrc, s.Statement)
			}
		}
		fmt.Fprintln(w)
	}
	return w.Flush()
}

// analyzeProfile summarises the CPU profile with `go tool pprof`: seconds
// per service label, flat seconds per component for each label, and the top
// functions (flat and cumulative), saved as text next to the profile.
func analyzeProfile(cpuPath, dir string, services ...string) (perLabel map[string]float64, components map[string]map[string]float64, top map[string][]string) {
	perLabel, components, top = map[string]float64{}, map[string]map[string]float64{}, map[string][]string{}
	pprofTop := func(args ...string) ([]string, error) {
		cmd := exec.Command("go", append(append([]string{"tool", "pprof"}, args...), cpuPath)...)
		out, err := cmd.Output()
		if err != nil {
			return nil, err
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n"), nil
	}
	views := []struct{ name, focus string }{{"all", ""}}
	for _, svc := range services {
		views = append(views, struct{ name, focus string }{svc, "service=" + svc})
	}
	for _, view := range views {
		var focus []string
		if view.focus != "" {
			focus = []string{"-tagfocus=" + view.focus}
		}
		lines, err := pprofTop(append([]string{"-top", "-nodecount=100000"}, focus...)...)
		if err != nil {
			top[view.name] = []string{"go tool pprof failed: " + err.Error()}
			continue
		}
		perLabel[view.name] = sampledSeconds(lines)
		comp := map[string]float64{}
		header, nodes := 0, 0
		var shown []string
		for _, line := range lines {
			f := strings.Fields(line)
			flat, ok := 0.0, false
			if len(f) >= 6 && strings.HasSuffix(f[1], "%") {
				flat, ok = parseSeconds(f[0])
			}
			if !ok {
				if nodes == 0 {
					header++
					shown = append(shown, line)
				}
				continue
			}
			comp[component(strings.Join(f[5:], " "))] += flat
			if nodes++; nodes <= 30 {
				shown = append(shown, line)
			}
		}
		components[view.name] = comp
		top[view.name+"-flat"] = shown
		_ = os.WriteFile(filepath.Join(dir, "top-"+view.name+"-flat.txt"), []byte(strings.Join(shown, "\n")+"\n"), 0o644)
		if cum, err := pprofTop(append([]string{"-top", "-cum", "-nodecount=40"}, focus...)...); err == nil {
			top[view.name+"-cum"] = cum
			_ = os.WriteFile(filepath.Join(dir, "top-"+view.name+"-cum.txt"), []byte(strings.Join(cum, "\n")+"\n"), 0o644)
		}
	}
	if all, ok := perLabel["all"]; ok {
		other := all
		for _, svc := range services {
			other -= perLabel[svc]
		}
		perLabel["other (JetStream server, bench)"] = other
	}
	return perLabel, components, top
}

// sampledSeconds reads the sampled time of the (focused) profile from
// pprof's header, "Showing nodes accounting for 1.23s, 45% of 2.7s total"
// (all nodes shown, so the first figure is everything that was kept).
func sampledSeconds(lines []string) float64 {
	for _, l := range lines {
		if _, rest, ok := strings.Cut(l, "accounting for "); ok {
			v, _, _ := strings.Cut(rest, ",")
			if s, ok := parseSeconds(v); ok {
				return s
			}
		}
	}
	return 0
}

func parseSeconds(v string) (float64, bool) {
	mult := 1.0
	switch {
	case strings.HasSuffix(v, "ms"):
		v, mult = strings.TrimSuffix(v, "ms"), 0.001
	case strings.HasSuffix(v, "us"), strings.HasSuffix(v, "µs"):
		v, mult = strings.TrimSuffix(strings.TrimSuffix(v, "us"), "µs"), 1e-6
	case strings.HasSuffix(v, "s"):
		v = strings.TrimSuffix(v, "s")
	case strings.HasSuffix(v, "min"):
		v, mult = strings.TrimSuffix(v, "min"), 60
	default:
		return 0, false
	}
	x, err := strconv.ParseFloat(v, 64)
	return x * mult, err == nil
}

// component groups a function name by what it belongs to.
func component(fn string) string {
	switch {
	case strings.Contains(fn, "nats-server"):
		return "nats-server (embedded JetStream)"
	case strings.Contains(fn, "nats.go"):
		return "nats.go client"
	case strings.Contains(fn, "jackc/pgx"), strings.Contains(fn, "jackc/pgservicefile"), strings.Contains(fn, "jackc/puddle"):
		return "pgx"
	case strings.Contains(fn, "tenant-cleanup/cmd/bench"):
		return "bench (wire proxy, events)"
	case strings.Contains(fn, "tenant-cleanup"):
		return "tenant-cleanup packages"
	case strings.HasPrefix(fn, "encoding/json"):
		return "encoding/json"
	case strings.HasPrefix(fn, "crypto/"), strings.HasPrefix(fn, "vendor/golang.org/x/crypto"), strings.Contains(fn, "klauspost"), strings.Contains(fn, "minio/highwayhash"):
		return "crypto and hashing"
	case strings.HasPrefix(fn, "regexp"):
		return "regexp"
	case strings.HasPrefix(fn, "syscall"), strings.HasPrefix(fn, "internal/poll"), strings.HasPrefix(fn, "net."), strings.HasPrefix(fn, "os."),
		strings.HasPrefix(fn, "internal/runtime/syscall"), strings.HasPrefix(fn, "bufio"):
		return "syscalls and I/O"
	case strings.HasPrefix(fn, "runtime."), strings.HasPrefix(fn, "internal/runtime"), strings.HasPrefix(fn, "gcWriteBarrier"),
		strings.HasPrefix(fn, "aeshash"), strings.HasPrefix(fn, "memeqbody"), strings.HasPrefix(fn, "indexbytebody"):
		return "Go runtime (scheduler, GC, allocation)"
	default:
		return "other standard library"
	}
}

type catalogTiming struct {
	Fleet           string             `json:"fleet"`
	Tenants         int                `json:"tenants"`
	TablesPerTenant int                `json:"tables_per_tenant"`
	ClassRows       int64              `json:"pg_class_rows"`
	ConstraintRows  int64              `json:"pg_constraint_rows"`
	Ms              map[string]float64 `json:"ms"`
}

// catalogQueries are the product's per-tenant catalog statements, read from
// the source tree (the bench runs from the repository root).
var catalogQueries = []string{"drop_plan", "outside_dependents", "catalog"}

var rePlanTime = regexp.MustCompile(`(Planning|Execution) Time: ([0-9.]+) ms`)

// timeCatalogQueries times EXPLAIN (ANALYZE, BUFFERS) of the product's
// per-tenant catalog queries for one tenant of a fleet (the second of two
// runs, so with warm caches), and saves the plans in dir when it is set.
// Best effort: a query whose file is not found is skipped.
func (b *bench) timeCatalogQueries(ctx context.Context, dbURL, fleet string, tenants, tables int, id, dir string) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	c := &catalogTiming{Fleet: fleet, Tenants: tenants, TablesPerTenant: tables, Ms: map[string]float64{}}
	_ = conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM pg_class), (SELECT count(*) FROM pg_constraint)").Scan(&c.ClassRows, &c.ConstraintRows)
	for _, name := range catalogQueries {
		sql, err := os.ReadFile(filepath.Join("pkg", "dataplane", "sql", name+".sql"))
		if err != nil {
			continue
		}
		var plan []string
		for range 2 {
			rows, err := conn.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+string(sql), id)
			if err != nil {
				break
			}
			if plan, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				break
			}
		}
		ms := 0.0
		for _, line := range plan {
			if m := rePlanTime.FindStringSubmatch(line); m != nil {
				v, _ := strconv.ParseFloat(m[2], 64)
				ms += v
			}
		}
		if ms > 0 {
			c.Ms[name] = ms
		}
		if dir != "" && len(plan) > 0 {
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("explain-%s-%d-tenants.txt", name, tenants)), []byte(strings.Join(plan, "\n")+"\n"), 0o644)
		}
	}
	b.res.Catalog = append(b.res.Catalog, c)
	info("catalog queries for one tenant of %d (%d pg_class, %d pg_constraint rows): drop_plan %s ms, outside_dependents %s ms, catalog %s ms",
		tenants, c.ClassRows, c.ConstraintRows, msText(c.Ms, "drop_plan"), msText(c.Ms, "outside_dependents"), msText(c.Ms, "catalog"))
}

// profileAnalyzer runs one analysis pass in-process (service.RunAnalyzer,
// configured by config.Load like bin/analyzer --once) under the CPU
// profiler, its SQL timed by proxies, on a fresh JetStream.
func (b *bench) profileAnalyzer(ctx context.Context, size int) error {
	f := b.small[size]
	step("(d) where the analyzer's time goes: one pass in-process under pprof, SQL timed by a wire proxy, %d tenants", size)
	root, err := filepath.Abs(b.o.profileDir)
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "analyzer")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := b.startJetStream("dprof")
	if err != nil {
		return err
	}
	defer js.shutdown(b.o.keep)
	proxies, err := b.startProxies("analyzer/data", "analyzer/control")
	if err != nil {
		return err
	}
	defer closeProxies(proxies)
	reportDir, err := os.MkdirTemp(b.tmp, "report-")
	if err != nil {
		return err
	}
	var cfg config.Analyzer
	if err := loadConfig(&cfg, viaProxy(proxies["analyzer/data"], b.dbURL(f.data)), viaProxy(proxies["analyzer/control"], b.dbURL(f.control)),
		js.url, map[string]string{"ANALYZER_REPORT_DIR": reportDir}); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(b.tmp, "profile-analyzer.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo})).With("service", "analyzer")
	cpuPath := filepath.Join(dir, "cpu.pprof")
	cpuFile, err := os.Create(cpuPath)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(cpuFile); err != nil {
		cpuFile.Close()
		return err
	}
	t0 := time.Now()
	var runErr error
	pprof.Do(ctx, pprof.Labels("service", "analyzer"), func(ctx context.Context) {
		runErr = service.RunAnalyzer(ctx, &cfg, true, logFile, log)
	})
	took := time.Since(t0)
	pprof.StopCPUProfile()
	cpuFile.Close()
	if runErr != nil {
		return runErr
	}
	r := &profileResult{Tenants: size, Seconds: took.Seconds(), PerMinute: float64(size) / took.Minutes(), Dir: dir}
	if err := r.collect(proxies, dir, "analyzer"); err != nil {
		return err
	}
	r.CPUSeconds, r.Components, r.Top = analyzeProfile(cpuPath, dir, "analyzer")
	b.res.AnalyzerProfile = r
	info("pass in %.2f s with the proxies and the profiler; Go CPU sampled: %s", took.Seconds(), fmtSeconds(r.CPUSeconds))
	info("database round trips per tenant: %s; database time (s): %s", fmtPerTenant(r.RoundTrips), fmtSeconds(r.DBSeconds))
	for _, s := range r.Statements[:min(8, len(r.Statements))] {
		info("  %-16s %6.2f s %7d calls %8.2f ms mean  %s", s.Source, s.TotalSec, s.Calls, s.MeanMs, shorten(s.Statement, 90))
	}
	return nil
}
