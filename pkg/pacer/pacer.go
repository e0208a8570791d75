// Package pacer paces a cleaner replica's schema drops by the data plane's
// health, so that customers on the same server keep their latency (issue
// 17: concurrent drops of 143-table schemas multiplied the foreground's p99
// by up to 8).
//
// A Pacer bounds the drops this replica runs at once with an adaptive
// limit (AIMD, as in Netflix's concurrency-limits, with gh-ost's max and
// critical loads): a Sampler reads the server every PACE_INTERVAL (a probe
// query against its idle baseline, replica lag, checkpoints, WAL, active
// sessions) and the caller reports each drop's COMMIT latency; Decide, a
// pure function, halves the limit over a max threshold, pauses over a
// critical one until every signal is below its max again, and adds one
// after PACE_HEALTHY_SAMPLES healthy samples. The cleaner calls Acquire
// before each drop and the release function after it:
//
//	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
//	release, err := p.Acquire(actx)
//	cancel()
//	if errors.Is(err, pacer.ErrPaced) && ctx.Err() == nil {
//		return tenant.Later(time.Minute, "paced: "+p.State().Reason, err)
//	}
//	...
//	start := time.Now(); err = tx.Commit(ctx); commit := time.Since(start)
//	release(pacer.Outcome{Commit: commit})
//
// Every replica runs its own pacer on the same server: they read the same
// signals and back off together, like TCP flows sharing a link (see
// docs/pacing.md).
package pacer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// calibrationPatience is how many sample intervals the first baseline
// waits for idle samples (no drop of any replica in flight, when the
// sampler can tell) before it takes busy ones too; a probe that cannot be
// read for calibrationSamples intervals more leaves the pacer to start
// without a baseline.
const calibrationPatience = 30

// ErrPaced is wrapped by the error Acquire returns when its context ends
// while it waits: the drop should be tried later, it is not a failure.
var ErrPaced = errors.New("paced")

// WaitError is Acquire's error when its context ended first.
type WaitError struct {
	// Waited is how long Acquire waited.
	Waited time.Duration
	// State is the pacer's state when it gave up.
	State State
	// Err is the context's error.
	Err error
}

func (e *WaitError) Error() string {
	return fmt.Sprintf("paced for %s (%s): %v", e.Waited.Round(time.Millisecond), e.State.Reason, e.Err)
}

// Unwrap makes errors.Is(err, ErrPaced) true, and the context's error reachable.
func (e *WaitError) Unwrap() []error { return []error{ErrPaced, e.Err} }

// Outcome is what the caller tells the pacer about a drop it released.
type Outcome struct {
	// Commit is how long the drop's COMMIT took, measured around
	// tx.Commit (the longest, for a drop in several transactions); 0 when
	// nothing committed.
	Commit time.Duration
}

// State is a snapshot of a pacer, for tenantctl status and metrics.
type State struct {
	// Mode is ModeAuto or ModeOff.
	Mode string
	// Calibrating is true until the probe's baseline is learned: no drop
	// starts before.
	Calibrating bool
	// Throttle is Running, Throttled or Paused (also while calibrating).
	Throttle Throttle
	// Label is a short reason for metrics (one of Labels()).
	Label string
	// Reason is a sentence saying what the pacer does and why.
	Reason string
	// Limit is how many drops may run at once when not paused, and
	// MaxConcurrency its ceiling (PACE_MAX_CONCURRENCY).
	Limit, MaxConcurrency int
	// InFlight is the drops of this replica running now, and Waiting the
	// callers of Acquire waiting for the pacer.
	InFlight, Waiting int
	// Baseline is the probe's idle baseline (0: not learned).
	Baseline time.Duration
	// Last is the latest sample (zero before the first).
	Last Sample
	// Since is when Throttle last changed.
	Since time.Time
}

// Throttled reports whether new drops are held back: throttled, paused or
// calibrating.
func (s State) Throttled() bool { return s.Calibrating || s.Throttle != Running }

