// Command bench measures the tenant-cleanup pipeline against the raw SQL a
// cleanup needs (issue 5). Run it with `make bench` (it is not part of
// `make test`). In one run it builds a fleet from the shared fixture and
// measures, on identical clones of that fleet:
//
//	a  the raw SQL floor: two sessions doing exactly the SQL of a cleanup
//	b  the pipeline: bin/marker + one bin/cleaner, default settings except
//	   DRAIN_CHECK_DELAY=0s, fed by `bin/tenantctl cleanup --csv`
//	c  the same with 2 and 4 cleaner replicas
//	d  bin/analyzer --once against the original script's per-schema loop, on
//	   fleets of -analyzer-sizes tenants
//	e  the peak RSS of each service with -rss-tenants tenants in flight
//	p  a profiling run: marker and cleaner in this process under the CPU
//	   profiler, their SQL timed statement by statement by a wire-protocol
//	   proxy (slower than b; its throughput is not a result)
//
// a and b alternate for -rounds rounds (default 2), each on a fresh clone,
// and the best round of each counts: on a shared machine a round slowed by
// other work says nothing about what is measured.
//
// It prints a results table with the targets and PASS/FAIL, and writes
// it to -out (text) and the same name with .json. docs/performance.md explains
// the method and the findings.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Parts of a run, in the order they run.
var allParts = []string{"a", "b", "c", "p", "d", "e"}

