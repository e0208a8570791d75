package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
)

// jetStream is an embedded nats-server with a fresh store of its own.
type jetStream struct {
	srv   *server.Server
	url   string
	store string
}

func (b *bench) startJetStream(name string) (*jetStream, error) {
	store, err := os.MkdirTemp(b.tmp, "js-"+name+"-")
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(&server.Options{ServerName: "bench-" + name, Host: "127.0.0.1", Port: -1,
		JetStream: true, StoreDir: store, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		return nil, errors.New("nats-server did not start")
	}
	return &jetStream{srv: srv, store: store, url: fmt.Sprintf("nats://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port)}, nil
}

func (j *jetStream) shutdown(keep bool) {
	j.srv.Shutdown()
	j.srv.WaitForShutdown()
	if !keep {
		os.RemoveAll(j.store)
	}
}

// proc is one service process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
	peak atomic.Int64 // highest VmHWM seen, KiB
}

// startProc starts a service with its output going to a log file, and
// samples its VmHWM every sampleEvery while it runs. (ru_maxrss from wait4
// would be wrong here: Go starts children with vfork semantics, and Linux
// carries the high-water mark of the address space the child was exec'd
// from, this process's, into the child's ru_maxrss. VmHWM is the child's own.)
func (b *bench) startProc(name, bin string, sampleEvery time.Duration, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(b.tmp, fmt.Sprintf("%s-%d.log", name, time.Now().UnixNano()))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(b.o.bin, bin), args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	exited := make(chan struct{})
	go func() {
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			p.sample()
			select {
			case <-exited:
				return
			case <-t.C:
			}
		}
	}()
	go func() {
		p.err = cmd.Wait()
		close(exited)
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) sample() {
	if kb := p.hwm(); kb > p.peak.Load() {
		p.peak.Store(kb)
	}
}

// peakMiB is the highest VmHWM seen, in MiB.
func (p *proc) peakMiB() float64 { return float64(p.peak.Load()) / 1024 }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// hwm is the process's peak resident set so far (VmHWM), in KiB.
func (p *proc) hwm() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return kb
		}
	}
	return 0
}

// stop sends SIGTERM and waits (SIGKILL after 40 s); it returns the
// process's exit error, if any.
func (p *proc) stop() error {
	if p.exited() {
		return p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within 40 s of SIGTERM (killed)", p.name)
	}
	return p.err
}

func (p *proc) cpu() time.Duration {
	if p.cmd.ProcessState == nil {
		return 0
	}
	return p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
}

// notable counts the log lines of the process that say something went other
// than planned: warnings, errors and "retry later", by message (and reason).
func (p *proc) notable() map[string]int {
	out := map[string]int{}
	b, _ := os.ReadFile(p.log)
	for _, line := range strings.Split(string(b), "\n") {
		var l struct {
			Level  string `json:"level"`
			Msg    string `json:"msg"`
			Reason string `json:"reason"`
		}
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		if l.Level == "WARN" || l.Level == "ERROR" || strings.Contains(l.Msg, "later") {
			key := l.Level + " " + l.Msg
			if l.Reason != "" {
				key += ": " + shorten(l.Reason, 80)
			}
			out[key]++
		}
	}
	return out
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// serviceEnv is the environment of a service: this process's, with the URLs
// and the given settings (everything else at its default).
func serviceEnv(dataURL, controlURL, natsURL string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !serviceSetting(k) {
			env = append(env, kv)
		}
	}
	env = append(env, "DATA_PLANE_DATABASE_URL="+dataURL, "CONTROL_PLANE_DATABASE_URL="+controlURL, "NATS_URL="+natsURL)
	return append(env, extra...)
}

// serviceSetting reports whether k configures the services: the shell that
// runs the bench must not leak such settings into the measured services.
func serviceSetting(k string) bool {
	for _, prefix := range []string{"DRAIN_", "CLEANUP_", "MARKER_", "CLEANER_", "ANALYZER_", "DB_", "CONTROL_PLANE_",
		"DATA_PLANE_", "NATS_", "BASTION_", "BREAKER_", "DDL_", "DROP_", "DEAD_"} {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	switch k {
	case "PEM_FILE_LOCATION", "INACTIVE_DAYS", "HTTP_ADDR", "LOG_LEVEL":
		return true
	}
	return false
}

// freeAddr is a loopback address nobody listens on: each replica's metrics
// endpoint (HTTP_ADDR, default :9090) needs a port of its own on one machine.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ""
	}
	defer l.Close()
	return l.Addr().String()
}