// Pacer paces one replica's drops. Create it with New, run Run in a
// goroutine, and call Acquire around each drop. Its methods are safe for
// concurrent use.
type Pacer struct {
	cfg Config
	src Source
	log *slog.Logger
	now func() time.Time

	mu         sync.Mutex
	dec        Decision
	calibrated bool
	tries      int // calibration steps so far
	baseline   probeBaseline
	inFlight   int
	waiting    int
	others     int           // other replicas' drops in flight at the last sample, counted while throttled
	busy       bool          // a drop of this replica ran since the previous sample
	commit     time.Duration // the longest COMMIT reported since the previous sample
	last       Sample
	since      time.Time
	unread     map[Signal]string // last reported, to log changes once
	changed    chan struct{}     // closed and replaced on every change
}

// New returns a pacer of cfg (validated) reading src; log may be nil.
// With PACE=off it never blocks and src is never read.
func New(cfg Config, src Source, log *slog.Logger) (*Pacer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pacer: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pacer{cfg: cfg, src: src, log: log, now: time.Now, changed: make(chan struct{})}
	p.since = p.now()
	switch cfg.Mode {
	case ModeOff:
		p.calibrated = true
		p.dec = Decision{Limit: cfg.MaxConcurrency, Label: LabelOff,
			Reason: "off (PACE=off): drops run at full speed, the data plane is not watched"}
	default:
		p.dec = Decision{Throttle: Paused, Limit: 1, Label: LabelCalibrating,
			Reason: "calibrating: measuring the probe's idle baseline before the first drop"}
	}
	return p, nil
}

