// Command bench measures the tenant-cleanup pipeline (`make bench`; not part
// of `make test`). Its phases, in the order they run (-phases picks some):
//
//	throughput  raw-SQL floor vs the pipeline (bin/marker + bin/cleaner,
//	            paced by default and PACE=off) on clones of a fleet of
//	            drained 143-table tenants, on an otherwise idle server
//	load        a foreground pgbench load at a fixed rate (pgbench -R): its
//	            p50/p99 alone, during the floor, the pipeline unpaced and paced
//	profile     marker and cleaner in-process, their data-plane SQL timed by
//	            a pgx tracer: statements and milliseconds per tenant
//	stores      the cost per tenant of S3 files, large objects and Redis keys
//	analyzer    bin/analyzer --once vs the original per-schema loop and the
//	            loop's reads over two sessions (the read floor)
//	memory      peak RSS of each service with the fleet in flight,
//	            extrapolated to 100,000 tenants
//
// It prints the results with the issues' targets as PASS/FAIL lines and
// writes them to -out. docs/performance.md explains the method and figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var allPhases = []string{"throughput", "load", "profile", "stores", "analyzer", "memory"}

type options struct {
	bin, out                                   string
	phases                                     map[string]bool
	tenants, loadTenants, filler, rounds       int
	rate, clients, scale                       int
	alone                                      time.Duration
	analyzerTenants, storeTenants, files, keys int
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err = run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
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
	fs.IntVar(&o.filler, "filler", 130, "filler tables per throughput tenant (on top of the fixture's 13)")
	fs.IntVar(&o.rounds, "rounds", 1, "rounds of the idle floor and pipeline runs; the best of each counts")
	fs.IntVar(&o.rate, "rate", 150, "foreground pgbench transactions per second (pgbench -R)")
	fs.IntVar(&o.clients, "clients", 4, "foreground pgbench clients")
	fs.IntVar(&o.scale, "scale", 10, "pgbench scale factor")
	fs.DurationVar(&o.alone, "alone", 20*time.Second, "how long the foreground is measured alone")
	fs.IntVar(&o.analyzerTenants, "analyzer-tenants", 2000, "13-table tenants of the analyzer and memory fleet (measured at half and full size)")
	fs.IntVar(&o.storeTenants, "store-tenants", 10, "tenants with files and keys in the stores phase")
	fs.IntVar(&o.files, "files", 1000, "S3 objects and as many large objects per tenant in the stores phase")
	fs.IntVar(&o.keys, "keys", 10000, "Redis keys per tenant in the stores phase")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for _, p := range strings.Split(*phases, ",") {
		if p = strings.TrimSpace(p); !slices.Contains(allPhases, p) {
			return nil, fmt.Errorf("-phases: unknown phase %q (want some of %s)", p, strings.Join(allPhases, ","))
		}
		o.phases[p] = true
	}
	o.loadTenants = min(o.loadTenants, o.tenants)
	if o.tenants < 1 || o.rounds < 1 || o.analyzerTenants < 2 || o.storeTenants < 1 || o.rate < 1 || o.clients < 1 {
		return nil, errors.New("-tenants, -rounds, -store-tenants, -rate and -clients must be positive, -analyzer-tenants at least 2")
	}
	return o, nil
}

func run(ctx context.Context, o *options) (err error) {
	for _, name := range []string{"analyzer", "marker", "cleaner"} {
		if _, err := os.Stat(filepath.Join(o.bin, name)); err != nil {
			return fmt.Errorf("%s not found in %s: run `make build` first", name, o.bin)
		}
	}
	t := &tb{}
	defer t.cleanup()
	defer func() { // testenv's helpers fail through t.Fatalf
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = errors.New(string(f))
		}
	}()
	b := &bench{o: o, t: t, res: &report{}, start: time.Now()}
	b.res.machine(ctx)
	if o.phases["throughput"] || o.phases["load"] || o.phases["profile"] || o.phases["stores"] {
		b.buildThroughputFleet(ctx)
	}
	steps := []struct {
		phase string
		fn    func(context.Context) error
	}{{"throughput", b.throughput}, {"load", b.load}, {"profile", b.profile}, {"stores", b.stores},
		{"analyzer", b.analyzer}, {"memory", b.memory}}
	for _, s := range steps {
		if !o.phases[s.phase] || ctx.Err() != nil {
			continue
		}
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.phase, err)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	text := b.res.render(b)
	fmt.Print("\n" + text)
	return os.WriteFile(o.out, []byte(text), 0o644)
}

// bench is one run: its options, the fleets it built and what it measured.
type bench struct {
	o     *options
	t     *tb
	res   *report
	start time.Time

	tplData, tplControl string        // throughput fleet templates
	ids                 []string      // its tenants
	small               fleet         // analyzer and memory fleet
	analyzerRSS         [2]float64    // analyzer's peak RSS at half and full size
	halfTook            time.Duration // its pass at half size
}

func step(format string, args ...any) {
	fmt.Printf("\n==> %s [%s]\n", fmt.Sprintf(format, args...), time.Now().Format("15:04:05"))
}

func info(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

// tb lets the bench use pkg/testenv's helpers outside a test: a failure
// panics with fatal (recovered by run), cleanups run when the bench ends.
type tb struct {
	testing.TB // nil: only the methods below are called
	cleanups   []func()
}

type fatal string

func (t *tb) Helper()                           {}
func (t *tb) Cleanup(f func())                  { t.cleanups = append(t.cleanups, f) }
func (t *tb) Fatal(args ...any)                 { panic(fatal(fmt.Sprint(args...))) }
func (t *tb) Fatalf(format string, args ...any) { panic(fatal(fmt.Sprintf(format, args...))) }
func (t *tb) Errorf(format string, args ...any) { panic(fatal(fmt.Sprintf(format, args...))) }
func (t *tb) Logf(format string, args ...any)   { info(format, args...) }
func (t *tb) Name() string                      { return "bench" }

func (t *tb) TempDir() string {
	dir, err := os.MkdirTemp("", "tenant-cleanup-bench-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (t *tb) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
