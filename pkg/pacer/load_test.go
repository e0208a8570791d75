package pacer_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantcleanup/tenant-cleanup/pkg/pacer"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// The load test's settings: a foreground of pgbench clients at a fixed rate
// (TPC-B-like transactions: three updates, a select, an insert, a commit)
// close to what the 2 vCPUs of the development machine serve, and a heavy
// writer of as many workers as the pacer's ceiling, each creating a schema
// of heavyTables tables and dropping it, through the pacer.
const (
	pgbenchClients = 16
	pgbenchRate    = 2000 // transactions per second
	heavyWorkers   = 3
	heavyTables    = 100
	phaseSamples   = 40 // 10 s at PACE_INTERVAL=250ms
)

// TestPacerBacksOffUnderLoad runs the heavy writer through a pacer on a
// server of its own (fsync on), first alone, then under a pgbench load,
// then alone again: the limit grows above 1 while the server is
// quiet, comes down to 1 throttled (or paused) with a reason naming the
// signal once the load runs, and grows back above 1 after. The
// timeline of samples, each phase's figures (mean limit, samples throttled,
// probe ratio, schemas dropped per second) and pgbench's progress are
// logged; they are not asserted, as on a shared machine the other tenants'
// load can outweigh pgbench's.
func TestPacerBacksOffUnderLoad(t *testing.T) {
	pgbench, err := exec.LookPath("pgbench")
	if err != nil {
		t.Skip("pgbench is not installed (apt-get install postgresql-client-15): " + err.Error())
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv := testenv.StartPostgres(t, "fsync=on", "max_connections=50")
	dbURL := createDatabase(t, srv.AdminURL, "pace")
	if out, err := exec.CommandContext(ctx, pgbench, "-i", "-q", "-s", "5", dbURL).CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	// Settle: the pacer learns its baseline on a quiet server, not one
	// writing pgbench's tables out.
	execSQL(t, dbURL, "CHECKPOINT")

	cfg := pacer.DefaultConfig()
	cfg.Interval = 250 * time.Millisecond // four samples a second: the test is short
	cfg.MaxConcurrency = heavyWorkers
	cfg.HealthySamples = 3
	base, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	sampler, err := pacer.OpenSampler(ctx, base, cfg, pacer.SamplerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sampler.Close)
	p, err := pacer.New(cfg, sampler, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &heavyWriter{url: dbURL}
	tl := &timeline{start: time.Now(), done: &w.done}
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx) })
	wg.Go(func() { tl.record(ctx, p) })
	for i := range heavyWorkers {
		wg.Go(func() { w.run(ctx, p, i) })
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		t.Logf("timeline:\n%s", tl.String())
	})
	// Grown: running with more than one drop at once. (Reaching the ceiling
	// itself depends on how quiet the machine is: other test packages run
	// beside this one and make the probe spike now and then.)
	grown := func() bool {
		st := p.State()
		return st.Throttle == pacer.Running && st.Limit >= 2
	}

	// Quiet: the limit grows from 1.
	testenv.Eventually(t, 30*time.Second, grown, "the limit grows while quiet")
	tl.waitSamples(t, phaseSamples)
	quiet := tl.phase("quiet")

	// Loaded: it comes down to 1, throttled or paused, naming a signal.
	bench := exec.CommandContext(ctx, pgbench, "-n", "-c", fmt.Sprint(pgbenchClients), "-j", "2",
		"-R", fmt.Sprint(pgbenchRate), "-T", "120", "-P", "1", dbURL)
	progress := &testenv.SyncBuffer{}
	bench.Stdout, bench.Stderr = progress, progress
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	var throttled pacer.State
	testenv.Eventually(t, 15*time.Second, func() bool {
		st := p.State()
		if st.Throttle != pacer.Running && st.Limit == 1 {
			throttled = st
			return true
		}
		return false
	}, "the pacer throttles under load: %+v", p.State())
	tl.waitSamples(t, phaseSamples)
	loaded := tl.phase("loaded")
	_ = bench.Process.Kill()
	_ = bench.Wait()

	// Quiet again: it grows back to the ceiling.
	testenv.Eventually(t, 30*time.Second, grown, "the pacer recovers once the load stops")
	tl.waitSamples(t, phaseSamples)
	after := tl.phase("after")

	t.Logf("throttled at %.2fs: %s [%s]", throttled.Last.At.Sub(tl.start).Seconds(), throttled.Reason, throttled.Label)
	t.Logf("phases (samples, mean limit, samples throttled or paused, probe median ratio, schemas dropped/s):\n%s\n%s\n%s", quiet, loaded, after)
	t.Logf("pgbench (%d clients at %d tps):\n%s", pgbenchClients, pgbenchRate, progressLines(progress.String()))
	if throttled.Label == pacer.LabelNone || !strings.Contains(throttled.Reason, labelWords[throttled.Label]) {
		t.Errorf("the throttle does not name its signal: %q [%s]", throttled.Reason, throttled.Label)
	}
	if err := w.failed.Load(); err != nil {
		t.Fatalf("heavy writer: %v", *err)
	}
}

// labelWords are the words a reason uses for each signal.
var labelWords = map[string]string{
	"probe": "probe", "commit_latency": "COMMIT", "replication_lag": "replay lag", "checkpoints": "checkpoint",
	"wal_rate": "WAL rate", "backend_writes": "backends wrote", "active_backends": "active sessions",
}