// Run samples the data plane every PACE_INTERVAL and decides, until ctx
// ends; Acquire waits for its first decision. With PACE=off it only waits
// for ctx.
func (p *Pacer) Run(ctx context.Context) {
	if p.cfg.Mode == ModeOff {
		<-ctx.Done()
		return
	}
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	for {
		p.step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// step is one interval of Run: a calibration sample until the baseline is
// learned, then a sample and a decision. A sample that takes longer than
// sampleTimeout (a server that does not answer) reads what it has by then.
func (p *Pacer) step(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, max(5*p.cfg.Interval, 5*time.Second))
	s := p.src.Sample(sctx)
	cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.calibrated {
		p.calibrate(s)
		return
	}
	p.apply(s)
}

// calibrate learns the first baseline from the probes of idle samples, one
// per interval so that it is not the picture of one moment; p.mu is held.
// Past calibrationPatience intervals it takes busy samples too, and past
// calibrationSamples more without any probe it starts without a baseline
// (the probe is judged once idle samples have taught one).
func (p *Pacer) calibrate(s Sample) {
	p.last = s
	p.noteUnread(s)
	p.tries++
	if s.Read.Has(SignalProbe) && (s.DropsInFlight <= 0 || p.tries > calibrationPatience) {
		p.baseline.Learn(s.Probe, p.cfg.Interval, p.cfg.BaselineAdapt)
	}
	if !p.baseline.Learned() && p.tries < calibrationPatience+calibrationSamples {
		return
	}
	p.calibrated = true
	p.dec = Start(p.cfg)
	if !p.baseline.Learned() {
		// Nothing says the database is idle: one drop at a time, each
		// judged by its COMMIT time, until the probe can be read.
		p.dec.Throttle, p.dec.Label = Throttled, LabelNoSignal
		p.dec.Reason += "; no probe baseline yet (the probe could not be read): throttled to one drop at a time"
	}
	p.since = p.now()
	p.log.Info("pacer calibrated", "baseline", p.baseline.Value, "reason", p.dec.Reason)
	p.broadcast()
}

// apply learns from a sample and decides; p.mu is held.
func (p *Pacer) apply(s Sample) {
	idle := p.inFlight == 0 && !p.busy && s.DropsInFlight <= 0
	if idle && s.Read.Has(SignalProbe) {
		p.baseline.Learn(s.Probe, p.cfg.Interval, p.cfg.BaselineAdapt)
	}
	s.Baseline = p.baseline.Value
	if p.commit > 0 {
		s.Commit = p.commit
		s.Read.Add(SignalCommit)
	}
	p.commit, p.busy = 0, p.inFlight > 0
	p.last = s
	p.noteUnread(s)

	prev := p.dec
	p.dec = Decide(p.cfg, prev, s)
	// Throttled, the limit counts the drops of every replica the sample
	// saw (SamplerOptions.DropLockKey), so that N throttled replicas do not
	// run N drops between them.
	p.others = 0
	if p.dec.Throttle == Throttled && s.DropsInFlight > 0 {
		// This replica's drops in flight span whole cleanups, the sample's
		// only drop transactions: with the sample's count of its own, a
		// drop of another replica is never taken for one of them.
		own := s.OwnDrops
		if own < 0 {
			own = p.inFlight
		}
		p.others = max(0, s.DropsInFlight-own)
	}
	if p.dec.Throttle != prev.Throttle {
		p.since = p.now()
	}
	if p.dec.Throttle != prev.Throttle || p.dec.Limit != prev.Limit || p.dec.Label != prev.Label {
		// A pause, or its end, is news; the limit's sawtooth is not.
		level := slog.LevelDebug
		if (p.dec.Throttle == Paused) != (prev.Throttle == Paused) {
			level = slog.LevelInfo
		}
		p.log.Log(context.Background(), level, "pacing", "throttle", p.dec.Throttle.String(), "limit", p.dec.Limit,
			"in_flight", p.inFlight, "label", p.dec.Label, "reason", p.dec.Reason)
	}
	p.broadcast()
}

// noteUnread logs a signal that became unreadable, once.
func (p *Pacer) noteUnread(s Sample) {
	for sig, why := range s.Unread {
		if p.unread[sig] != why {
			p.log.Warn("pacer: signal not read, ignored", "signal", sig.String(), "why", why)
		}
	}
	p.unread = s.Unread
}

// broadcast wakes every waiting Acquire; p.mu is held.
func (p *Pacer) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// admit reports whether a drop may start now; p.mu is held.
func (p *Pacer) admit() bool {
	switch {
	case p.cfg.Mode == ModeOff:
		return true
	case !p.calibrated, p.dec.Throttle == Paused, p.inFlight >= p.dec.Limit:
		return false
	case p.dec.Throttle == Throttled && p.inFlight+p.others >= p.dec.Limit:
		return false
	}
	return true
}

// Acquire waits until a drop may start (calibrated, not paused, fewer than
// the limit in flight, counting while throttled the other replicas' drops
// the last sample saw), then counts it in flight. Call release exactly once when the
// drop is over, with what came of it; later calls do nothing. When ctx ends
// first, Acquire returns a *WaitError (errors.Is ErrPaced) saying why it
// waited: bound the wait with a context deadline and turn that error into
// "try again later".
func (p *Pacer) Acquire(ctx context.Context) (release func(Outcome), err error) {
	start := p.now()
	for {
		p.mu.Lock()
		if ctx.Err() == nil && p.admit() {
			p.inFlight++
			p.busy = true
			p.broadcast()
			p.mu.Unlock()
			var once sync.Once
			return func(o Outcome) { once.Do(func() { p.release(o) }) }, nil
		}
		changed := p.changed
		p.waiting++
		p.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-changed:
		}
		p.mu.Lock()
		p.waiting--
		p.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return nil, &WaitError{Waited: p.now().Sub(start), State: p.State(), Err: err}
		}
	}
}

func (p *Pacer) release(o Outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight--
	p.observe(o.Commit)
	p.broadcast()
}

// Observe reports the COMMIT latency of one drop transaction, for a drop
// that commits several (release reports one more with its Outcome).
func (p *Pacer) Observe(commit time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.observe(commit)
}

func (p *Pacer) observe(commit time.Duration) {
	p.commit = max(p.commit, commit)
}

// State returns a snapshot of the pacer.
func (p *Pacer) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return State{
		Mode:           p.cfg.Mode,
		Calibrating:    !p.calibrated,
		Throttle:       p.dec.Throttle,
		Label:          p.dec.Label,
		Reason:         p.dec.Reason,
		Limit:          p.dec.Limit,
		MaxConcurrency: p.cfg.MaxConcurrency,
		InFlight:       p.inFlight,
		Waiting:        p.waiting,
		Baseline:       p.baseline.Value,
		Last:           p.last,
		Since:          p.since,
	}
}

// Changed returns a channel closed at the pacer's next change (a decision,
// a drop started or released), for a caller that reports the state as it
// changes.
func (p *Pacer) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}
