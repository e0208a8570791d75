package pacer

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// fakeSource returns the sample the test set, every time it is asked.
type fakeSource struct {
	mu    sync.Mutex
	next  Sample
	calls int
}

func (f *fakeSource) Sample(context.Context) Sample {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	s := f.next
	s.At = time.Now()
	return s
}

func (f *fakeSource) set(s Sample) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next = s
}

// idle is a sample with the probe at ratio × the 2ms baseline, no drop of
// another replica in flight.
func idle(ratio float64) Sample {
	return Sample{Read: SetOf(SignalProbe), Probe: time.Duration(ratio * float64(baseline)), DropsInFlight: 0}
}

type fixture struct {
	p   *Pacer
	src *fakeSource
	ctx context.Context
}

// setup returns a pacer of cfg reading a fake source; calibrated unless
// told otherwise (its baseline is then 2ms). Decisions are made by calling
// step: nothing here depends on the clock.
func setup(t *testing.T, cfg Config, calibrate bool) fixture {
	t.Helper()
	src := &fakeSource{next: idle(1)}
	p, err := New(cfg, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := fixture{p: p, src: src, ctx: t.Context()}
	if calibrate {
		for range calibrationSamples {
			f.p.step(f.ctx)
		}
		if st := p.State(); st.Calibrating || st.Baseline != baseline || st.Throttle != Running || st.Limit != 1 {
			t.Fatalf("after calibration: %+v", st)
		}
	}
	return f
}

// sample makes the pacer take s as its next sample and decide.
func (f fixture) sample(s Sample) State {
	f.src.set(s)
	f.p.step(f.ctx)
	return f.p.State()
}

// acquire takes a slot that must be free now.
func (f fixture) acquire(t *testing.T) func(Outcome) {
	t.Helper()
	f.p.mu.Lock()
	ok := f.p.admit()
	f.p.mu.Unlock()
	if !ok {
		t.Fatalf("no slot free: %+v", f.p.State())
	}
	release, err := f.p.Acquire(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return release
}

// waiter is an Acquire in a goroutine of its own.
type waiter struct {
	done    chan struct{}
	release func(Outcome)
	err     error
}

// wait starts an Acquire and returns once it is waiting for the pacer.
func (f fixture) wait(t *testing.T, ctx context.Context) *waiter {
	t.Helper()
	before := f.p.State().Waiting
	w := &waiter{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.release, w.err = f.p.Acquire(ctx)
	}()
	testenv.Eventually(t, 5*time.Second, func() bool { return f.p.State().Waiting > before }, "Acquire waits")
	return w
}

func (w *waiter) waiting() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// granted waits for the Acquire to return, and wants a slot.
func (w *waiter) granted(t *testing.T) func(Outcome) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() bool { return !w.waiting() }, "Acquire returns")
	if w.err != nil {
		t.Fatalf("Acquire: %v", w.err)
	}
	return w.release
}

func TestAcquireWaitsForCalibration(t *testing.T) {
	t.Parallel()
	f := setup(t, testConfig(), false)
	if st := f.p.State(); !st.Calibrating || !st.Throttled() || st.Label != LabelCalibrating {
		t.Fatalf("before the first sample: %+v", st)
	}
	w := f.wait(t, f.ctx)
	f.src.set(Sample{Read: SetOf(SignalProbe), Probe: baseline, DropsInFlight: 1}) // another replica drops
	for range calibrationSamples {
		f.p.step(f.ctx)
	}
	if !w.waiting() || !f.p.State().Calibrating {
		t.Fatal("calibrated on samples taken while another replica dropped")
	}
	f.src.set(idle(1))
	for range calibrationSamples - 1 {
		f.p.step(f.ctx)
	}
	if !w.waiting() || !f.p.State().Calibrating {
		t.Fatalf("calibrated on fewer than %d samples", calibrationSamples)
	}
	f.p.step(f.ctx)
	w.granted(t)(Outcome{})
	if st := f.p.State(); st.Baseline != baseline || st.Calibrating {
		t.Fatalf("after calibration: %+v", st)
	}
}