// events follows tenant.cleanup.event.> and counts tenants per outcome.
type events struct {
	mu       sync.Mutex
	sub      *nats.Subscription
	tenants  map[string]map[string]bool // outcome → tenants
	total    map[string]int             // outcome → events
	lastBad  string
	dropTx   map[int]int // drop transactions per tenant → tenants
	relation map[int]int // relations per tenant → tenants
	first    map[string]time.Time
	last     map[string]time.Time
}

var dropReason = regexp.MustCompile(`\((\d+) relations, (\d+) transactions\)`)

func followEvents(nc *nats.Conn) (*events, error) {
	e := &events{tenants: map[string]map[string]bool{}, total: map[string]int{}, dropTx: map[int]int{},
		relation: map[int]int{}, first: map[string]time.Time{}, last: map[string]time.Time{}}
	sub, err := nc.Subscribe(bus.EventSubjects, func(m *nats.Msg) {
		var ev struct {
			TenantID string `json:"tenant_id"`
			Outcome  string `json:"outcome"`
			Reason   string `json:"reason"`
		}
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		now := time.Now()
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.tenants[ev.Outcome] == nil {
			e.tenants[ev.Outcome] = map[string]bool{}
			e.first[ev.Outcome] = now
		}
		e.last[ev.Outcome] = now
		e.total[ev.Outcome]++
		if !e.tenants[ev.Outcome][ev.TenantID] && ev.Outcome == "cleaned" {
			if m := dropReason.FindStringSubmatch(ev.Reason); m != nil {
				rels, _ := strconv.Atoi(m[1])
				tx, _ := strconv.Atoi(m[2])
				e.dropTx[tx]++
				e.relation[rels]++
			}
		}
		e.tenants[ev.Outcome][ev.TenantID] = true
		switch ev.Outcome {
		case "refused", "stuck", "held", "capped", "paused", "dead":
			// every tenant of a bench fleet is eligible and drained (or, in
			// (e), meant to stay in flight): any of these is a failure.
			e.lastBad = ev.Outcome + " " + ev.TenantID + ": " + ev.Reason
		}
	})
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	e.sub = sub
	return e, nil
}

func (e *events) count(outcome string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.tenants[outcome])
}

func (e *events) bad() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastBad
}

func (e *events) summary() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var parts []string
	for _, k := range sortedKeys(e.total) {
		parts = append(parts, fmt.Sprintf("%s %d (%d tenants)", k, e.total[k], len(e.tenants[k])))
	}
	return strings.Join(parts, ", ")
}

