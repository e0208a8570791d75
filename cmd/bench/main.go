// Command bench measures the tenant-cleanup pipeline (`make bench`; not part
// of `make test`). Its phases, in order (-phases picks some): throughput
// (the raw-SQL floor vs bin/marker + bin/cleaner, paced and not, on an idle
// server), load (a pgbench foreground's p50/p99 alone and during each
// cleaning), profile (the services' data-plane SQL timed by a pgx tracer),
// stores (what S3 files, large objects and Redis keys cost), analyzer
// (bin/analyzer --once vs the per-schema loop), memory (peak RSS,
// extrapolated to 100,000 tenants) and shards (one fleet on one shard, then
// split over two PostgreSQL servers). It prints the figures and the issues'
// targets as PASS/FAIL lines and writes them to -out; docs/performance.md
// explains them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

var allPhases = []string{"throughput", "load", "profile", "stores", "analyzer", "memory", "shards"}

type options struct {
	bin, out                                                  string
	phases                                                    map[string]bool
	tenants, loadTenants, filler, rounds                      int
	rate, clients, scale                                      int
	alone                                                     time.Duration
	analyzerTenants, memoryTenants, storeTenants, files, keys int
	// serviceEnv are settings given to every service process (-service-env).
	serviceEnv   []string
	shardTenants int
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	if err = run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
	stop()
	if err != nil {
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	o := &options{phases: map[string]bool{}}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	phases := fs.String("phases", strings.Join(allPhases, ","), "phases to run: "+strings.Join(allPhases, ","))
	fs.StringVar(&o.bin, "bin", "bin", "directory of analyzer, marker and cleaner (make build)")
	fs.StringVar(&o.out, "out", "bench-results.txt", "results file")
	fs.IntVar(&o.tenants, "tenants", 100, "drained tenants cleaned per throughput run")
	fs.IntVar(&o.loadTenants, "load-tenants", 60, "tenants cleaned per run under the foreground load (at most -tenants)")
	fs.IntVar(&o.filler, "filler", 130, "filler tables per throughput and shards tenant (on top of the fixture's 13)")
	fs.IntVar(&o.rounds, "rounds", 1, "rounds of the idle floor and pipeline runs; the best of each counts")
	fs.IntVar(&o.rate, "rate", 150, "foreground pgbench transactions per second (pgbench -R)")
	fs.IntVar(&o.clients, "clients", 4, "foreground pgbench clients")
	fs.IntVar(&o.scale, "scale", 10, "pgbench scale factor")
	fs.DurationVar(&o.alone, "alone", 20*time.Second, "how long the foreground is measured alone")
	fs.IntVar(&o.analyzerTenants, "analyzer-tenants", 2000, "13-table tenants of the analyzer and memory fleet (measured at half and full size)")
	fs.IntVar(&o.memoryTenants, "memory-tenants", 100_000, "tenants of the memory phase's fleet: the analyzer fleet and bystanders (an empty schema and an ACTIVE control-plane row each)")
	fs.IntVar(&o.storeTenants, "store-tenants", 10, "tenants with files and keys in the stores phase")
	fs.IntVar(&o.files, "files", 1000, "S3 objects and as many large objects per tenant in the stores phase")
	fs.IntVar(&o.keys, "keys", 10000, "Redis keys per tenant in the stores phase (at least -files)")
	serviceEnv := fs.String("service-env", "", "settings (NAME=value, space-separated) given to every bin/ service the bench starts, "+
		"on top of the phase's own: to measure settings other than the defaults (e.g. \"DROP_CONCURRENCY=3\")")
	fs.IntVar(&o.shardTenants, "shard-tenants", 40, "drained tenants cleaned per run of the shards phase (half on each server when split)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for _, p := range strings.Split(*phases, ",") {
		if p = strings.TrimSpace(p); !slices.Contains(allPhases, p) {
			return nil, fmt.Errorf("-phases: unknown phase %q (want some of %s)", p, strings.Join(allPhases, ","))
		}
		o.phases[p] = true
	}
	o.serviceEnv = strings.Fields(*serviceEnv)
	for _, kv := range o.serviceEnv {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			return nil, fmt.Errorf("-service-env: %q is not NAME=value", kv)
		}
	}
	o.loadTenants = min(o.loadTenants, o.tenants)
	if o.tenants < 1 || o.rounds < 1 || o.analyzerTenants < 2 || o.storeTenants < 1 || o.rate < 1 || o.clients < 1 ||
		o.keys < o.files || o.shardTenants < 2 || o.memoryTenants < o.analyzerTenants {
		return nil, errors.New("-tenants, -rounds, -store-tenants, -rate and -clients must be positive, " +
			"-analyzer-tenants and -shard-tenants at least 2, -keys at least -files, -memory-tenants at least -analyzer-tenants")
	}
	return o, nil
}

// bench is one run: its options, the fleets it built and what it measured.
type bench struct {
	o     *options
	t     *testenv.Outside // what lives until the bench ends
	admin *pgxpool.Pool
	res   report

	tpl         *testenv.Databases // the throughput fleet (cloned per run)
	ids         []string           // its tenants
	small       *testenv.Databases // the analyzer and memory fleet
	analyzerRSS [2]float64         // the analyzer's peak RSS at half and full size
	halfTook    time.Duration      // its pass at half size
}