func TestCalibrationGivesUpWaiting(t *testing.T) {
	t.Parallel()
	t.Run("other replicas never stop", func(t *testing.T) {
		t.Parallel()
		f := setup(t, testConfig(), false)
		f.src.set(Sample{Read: SetOf(SignalProbe), Probe: 3 * time.Millisecond, DropsInFlight: 2})
		for range calibrationPatience + calibrationSamples - 1 {
			f.p.step(f.ctx)
		}
		if !f.p.State().Calibrating {
			t.Fatal("calibrated on busy samples before its patience ran out")
		}
		f.p.step(f.ctx)
		if st := f.p.State(); st.Calibrating || st.Baseline != 3*time.Millisecond {
			t.Fatalf("after %d intervals: %+v", calibrationPatience+calibrationSamples, st)
		}
	})
	t.Run("the probe cannot be read", func(t *testing.T) {
		t.Parallel()
		f := setup(t, testConfig(), false)
		f.src.set(Sample{Read: SetOf(SignalCheckpoints), Unread: map[Signal]string{SignalProbe: "permission denied"}})
		for range calibrationPatience + calibrationSamples {
			f.p.step(f.ctx)
		}
		st := f.p.State()
		if st.Calibrating || st.Baseline != 0 || !strings.Contains(st.Reason, "no probe baseline yet") {
			t.Fatalf("after %d intervals: %+v", calibrationPatience+calibrationSamples, st)
		}
		f.acquire(t)(Outcome{})
		// The probe is judged once idle samples taught a baseline.
		for range calibrationSamples {
			f.sample(idle(1))
		}
		if st := f.sample(idle(3)); st.Throttle != Throttled || st.Label != "probe" {
			t.Fatalf("probe not judged once learned: %+v", st)
		}
	})
}

func TestThrottleHalvesTheLimitAndCountsOtherReplicas(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.HealthySamples = 1
	f := setup(t, cfg, true)
	for range 3 {
		f.sample(idle(1))
	}
	if st := f.p.State(); st.Limit != 4 {
		t.Fatalf("limit %d after 3 healthy samples at one per increase, want 4", st.Limit)
	}
	var releases []func(Outcome)
	for range 4 {
		releases = append(releases, f.acquire(t))
	}
	fifth := f.wait(t, f.ctx)

	over := idle(3)
	over.DropsInFlight, over.OwnDrops = 4, 4 // this replica's own
	st := f.sample(over)
	if st.Throttle != Throttled || st.Limit != 2 || st.Label != "probe" || !strings.Contains(st.Reason, "probe 6.00 ms is 3.0×") {
		t.Fatalf("over max: %+v", st)
	}
	releases[0](Outcome{})
	releases[1](Outcome{})
	if !fifth.waiting() {
		t.Fatal("started with 2 in flight at a limit of 2")
	}
	releases[2](Outcome{})
	fifth.granted(t)(Outcome{})
	releases[3](Outcome{})
	// Throttled at 2, drops start one after another up to the limit: no
	// spacing in time.
	for range 3 {
		a, b := f.acquire(t), f.acquire(t)
		a(Outcome{})
		b(Outcome{})
	}

	// Another replica's drop, seen by the sample, counts against the limit
	// while throttled.
	over.DropsInFlight, over.OwnDrops = 1, 0
	st = f.sample(over)
	if st.Limit != 1 || st.Throttle != Throttled {
		t.Fatalf("still over max: %+v", st)
	}
	blocked := f.wait(t, f.ctx)
	if !blocked.waiting() {
		t.Fatal("started beside another replica's drop at a throttled limit of 1")
	}
	over.DropsInFlight, over.OwnDrops = 0, 0 // the other replica's drop ended
	f.sample(over)
	release := blocked.granted(t)
	third := f.wait(t, f.ctx)
	f.sample(idle(1)) // healthy: the limit grows to 2 again
	release(Outcome{})
	third.granted(t)(Outcome{})

	// Running (not throttled), the limit is this replica's alone.
	busy := idle(1)
	busy.DropsInFlight = 5
	f.sample(busy)
	f.acquire(t)(Outcome{})
}

func TestPauseAtCriticalUntilBelowMax(t *testing.T) {
	t.Parallel()
	f := setup(t, testConfig(), true)
	running := f.acquire(t)
	st := f.sample(idle(6))
	if st.Throttle != Paused || st.Limit != 1 || st.Label != "probe" || !strings.HasPrefix(st.Reason, "paused, no new drop starts: probe 12.0 ms is 6.0×") {
		t.Fatalf("over critical: %+v", st)
	}
	running(Outcome{}) // the drop under way finishes; none starts
	w := f.wait(t, f.ctx)
	st = f.sample(idle(3))
	if st.Throttle != Paused || !strings.HasPrefix(st.Reason, "paused until every signal is below its max: probe 6.00 ms") {
		t.Fatalf("between max and critical: %+v", st)
	}
	if !w.waiting() {
		t.Fatal("a drop started while paused")
	}
	st = f.sample(idle(1.5))
	if st.Throttle != Running || st.Limit != 1 || st.Label != LabelNone {
		t.Fatalf("below max: %+v", st)
	}
	w.granted(t)(Outcome{})
}

func TestRecoveryAddsOneAfterHealthySamples(t *testing.T) {
	t.Parallel()
	f := setup(t, testConfig(), true) // 3 healthy samples per increase, up to 4
	var limits []int
	for range 12 {
		limits = append(limits, f.sample(idle(1)).Limit)
	}
	want := []int{1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4}
	for i := range want {
		if limits[i] != want[i] {
			t.Fatalf("limits %v, want %v", limits, want)
		}
	}
	if st := f.sample(idle(2.5)); st.Limit != 2 {
		t.Fatalf("halved from 4: %d", st.Limit)
	}
	if st := f.sample(idle(1)); st.Limit != 2 || st.Throttle != Running {
		t.Fatalf("one healthy sample after a throttle: %+v", st)
	}
}

