package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// proc is one service process (bin/<name>), its output in a log file.
type proc struct {
	name, log, addr string
	cmd             *exec.Cmd
	done            chan struct{}
	peakMiB         float64 // highest VmHWM sampled
}

// startProc starts bin/<name> on the fleet f and JetStream with the given
// settings, everything else at its default: the bench's own environment is
// not passed on, so that a shell's settings cannot leak in.
func (b *bench) startProc(ctx context.Context, name string, f fleet, natsURL string, settings ...string) (*proc, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, addr: l.Addr().String(), log: filepath.Join(b.t.TempDir(), "log"), done: make(chan struct{})}
	l.Close()
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.CommandContext(ctx, filepath.Join(b.o.bin, name))
	if name == "analyzer" {
		p.cmd.Args = append(p.cmd.Args, "--once")
	}
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "DATA_PLANE_DATABASE_URL=" + dbURL(f.data),
		"CONTROL_PLANE_DATABASE_URL=" + dbURL(f.control), "NATS_URL=" + natsURL, "HTTP_ADDR=" + p.addr}, settings...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.done) }()
	b.t.Cleanup(func() { _ = p.stop() })
	return p, nil
}

// ready waits until the service's /readyz answers 200: its databases,
// stores and JetStream reachable, its consume loop consuming.
func (p *proc) ready(ctx context.Context) error {
	return poll(ctx, time.Minute, func() (bool, error) {
		if p.exited() {
			return false, p.failure()
		}
		resp, err := http.Get("http://" + p.addr + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) failure() error {
	out, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return fmt.Errorf("%s: %v\n%s", p.name, p.cmd.ProcessState, strings.Join(lines[max(0, len(lines)-6):], "\n"))
}

// stop asks the process to shut down (SIGTERM) and waits for it.
func (p *proc) stop() error {
	if !p.exited() {
		p.sample()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
	}
	if !p.cmd.ProcessState.Success() {
		return p.failure()
	}
	return nil
}

// sample reads the process's peak resident set so far (VmHWM) and returns
// the highest seen. (getrusage's ru_maxrss is no use: a child of a Go
// program starts with its parent's.)
func (p *proc) sample() float64 {
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	_, hwm, _ := strings.Cut(string(status), "VmHWM:")
	kb, _ := strconv.ParseFloat(strings.Fields(hwm + " 0")[0], 64)
	p.peakMiB = max(p.peakMiB, kb/1024)
	return p.peakMiB
}

// steps reads the cleaner's tenant_cleanup_step_duration_seconds sums
// from its /metrics: seconds per step.
func (p *proc) steps() map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, m := range reStepSum.FindAllStringSubmatch(string(body), -1) {
		out[m[1]], _ = strconv.ParseFloat(m[2], 64)
	}
	return out
}

var reStepSum = regexp.MustCompile(`(?m)^tenant_cleanup_step_duration_seconds_sum\{[^}]*step="([a-z_0-9]+)"[^}]*\} (\S+)$`)

// events counts the tenants that reached each outcome, from the pipeline's
// events; one that must not happen in a bench (refused, stuck, ...) is bad.
type events struct {
	mu      sync.Mutex
	seen    map[tenant.Outcome]map[tenant.ID]bool
	bad     string
	changed chan struct{}
}

func watchEvents(ctx context.Context, bs *bus.Bus) (*events, func(), error) {
	e := &events{seen: map[tenant.Outcome]map[tenant.ID]bool{}, changed: make(chan struct{}, 1)}
	stop, err := bs.WatchEvents(ctx, time.Time{}, func(ev tenant.Event) {
		e.mu.Lock()
		if e.seen[ev.Outcome] == nil {
			e.seen[ev.Outcome] = map[tenant.ID]bool{}
		}
		e.seen[ev.Outcome][ev.TenantID] = true
		if slices.Contains([]tenant.Outcome{tenant.OutcomeRefused, tenant.OutcomeStuck, tenant.OutcomeHeld,
			tenant.OutcomeCapped, tenant.OutcomeDead}, ev.Outcome) {
			e.bad = fmt.Sprintf("%s %s: %s", ev.Outcome, ev.TenantID, ev.Reason)
		}
		e.mu.Unlock()
		select {
		case e.changed <- struct{}{}:
		default:
		}
	})
	return e, stop, err
}

// wait waits until n tenants reached outcome o; it fails on a bad event, a
// process that exited, or no progress for five minutes. Once half are
// there it calls half (when not nil).
func (e *events) wait(ctx context.Context, o tenant.Outcome, n int, procs []*proc, half func()) error {
	last, lastAt := -1, time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		e.mu.Lock()
		done, bad := len(e.seen[o]), e.bad
		e.mu.Unlock()
		if bad != "" {
			return errors.New("unexpected event: " + bad)
		}
		if half != nil && done >= n/2 {
			half()
			half = nil
		}
		if done >= n {
			return nil
		}
		for _, p := range procs {
			if p.exited() {
				return p.failure()
			}
		}
		if done != last {
			last, lastAt = done, time.Now()
		} else if time.Since(lastAt) > 5*time.Minute {
			return fmt.Errorf("no progress for 5 minutes at %d/%d %s", done, n, o)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.changed:
		case <-tick.C:
		}
	}
}

func connectBus(ctx context.Context, url string) (*bus.Bus, error) {
	return bus.Connect(ctx, url, bus.Options{Name: "bench", Log: slog.New(slog.DiscardHandler)})
}

func requests(ids []string) []tenant.Request {
	reqs := make([]tenant.Request, len(ids))
	for i, id := range ids {
		reqs[i] = tenant.Request{ID: tenant.ID(id), RequestedBy: "bench"}
	}
	return reqs
}

// pipelineRun is one run of the pipeline over some tenants of a clone.
type pipelineRun struct {
	start             time.Time
	took, calibration time.Duration
	rssMiB            map[string]float64
	steps             map[string]float64 // the cleaner's seconds per step
}

// runPipeline starts bin/marker and bin/cleaner on f (DRAIN_CHECK_DELAY=0s,
// then settings) with a JetStream of their own, requests the cleanup of ids
// once both are ready (and the pacer calibrated), waits until every one is
// cleaned, and verifies that they are gone.
func (b *bench) runPipeline(ctx context.Context, f fleet, ids []string, settings ...string) (pipelineRun, error) {
	r := pipelineRun{rssMiB: map[string]float64{}}
	js := testenv.StartJetStream(b.t)
	defer js.Shutdown()
	bs, err := connectBus(ctx, js.URL)
	if err != nil {
		return r, err
	}
	defer bs.Close()
	ev, stopEvents, err := watchEvents(ctx, bs)
	if err != nil {
		return r, err
	}
	defer stopEvents()
	var procs []*proc
	for _, name := range []string{"marker", "cleaner"} {
		p, err := b.startProc(ctx, name, f, js.URL, append([]string{"DRAIN_CHECK_DELAY=0s"}, settings...)...)
		if err != nil {
			return r, err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		if err := p.ready(ctx); err != nil {
			return r, err
		}
	}
	// A paced cleaner first learns the probe's baseline (about 10 s), and
	// drops nothing meanwhile: a cost at start, measured apart.
	calibrating := time.Now()
	if err := poll(ctx, 2*time.Minute, func() (bool, error) {
		paces, err := bs.Paces(ctx, time.Now())
		return slices.Contains(settings, "PACE=off") || len(paces) > 0 && paces[0].State != "calibrating", err
	}); err != nil {
		return r, fmt.Errorf("pacer calibration: %w", err)
	}
	r.calibration = time.Since(calibrating)
	r.start = time.Now()
	if err := bs.PublishRequests(ctx, requests(ids), nil); err != nil {
		return r, err
	}
	if err := ev.wait(ctx, tenant.OutcomeCleaned, len(ids), procs, nil); err != nil {
		return r, err
	}
	r.took = time.Since(r.start)
	r.steps = procs[1].steps()
	for _, p := range procs {
		if err := p.stop(); err != nil {
			return r, err
		}
		r.rssMiB[p.name] = p.peakMiB
	}
	return r, verifyGone(ctx, f, "tenant_cleanup.ledger", ids)
}