func run(ctx context.Context, o *options) error {
	for _, name := range []string{"analyzer", "marker", "cleaner"} {
		if _, err := os.Stat(filepath.Join(o.bin, name)); err != nil {
			return fmt.Errorf("%s not found in %s: run `make build` first", name, o.bin)
		}
	}
	b, start := &bench{o: o, t: &testenv.Outside{}}, time.Now()
	defer b.t.Close()
	phases := map[string]func(context.Context){"throughput": b.throughput, "load": b.load, "profile": b.profile,
		"stores": b.stores, "analyzer": b.analyzer, "memory": b.memory, "shards": b.shards}
	phase := "setup"
	if err := testenv.Try(func() {
		b.admin = testenv.Pool(b.t, testenv.AdminURL())
		b.machine(ctx)
		if o.phases["throughput"] || o.phases["load"] || o.phases["profile"] || o.phases["stores"] {
			b.buildThroughputFleet(ctx) // the template these phases clone
		}
		for _, phase = range allPhases {
			if o.phases[phase] {
				phases[phase](ctx)
			}
		}
	}); err != nil {
		return fmt.Errorf("%s: %w", phase, err)
	}
	text := b.res.render(start)
	fmt.Print("\n" + text)
	return os.WriteFile(o.out, []byte(text), 0o644)
}

func step(format string, args ...any) {
	fmt.Printf("\n==> %s [%s]\n", fmt.Sprintf(format, args...), time.Now().Format("15:04:05"))
}

func info(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

// check fails the bench, as t.Fatal fails a test, when err is not nil.
func check(err error, context ...string) {
	if err != nil {
		panic(testenv.Failure(strings.Join(append(context, err.Error()), ": ")))
	}
}

func must[T any](v T, err error) T { check(err); return v }

// until polls cond every 20 ms until it holds; it fails after timeout or when ctx ends.
func until(ctx context.Context, timeout time.Duration, what string, cond func() bool) {
	testenv.Eventually(&testenv.Outside{}, timeout, func() bool { check(ctx.Err()); return cond() }, "%s", what)
}

// report is what the run measured, as text sections and targets.
type report struct {
	facts, setup []string
	sections     []*section
	targets      []string
}

// section is a title and lines; a table's rows are all in one format.
type section struct {
	title, format string
	lines         []string
}

func (r *report) section(format string, args ...any) *section {
	s := &section{title: fmt.Sprintf(format, args...)}
	r.sections = append(r.sections, s)
	return s
}

func (s *section) add(format string, args ...any) {
	s.lines = append(s.lines, fmt.Sprintf(format, args...))
}

var reVerb = regexp.MustCompile(`%(-?\d*)(\.\d+)?[a-z]`)

// table makes the rows that follow a table in format, headed by columns in
// format with every verb a string of its width.
func (s *section) table(format string, columns ...any) *section {
	s.format = format
	s.add(reVerb.ReplaceAllString(format, "%${1}s"), columns...)
	return s
}

func (s *section) row(args ...any) { s.add(s.format, args...) }

func (r *report) setupLine(format string, args ...any) {
	r.setup = append(r.setup, fmt.Sprintf(format, args...))
	info("%s", r.setup[len(r.setup)-1])
}

func (r *report) target(what string, pass bool, format string, args ...any) {
	verdict := map[bool]string{true: "PASS", false: "FAIL"}[pass]
	r.targets = append(r.targets, fmt.Sprintf("  %s  %-88s %s", verdict, what, fmt.Sprintf(format, args...)))
}

// machine records what the figures depend on: machine, load, server settings, commit.
func (b *bench) machine(ctx context.Context) {
	load, _ := os.ReadFile("/proc/loadavg")
	commit, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	b.res.facts = append(b.res.facts, fmt.Sprintf("%s, %d CPUs, %s; load average at start %s; commit %s",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.Version(),
		strings.Join(strings.Fields(string(load))[:3], " "), strings.TrimSpace(string(commit))))
	var version, settings string
	_ = b.admin.QueryRow(ctx, `SELECT split_part(version(), ' on ', 1), string_agg(name || '=' || setting || coalesce(unit, ''), ' ' ORDER BY name)
		FROM pg_settings WHERE name = ANY($1)`, serverSettings).Scan(&version, &settings)
	b.res.facts = append(b.res.facts, version+": "+settings)
	if len(b.o.serviceEnv) > 0 {
		b.res.facts = append(b.res.facts, "services' settings (-service-env): "+strings.Join(b.o.serviceEnv, " "))
	}
}

// serverSettings are the server's settings the figures depend on (the
// shards phase's second server copies them).
var serverSettings = []string{"max_connections", "max_locks_per_transaction", "shared_buffers", "fsync",
	"synchronous_commit", "max_wal_size", "autovacuum", "jit"}

func (r *report) render(start time.Time) string {
	var w strings.Builder
	fmt.Fprintf(&w, "%s\nwall time %s\n\nSETUP (not measured)\n", strings.Join(r.facts, "\n"), time.Since(start).Round(time.Second))
	for _, s := range r.setup {
		fmt.Fprintln(&w, "  "+s)
	}
	for _, s := range r.sections {
		fmt.Fprintf(&w, "\n%s\n%s\n", s.title, strings.Join(s.lines, "\n"))
	}
	fmt.Fprintf(&w, "\nTARGETS\n%s\n", strings.Join(r.targets, "\n"))
	return w.String()
}

func perMin(n int, d time.Duration) float64 { return float64(n) / d.Minutes() }
func ratio(a, b time.Duration) float64      { return float64(a) / float64(max(b, 1)) }
func ms(d time.Duration) string             { return fmt.Sprintf("%.1f ms", ms1(d)) }
func ms1(d time.Duration) float64           { return float64(d) / float64(time.Millisecond) }