func TestAcquireGivesUpWithTheContext(t *testing.T) {
	t.Parallel()
	f := setup(t, testConfig(), true)
	f.sample(idle(10))
	ctx, cancel := context.WithCancel(f.ctx)
	w := f.wait(t, ctx)
	cancel()
	testenv.Eventually(t, 5*time.Second, func() bool { return !w.waiting() }, "Acquire returns")
	var we *WaitError
	if !errors.Is(w.err, ErrPaced) || !errors.Is(w.err, context.Canceled) || !errors.As(w.err, &we) {
		t.Fatalf("error %v, want ErrPaced and context.Canceled", w.err)
	}
	if we.State.Throttle != Paused || !strings.Contains(w.err.Error(), "paused, no new drop starts: probe") {
		t.Fatalf("error %q does not say why it waited", w.err)
	}
	if st := f.p.State(); st.InFlight != 0 || st.Waiting != 0 {
		t.Fatalf("after giving up: %+v", st)
	}
	// A context already over never takes a slot, free or not.
	f.sample(idle(1))
	if _, err := f.p.Acquire(ctx); !errors.Is(err, ErrPaced) {
		t.Fatalf("Acquire with a cancelled context: %v", err)
	}
}

func TestReleaseReportsTheCommitOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, testConfig(), true)
	release := f.acquire(t)
	release(Outcome{Commit: 3 * time.Second})
	release(Outcome{Commit: time.Hour}) // ignored
	if st := f.p.State(); st.InFlight != 0 {
		t.Fatalf("in flight %d after a double release", st.InFlight)
	}
	st := f.sample(idle(1))
	if st.Throttle != Throttled || st.Label != "commit_latency" || st.Last.Commit != 3*time.Second {
		t.Fatalf("after a 3s commit: %+v", st)
	}
	// Only commits since the previous sample count.
	if st := f.sample(idle(1)); st.Throttle != Running || st.Last.Read.Has(SignalCommit) {
		t.Fatalf("a commit counted twice: %+v", st)
	}
	f.p.Observe(20 * time.Second) // one transaction of a batched drop
	if st := f.sample(idle(1)); st.Throttle != Paused || st.Label != "commit_latency" {
		t.Fatalf("after a 20s commit: %+v", st)
	}
}

func TestBaselineLearnsOnlyWhileIdle(t *testing.T) {
	t.Parallel()
	f := setup(t, testConfig(), true)
	release := f.acquire(t)
	for range 100 {
		f.sample(idle(4))
	}
	if st := f.p.State(); st.Baseline != baseline {
		t.Fatalf("baseline %s learned while a drop ran", st.Baseline)
	}
	release(Outcome{})
	f.sample(idle(4)) // the drop ran during this interval
	if st := f.p.State(); st.Baseline != baseline {
		t.Fatalf("baseline %s learned from an interval with a drop", st.Baseline)
	}
	other := idle(4)
	other.DropsInFlight = 1
	f.sample(other)
	if st := f.p.State(); st.Baseline != baseline {
		t.Fatalf("baseline %s learned while another replica dropped", st.Baseline)
	}
	st := f.sample(idle(4))
	if st.Baseline <= baseline || st.Baseline > baseline*101/100 {
		t.Fatalf("idle: baseline %s, want a step above %s", st.Baseline, baseline)
	}
}

func TestOffNeverWaits(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Mode = ModeOff
	f := setup(t, cfg, false)
	var releases []func(Outcome)
	for range 10 {
		releases = append(releases, f.acquire(t))
	}
	st := f.p.State()
	if st.Throttled() || st.Label != LabelOff || st.InFlight != 10 {
		t.Fatalf("off: %+v", st)
	}
	for _, r := range releases {
		r(Outcome{})
	}
	ctx, cancel := context.WithCancel(f.ctx)
	cancel()
	f.p.Run(ctx)
	if f.src.calls != 0 {
		t.Fatalf("off read the data plane %d times", f.src.calls)
	}
}

func TestRunSamplesUntilCancelled(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Interval = 10 * time.Millisecond
	src := &fakeSource{next: idle(1)}
	p, err := New(cfg, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	release, err := p.Acquire(ctx) // waits for calibration
	if err != nil {
		t.Fatal(err)
	}
	release(Outcome{})
	testenv.Eventually(t, 10*time.Second, func() bool { return p.State().Limit == cfg.MaxConcurrency }, "the limit grows to the maximum")
	cancel()
	<-done
}

func TestNewRejectsABadConfig(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.CriticalProbeRatio = cfg.MaxProbeRatio
	if _, err := New(cfg, &fakeSource{}, nil); err == nil || !strings.Contains(err.Error(), "PACE_CRITICAL_PROBE_RATIO") {
		t.Fatalf("New: %v", err)
	}
}
