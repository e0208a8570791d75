package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

// proc is one service process, its log in a file.
type proc struct {
	name, log, addr string
	cmd             *exec.Cmd
	done            chan struct{}
}

// startProc starts bin/<name> with the clone's URLs, JetStream and the
// given settings; everything else is at its default (the bench's own
// environment is not passed on, so a shell's settings cannot leak in).
func (b *bench) startProc(ctx context.Context, name string, f fleet, natsURL string, settings ...string) (*proc, error) {
	p := &proc{name: name, addr: freeAddr(), done: make(chan struct{})}
	logf, err := os.CreateTemp("", "bench-"+name+"-*.log")
	if err != nil {
		return nil, err
	}
	p.log = logf.Name()
	b.t.Cleanup(func() { os.Remove(p.log) })
	args := []string{}
	if name == "analyzer" {
		args = append(args, "--once")
	}
	p.cmd = exec.CommandContext(ctx, filepath.Join(b.o.bin, name), args...)
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

// ready waits until the service's /readyz answers 200: its databases, its
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
	return fmt.Errorf("%s exited: %v\n%s", p.name, p.cmd.ProcessState, strings.Join(lines[max(0, len(lines)-6):], "\n"))
}

// stop ends the process (SIGTERM, a clean shutdown) and waits for it.
func (p *proc) stop() error {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
	}
	if !p.cmd.ProcessState.Success() && p.cmd.ProcessState.ExitCode() != -1 {
		return p.failure()
	}
	return nil
}

// peakMiB is the process's peak resident set: getrusage's ru_maxrss once it
// exited, VmHWM while it runs.
func (p *proc) peakMiB() float64 {
	if p.exited() {
		return float64(p.cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) / 1024
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

// events counts the tenants that reached each outcome; an outcome that
// should not happen in a bench (refused, stuck, ...) is kept as bad.
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
		switch ev.Outcome {
		case tenant.OutcomeRefused, tenant.OutcomeStuck, tenant.OutcomeHeld, tenant.OutcomeCapped, tenant.OutcomeDead:
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

func (e *events) count(o tenant.Outcome) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.seen[o])
}

// wait waits until n tenants reached outcome, failing on a bad event, a
// process that exited, or no progress for two minutes; at half, it calls
// half (once).
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
}

// runPipeline starts bin/marker and bin/cleaner on f (DRAIN_CHECK_DELAY=0s,
// the given settings, everything else at its default) on a JetStream of its
// own, requests the cleanup of ids once both are ready, and waits until every
// one is cleaned; it verifies that they are gone.
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
	settings = append([]string{"DRAIN_CHECK_DELAY=0s"}, settings...)
	var procs []*proc
	for _, name := range []string{"marker", "cleaner"} {
		p, err := b.startProc(ctx, name, f, js.URL, settings...)
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
	// A paced cleaner first learns the probe's baseline (about 10 s) and
	// drops nothing meanwhile: a cost at start, measured apart.
	calibrating := time.Now()
	if err := poll(ctx, 2*time.Minute, func() (bool, error) {
		paces, err := bs.Paces(ctx, time.Now())
		return slices.Contains(settings, "PACE=off") || len(paces) > 0 && paces[0].State != "calibrating", err
	}); err != nil {
		return r, fmt.Errorf("pacer calibration: %w", err)
	}
	r.calibration = time.Since(calibrating)
	start := time.Now()
	if err := bs.PublishRequests(ctx, requests(ids), nil); err != nil {
		return r, err
	}
	if err := ev.wait(ctx, tenant.OutcomeCleaned, len(ids), procs, nil); err != nil {
		return r, err
	}
	r.start, r.took = start, time.Since(start)
	for _, p := range procs {
		if err := p.stop(); err != nil {
			return r, err
		}
		r.rssMiB[p.name] = p.peakMiB()
	}
	return r, verifyGone(ctx, f, "tenant_cleanup.ledger", ids)
}