// createDatabase creates a database on the server of admin and returns its URL.
func createDatabase(t *testing.T, admin, name string) string {
	t.Helper()
	execSQL(t, admin, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	u, _ := url.Parse(admin)
	u.Path = "/" + name
	return u.String()
}

// execSQL runs sql on its own connection to dbURL.
func execSQL(t *testing.T, dbURL, sql string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// heavyWriter creates and drops schemas of heavyTables tables through the
// pacer, as the cleaner would drop tenants.
type heavyWriter struct {
	url    string
	done   atomic.Int64
	failed atomic.Pointer[error]
}

func (w *heavyWriter) run(ctx context.Context, p *pacer.Pacer, worker int) {
	conn, err := pgx.Connect(ctx, w.url)
	if err != nil {
		w.failed.CompareAndSwap(nil, &err)
		return
	}
	defer conn.Close(context.Background())
	var create strings.Builder
	for i := range heavyTables {
		fmt.Fprintf(&create, "CREATE TABLE heavy_%d.t%d (id bigint PRIMARY KEY, body text, at timestamptz DEFAULT now());", worker, i)
	}
	for n := 0; ctx.Err() == nil; n++ {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		release, err := p.Acquire(actx)
		cancel()
		if errors.Is(err, pacer.ErrPaced) {
			continue // the cleaner would retry the tenant later
		}
		commit, err := heavy(ctx, conn, worker, create.String())
		release(pacer.Outcome{Commit: commit})
		if err != nil {
			if ctx.Err() == nil {
				w.failed.CompareAndSwap(nil, &err)
			}
			return
		}
		w.done.Add(1)
	}
}

// heavy creates the worker's schema and drops it in a transaction of its
// own, returning how long the drop's COMMIT took.
func heavy(ctx context.Context, conn *pgx.Conn, worker int, create string) (time.Duration, error) {
	schema := fmt.Sprintf("heavy_%d", worker)
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE; CREATE SCHEMA "+schema+";"+create); err != nil {
		return 0, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
		_ = tx.Rollback(ctx)
		return 0, err
	}
	start := time.Now()
	err = tx.Commit(ctx)
	return time.Since(start), err
}

// timeline records the pacer's state after each sample.
type timeline struct {
	start time.Time
	done  *atomic.Int64 // schemas dropped so far
	mu    sync.Mutex
	rows  []row
	from  int // first row of the current phase
	text  []string
}

type row struct {
	at              time.Duration
	probe, baseline time.Duration
	limit, inFlight int
	throttle        pacer.Throttle
	label           string
	done            int64
}

func (tl *timeline) record(ctx context.Context, p *pacer.Pacer) {
	var last time.Time
	for {
		changed := p.Changed()
		st := p.State()
		if at := st.Last.At; !at.IsZero() && at != last && !st.Calibrating {
			last = at
			r := row{at: at.Sub(tl.start), probe: st.Last.Probe, baseline: st.Baseline, limit: st.Limit,
				inFlight: st.InFlight, throttle: st.Throttle, label: st.Label, done: tl.done.Load()}
			tl.mu.Lock()
			tl.rows = append(tl.rows, r)
			tl.text = append(tl.text, fmt.Sprintf("%6.2fs probe %8s baseline %8s %5.1f× limit %d in flight %d %-9s %-15s dropped %d",
				r.at.Seconds(), r.probe.Round(10*time.Microsecond), r.baseline.Round(10*time.Microsecond), r.ratio(),
				r.limit, r.inFlight, r.throttle, r.label, r.done))
			tl.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

func (r row) ratio() float64 {
	if r.baseline == 0 {
		return 0
	}
	return float64(r.probe) / float64(r.baseline)
}

// waitSamples waits until the current phase has n samples.
func (tl *timeline) waitSamples(t *testing.T, n int) {
	t.Helper()
	testenv.Eventually(t, time.Duration(n)*time.Second, func() bool {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		return len(tl.rows)-tl.from >= n
	}, "%d samples", n)
}

// phaseStats sums up one phase.
type phaseStats struct {
	name               string
	samples, throttled int
	meanLimit, ratio   float64
	dropsPerSecond     float64
}

func (s phaseStats) String() string {
	return fmt.Sprintf("%-6s %3d samples, mean limit %.2f, %2d throttled or paused, probe %.1f× baseline, %.2f schemas/s",
		s.name, s.samples, s.meanLimit, s.throttled, s.ratio, s.dropsPerSecond)
}

// phase ends the current phase and sums it up.
func (tl *timeline) phase(name string) phaseStats {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	rows := tl.rows[tl.from:]
	tl.text = append(tl.text, "------ end of "+name)
	tl.from = len(tl.rows)
	s := phaseStats{name: name, samples: len(rows)}
	var ratios []float64
	for _, r := range rows {
		s.meanLimit += float64(r.limit)
		if r.throttle != pacer.Running {
			s.throttled++
		}
		ratios = append(ratios, r.ratio())
	}
	s.meanLimit /= float64(len(rows))
	slices.Sort(ratios)
	s.ratio = ratios[len(ratios)/2]
	first, last := rows[0], rows[len(rows)-1]
	s.dropsPerSecond = float64(last.done-first.done) / (last.at - first.at).Seconds()
	return s
}

func (tl *timeline) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return strings.Join(tl.text, "\n")
}

// progressLines keeps pgbench's progress and summary lines.
func progressLines(out string) string {
	var keep []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "progress:") || strings.Contains(l, "latency") {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return fmt.Sprintf("(no progress line in %d bytes of output: %q)", len(out), out[max(0, len(out)-300):])
	}
	return strings.Join(keep, "\n")
}