// waitReady waits until the services have created the streams and their
// consumers and every one of them is connected.
func waitReady(ctx context.Context, js *jetStream, nc *nats.Conn, clients int, consumers []string, procs []*proc) error {
	jsc, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok := js.srv.NumClients() >= clients+1
		for _, c := range consumers {
			if !ok {
				break
			}
			if _, err := jsc.Consumer(ctx, bus.ConsumerStream(c), c); err != nil {
				ok = false
			}
		}
		if ok {
			time.Sleep(500 * time.Millisecond) // let every fetch loop start
			return nil
		}
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail())
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the services did not become ready within 60 s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func writeCSV(path string, ids []string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"tenant_id"})
	for _, id := range ids {
		_ = w.Write([]string{id})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type pipelineResult struct {
	// RoundsPerMinute is every round's figure; the result is the best round.
	RoundsPerMinute []float64          `json:"rounds_tenants_per_minute"`
	Cleaners        int                `json:"cleaners"`
	Tenants         int                `json:"tenants"`
	Seconds         float64            `json:"seconds"`
	PerMinute       float64            `json:"tenants_per_minute"`
	RatioToFloor    float64            `json:"ratio_to_floor,omitempty"`
	PublishSeconds  float64            `json:"publish_seconds"`
	MarkedSeconds   float64            `json:"all_marked_after_seconds"`
	DropTx          map[string]int     `json:"drop_transactions_per_tenant"`
	Relations       map[string]int     `json:"relations_per_tenant"`
	Events          string             `json:"events"`
	CPU             cpuUse             `json:"cpu"`
	PeakRSSMiB      map[string]float64 `json:"peak_rss_mib"`
	// Notable counts warnings, errors and "retry later" lines in the
	// services' logs.
	Notable map[string]int `json:"notable_log_lines,omitempty"`
}

// runPipeline is (b) with one cleaner and (c) with more: bin/marker and
// cleaners on default settings (DRAIN_CHECK_DELAY=0s), fed by tenantctl.
func (b *bench) runPipeline(ctx context.Context, cleaners int) error {
	part := "b"
	if cleaners > 1 {
		part = fmt.Sprintf("c%d", cleaners)
	}
	step("(%s) pipeline: 1 marker, %d cleaner(s), default settings, DRAIN_CHECK_DELAY=0s, %d tenants", part, cleaners, len(b.fleet.ids))
	data, control, err := b.clone(ctx, part, b.fleet.data, b.fleet.control)
	if err != nil {
		return err
	}
	defer b.dropDatabases(data, control)
	js, err := b.startJetStream(part)
	if err != nil {
		return err
	}
	defer js.shutdown(b.o.keep)

	var procs []*proc
	defer func() {
		for _, p := range procs {
			_ = p.stop()
		}
	}()
	start := func(name, bin string) error {
		env := serviceEnv(b.dbURL(data), b.dbURL(control), js.url, "DRAIN_CHECK_DELAY=0s", "HTTP_ADDR="+freeAddr())
		p, err := b.startProc(name, bin, 100*time.Millisecond, env)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		return nil
	}
	if err := start("marker", "marker"); err != nil {
		return err
	}
	for i := 1; i <= cleaners; i++ {
		if err := start(fmt.Sprintf("cleaner-%d", i), "cleaner"); err != nil {
			return err
		}
	}
	nc, err := nats.Connect(js.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := waitReady(ctx, js, nc, len(procs), []string{bus.ConsumerMarker, bus.ConsumerCleaner}, procs); err != nil {
		return err
	}
	ev, err := followEvents(nc)
	if err != nil {
		return err
	}
	csvPath := filepath.Join(b.tmp, part+"-tenants.csv")
	if err := writeCSV(csvPath, b.fleet.ids); err != nil {
		return err
	}

	n := len(b.fleet.ids)
	pg0, pgAll0 := b.backendCPU(ctx, data, control), postgresCPU()
	cpu0 := sampleCPU()
	t0 := time.Now()
	ctl := exec.CommandContext(ctx, filepath.Join(b.o.bin, "tenantctl"), "cleanup", "--csv", csvPath)
	ctl.Env = serviceEnv("", "", js.url)
	if out, err := ctl.CombinedOutput(); err != nil {
		return fmt.Errorf("tenantctl cleanup --csv: %w\n%s", err, out)
	}
	published := time.Since(t0)
	var allMarked time.Duration
	err = waitProgress(ctx, n, 3*time.Minute, func() (int, error) {
		if allMarked == 0 && ev.count("marked") >= n {
			allMarked = time.Since(t0)
		}
		if bad := ev.bad(); bad != "" {
			return 0, fmt.Errorf("unexpected event: %s", bad)
		}
		for _, p := range procs {
			if p.exited() {
				return 0, fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail())
			}
		}
		return ev.count("cleaned"), nil
	}, func(done int) {
		info("%d/%d cleaned after %s (%s)", done, n, time.Since(t0).Round(time.Second), ev.summary())
	})
	took := time.Since(t0)
	if allMarked == 0 {
		allMarked = took
	}
	if err != nil {
		return fmt.Errorf("%w (events: %s; logs in %s)", err, ev.summary(), b.tmp)
	}
	cpu := sampleCPU().since(cpu0)
	cpu.addPostgres(backendCPUSince(pg0, b.backendCPU(ctx, data, control)), backendCPUSince(pgAll0, postgresCPU()))
	r := &pipelineResult{Cleaners: cleaners, Tenants: n, Seconds: took.Seconds(), PerMinute: float64(n) / took.Minutes(),
		PublishSeconds: published.Seconds(), MarkedSeconds: allMarked.Seconds(), Events: ev.summary(),
		DropTx: map[string]int{}, Relations: map[string]int{}, PeakRSSMiB: map[string]float64{}}
	ev.mu.Lock()
	for k, v := range ev.dropTx {
		r.DropTx[strconv.Itoa(k)] = v
	}
	for k, v := range ev.relation {
		r.Relations[strconv.Itoa(k)] = v
	}
	ev.mu.Unlock()
	var stopErr error
	for _, p := range procs {
		if err := p.stop(); err != nil && stopErr == nil {
			stopErr = fmt.Errorf("%s: %w\n%s", p.name, err, p.tail())
		}
		cpu.addService(strings.Split(p.name, "-")[0], p.cpu())
		r.PeakRSSMiB[p.name] = p.peakMiB()
		for k, v := range p.notable() {
			if r.Notable == nil {
				r.Notable = map[string]int{}
			}
			r.Notable[strings.Split(p.name, "-")[0]+": "+k] += v
		}
	}
	procs = nil
	r.CPU = cpu
	if stopErr != nil {
		return fmt.Errorf("stopping the services: %w", stopErr)
	}
	if err := b.verifyGone(ctx, data, control, "tenant_cleanup.ledger", n); err != nil {
		return err
	}
	if b.res.Floor != nil {
		r.RatioToFloor = r.PerMinute / b.res.Floor.PerMinute
	}
	b.res.Pipeline = keepBestRound(b.res.Pipeline, r)
	info("%d tenants in %s: %.0f tenants/min (ratio to the floor %s); published in %.1f s, all marked after %.1f s",
		n, took.Round(100*time.Millisecond), r.PerMinute, ratioText(r.RatioToFloor), r.PublishSeconds, r.MarkedSeconds)
	for _, k := range sortedKeys(r.Notable) {
		info("log: %d × %s", r.Notable[k], k)
	}
	info("drop transactions per tenant %v; CPU: machine %.0f%% busy; PostgreSQL backends %.1f s, other PostgreSQL processes %.1f s, services %s, bench (JetStream) %.1f s, other %.1f s",
		r.DropTx, cpu.BusyPercent, cpu.PostgresSeconds, cpu.PostgresOtherSeconds, fmtSeconds(cpu.ServiceSeconds), cpu.BenchSeconds, cpu.OtherSeconds)
	return nil
}

// keepBestRound adds the round r to the results: the first round with its
// number of cleaners is kept as it is; a later one replaces the earlier
// result when it is faster. Either way the kept result lists every round's
// tenants per minute.
func keepBestRound(results []*pipelineResult, r *pipelineResult) []*pipelineResult {
	r.RoundsPerMinute = []float64{r.PerMinute}
	for i, best := range results {
		if best.Cleaners != r.Cleaners {
			continue
		}
		r.RoundsPerMinute = append(best.RoundsPerMinute, r.PerMinute)
		if best.PerMinute > r.PerMinute {
			best.RoundsPerMinute = r.RoundsPerMinute
		} else {
			results[i] = r
		}
		return results
	}
	return append(results, r)
}

func ratioText(r float64) string {
	if r == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", r)
}

func fmtSeconds(m map[string]float64) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %.1f s", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// waitProgress polls done() until it reaches n; it fails when nothing
// progresses for stall, and reports progress every 10 s.
func waitProgress(ctx context.Context, n int, stall time.Duration, done func() (int, error), report func(int)) error {
	last, lastChange, lastReport := -1, time.Now(), time.Now()
	for {
		d, err := done()
		if err != nil {
			return err
		}
		if d >= n {
			return nil
		}
		if d != last {
			last, lastChange = d, time.Now()
		}
		if time.Since(lastChange) > stall {
			return fmt.Errorf("no progress for %s at %d/%d", stall, d, n)
		}
		if time.Since(lastReport) >= 10*time.Second {
			report(d)
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