type options struct {
	bin           string
	tenants       int
	filler        int
	analyzerSizes []int
	smallFiller   int
	rssTenants    int
	rssTimeout    time.Duration
	out           string
	profileDir    string
	only          map[string]bool
	keep          bool
	admin         string
	workers       int
	rounds        int
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags() (*options, error) {
	o := &options{}
	var sizes, only string
	flag.StringVar(&o.bin, "bin", "bin", "directory holding analyzer, marker, cleaner and tenantctl (make build)")
	flag.IntVar(&o.tenants, "tenants", defaultTenants, "tenants in the throughput fleet (runs a, b, c, p); see docs/performance.md for the default")
	flag.IntVar(&o.filler, "filler", 130, "filler tables per throughput tenant (on top of the fixture's own tables)")
	flag.StringVar(&sizes, "analyzer-sizes", "2000,10000", "fleet sizes for the analyzer comparison (d), comma-separated")
	flag.IntVar(&o.smallFiller, "small-filler", 0, "filler tables per tenant of the analyzer and RSS fleets (d, e)")
	flag.IntVar(&o.rssTenants, "rss-tenants", 10000, "tenants in flight for the peak-RSS measurement (e)")
	flag.DurationVar(&o.rssTimeout, "rss-timeout", 4*time.Minute, "how long (e) lets the marker, then the cleaner, work through the tenants in flight (half each)")
	flag.StringVar(&o.out, "out", "bench-results.txt", "results file (text); the JSON goes next to it with the extension .json")
	flag.StringVar(&o.profileDir, "profile-dir", "bench-results-profiles", "where the profiling run (p) writes CPU profiles and statement timings")
	flag.StringVar(&only, "only", strings.Join(allParts, ","), "parts to run: a,b,c,d,e,p (see the package comment)")
	flag.BoolVar(&o.keep, "keep", false, "keep the bench_* databases, JetStream stores and service logs")
	flag.IntVar(&o.workers, "setup-workers", 2, "sessions that build the fleets")
	flag.IntVar(&o.rounds, "rounds", 2, "alternating rounds of (a) and (b); the best round of each counts")
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	o.admin = os.Getenv("BENCH_DATABASE_URL")
	if o.admin == "" {
		o.admin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	for _, s := range strings.Split(sizes, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-analyzer-sizes: %q is not a positive number", s)
		}
		o.analyzerSizes = append(o.analyzerSizes, n)
	}
	slices.Sort(o.analyzerSizes)
	o.analyzerSizes = slices.Compact(o.analyzerSizes)
	o.only = map[string]bool{}
	for _, p := range strings.Split(only, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(allParts, p) {
			return nil, fmt.Errorf("-only: unknown part %q (want some of %s)", p, strings.Join(allParts, ","))
		}
		o.only[p] = true
	}
	switch {
	case o.tenants < 1:
		return nil, errors.New("-tenants must be at least 1")
	case o.rounds < 1:
		return nil, errors.New("-rounds must be at least 1")
	case o.only["d"] && len(o.analyzerSizes) == 0:
		return nil, errors.New("-analyzer-sizes is empty")
	case o.rssTenants < 1:
		return nil, errors.New("-rss-tenants must be at least 1")
	}
	return o, nil
}

// defaultTenants is the throughput fleet's size. On the 2-core machine a
// 143-table tenant takes about 0.3 s to build and 0.15 s to copy into each of
// the 5 clones, and the pipeline runs (b, c, p) each last about a minute at
// 200 tenants (the floor, a, about 17 s). With the analyzer and RSS fleets
// (about 4 minutes to build) `make bench` takes about 15 minutes. The
// pipeline's catalog queries grow with the fleet (see docs/performance.md),
// so a larger -tenants is a harsher test of the pipeline, not a fairer one.
const defaultTenants = 200

func run() error {
	o, err := parseFlags()
	if err != nil {
		return err
	}
	for _, name := range []string{"analyzer", "marker", "cleaner", "tenantctl"} {
		if _, err := os.Stat(filepath.Join(o.bin, name)); err != nil {
			return fmt.Errorf("%s not found in %s: run `make build` first", name, o.bin)
		}
	}
	ctx, stop := signalContext()
	defer stop()

	b, err := newBench(ctx, o)
	if err != nil {
		return err
	}
	defer b.cleanup()
	res := b.res
	res.Started = time.Now().UTC()
	start := time.Now()
	if res.Machine, err = machineFacts(ctx, o.admin); err != nil {
		return err
	}
	printMachine(res.Machine)

	needFleet := o.only["a"] || o.only["b"] || o.only["c"] || o.only["p"]
	if needFleet {
		if err := b.buildThroughputFleet(ctx); err != nil {
			return err
		}
	}
	// (a) and (b) alternate, o.rounds times each, and the best round of each
	// counts: the machine is shared, and a round that other work slowed down
	// says nothing about the product.
	for range o.rounds {
		if o.only["a"] {
			if err := b.runFloor(ctx); err != nil {
				return fmt.Errorf("(a) raw SQL floor: %w", err)
			}
		}
		if o.only["b"] {
			if err := b.runPipeline(ctx, 1); err != nil {
				return fmt.Errorf("(b) pipeline, 1 cleaner: %w", err)
			}
		}
	}
	if o.only["c"] {
		for _, n := range []int{2, 4} {
			if err := b.runPipeline(ctx, n); err != nil {
				return fmt.Errorf("(c) pipeline, %d cleaners: %w", n, err)
			}
		}
	}
	if o.only["p"] {
		if err := b.runProfile(ctx); err != nil {
			return fmt.Errorf("(p) profile: %w", err)
		}
	}
	if needFleet && !o.keep {
		b.dropDatabases(b.fleet.data, b.fleet.control)
	}
	if o.only["d"] || o.only["e"] {
		if err := b.buildSmallFleets(ctx); err != nil {
			return err
		}
	}
	if o.only["d"] {
		if err := b.runAnalyzer(ctx); err != nil {
			return fmt.Errorf("(d) analyzer: %w", err)
		}
	}
	if o.only["e"] {
		if err := b.runRSS(ctx); err != nil {
			return fmt.Errorf("(e) peak RSS: %w", err)
		}
	}
	res.WallSeconds = time.Since(start).Seconds()
	res.evaluate()
	text := res.render()
	fmt.Print("\n" + text)
	if err := res.write(o.out, text); err != nil {
		return err
	}
	fmt.Printf("\nresults written to %s and %s (wall time %s)\n", o.out, jsonPath(o.out), time.Since(start).Round(time.Second))
	return nil
}

func jsonPath(out string) string {
	return strings.TrimSuffix(out, filepath.Ext(out)) + ".json"
}

func step(format string, args ...any) {
	fmt.Printf("\n==> %s [%s]\n", fmt.Sprintf(format, args...), time.Now().Format("15:04:05"))
}

func info(format string, args ...any) {
	fmt.Printf("    "+format+"\n", args...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
