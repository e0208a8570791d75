package pacer

import (
	"fmt"
	"strings"
	"time"
)

// Throttle says whether new drops may start.
type Throttle uint8

const (
	// Running: drops start up to the limit.
	Running Throttle = iota
	// Throttled: the last sample was over a max threshold; the limit was
	// halved, and it counts every replica's drops in flight.
	Throttled
	// Paused: a sample was over a critical threshold; no drop starts until
	// a sample is below every max threshold (hysteresis).
	Paused
)

func (t Throttle) String() string {
	switch t {
	case Running:
		return "running"
	case Throttled:
		return "throttled"
	default:
		return "paused"
	}
}

// Severity is how far over its thresholds a signal is.
type Severity uint8

const (
	// OverMax: over its max threshold (throttle).
	OverMax Severity = iota + 1
	// OverCritical: over its critical threshold (pause).
	OverCritical
)

// Finding is one signal over a threshold.
type Finding struct {
	Signal   Signal
	Severity Severity
	// Text says what was measured against which threshold.
	Text string
}

// Reason labels that are not signal names (see Labels).
const (
	LabelNone        = "none"
	LabelCalibrating = "calibrating"
	LabelOff         = "off"
	// LabelNoSignal: nothing could be read for UnreadLimit samples.
	LabelNoSignal = "no_signal"
)

// UnreadLimit is how many samples in a row with no signal read the last
// decision is trusted for. Past it the pacer neither runs at full speed on
// a stale picture nor stays paused for good: it lets one drop at a time
// start, each judged by its own COMMIT time (a signal the pacer always has).
const UnreadLimit = 30

// Labels lists every value of Decision.Label and State.Label, so that
// metric series can exist from the start.
func Labels() []string {
	out := []string{LabelNone, LabelCalibrating, LabelOff, LabelNoSignal}
	for _, s := range AllSignals() {
		out = append(out, s.String())
	}
	return out
}

// Decision is the pacing policy's state: what Decide reads and returns.
type Decision struct {
	Throttle Throttle
	// Limit is how many drops may run at once when not paused: 1 to
	// Config.MaxConcurrency.
	Limit int
	// Healthy counts the healthy samples since the limit last changed.
	Healthy int
	// Unread counts the samples in a row with no signal read.
	Unread int
	// Label is a short reason for metrics: LabelNone, or the name of the
	// worst signal over a threshold.
	Label string
	// Reason is a sentence for tenantctl status.
	Reason string
	// Findings are the signals over a threshold in the last sample.
	Findings []Finding
}

// Start is the decision before the first sample: one drop at a time, the
// limit grows from there.
func Start(c Config) Decision {
	d := Decision{Limit: 1}
	d.Label, d.Reason = LabelNone, describe(c, d)
	return d
}

// Decide is the whole pacing policy, a pure function of the configuration,
// the current decision and a new sample:
//
//   - a signal over a critical threshold pauses new drops, with the limit
//     at 1 for when they resume;
//   - paused, the pacer stays paused until a sample has every signal below
//     its max threshold (hysteresis), then runs one drop at a time;
//   - a signal over a max threshold halves the limit (never below 1) and
//     throttles: the limit then counts every replica's drops, and at 1
//     drops run one after another (what one drop costs the foreground is
//     about the least a cleanup can cost it);
//   - HealthySamples healthy samples in a row add one to the limit, up to
//     MaxConcurrency;
//   - a sample with no signal read changes nothing (it says nothing about
//     the load), for UnreadLimit samples in a row; then the pacer throttles
//     to one drop at a time until a signal is read again.
func Decide(c Config, cur Decision, s Sample) Decision {
	next := cur
	next.Findings = judge(c, s)
	if s.Read.Len() == 0 {
		next.Unread = cur.Unread + 1
		if next.Unread < UnreadLimit {
			next.Reason = fmt.Sprintf("no signal could be read (%d samples in a row); keeping the last decision: %s",
				next.Unread, describe(c, cur))
			return next
		}
		next.Throttle, next.Limit, next.Healthy, next.Label = Throttled, 1, 0, LabelNoSignal
		next.Reason = fmt.Sprintf("no signal could be read for %d samples in a row: one drop at a time, each judged by its COMMIT time",
			next.Unread)
		return next
	}
	next.Unread = 0
	worst := Severity(0)
	for _, f := range next.Findings {
		worst = max(worst, f.Severity)
	}
	switch {
	case worst == OverCritical, cur.Throttle == Paused && worst == OverMax:
		next.Throttle, next.Limit, next.Healthy = Paused, 1, 0
	case worst == OverMax:
		next.Throttle, next.Limit, next.Healthy = Throttled, max(1, cur.Limit/2), 0
	default:
		next.Throttle = Running
		next.Healthy = min(cur.Healthy+1, c.HealthySamples)
		if next.Healthy >= c.HealthySamples && next.Limit < c.MaxConcurrency {
			next.Limit, next.Healthy = next.Limit+1, 0
		}
	}
	next.Label = LabelNone
	if len(next.Findings) > 0 {
		next.Label = worstFinding(next.Findings).Signal.String()
	}
	next.Reason = describe(c, next)
	return next
}

// worstFinding is the first finding of the highest severity.
func worstFinding(fs []Finding) Finding {
	w := fs[0]
	for _, f := range fs[1:] {
		if f.Severity > w.Severity {
			w = f
		}
	}
	return w
}

// describe is the sentence of a decision.
func describe(c Config, d Decision) string {
	var texts []string
	for _, f := range d.Findings {
		texts = append(texts, f.Text)
	}
	why := strings.Join(texts, "; ")
	switch d.Throttle {
	case Paused:
		if len(d.Findings) == 0 {
			return "paused"
		}
		if worstFinding(d.Findings).Severity == OverCritical {
			return "paused, no new drop starts: " + why
		}
		return "paused until every signal is below its max: " + why
	case Throttled:
		return fmt.Sprintf("throttled to %d %s at once across replicas: %s", d.Limit, drops(d.Limit), why)
	}
	if d.Limit >= c.MaxConcurrency {
		return fmt.Sprintf("healthy: up to %d %s at once (PACE_MAX_CONCURRENCY)", d.Limit, drops(d.Limit))
	}
	return fmt.Sprintf("recovering: up to %d %s at once, one more after %d more healthy samples",
		d.Limit, drops(d.Limit), c.HealthySamples-d.Healthy)
}

func drops(n int) string {
	if n == 1 {
		return "drop"
	}
	return "drops"
}

// judge compares each signal read with its thresholds.
func judge(c Config, s Sample) []Finding {
	var out []Finding
	add := func(sig Signal, sev Severity, format string, args ...any) {
		out = append(out, Finding{Signal: sig, Severity: sev, Text: fmt.Sprintf(format, args...)})
	}
	if s.Read.Has(SignalProbe) && s.Baseline > 0 {
		ratio := float64(s.Probe) / float64(s.Baseline)
		slow := s.Probe-s.Baseline > c.ProbeSlack
		switch {
		case slow && ratio > c.CriticalProbeRatio:
			add(SignalProbe, OverCritical, "probe %s is %.1f× its %s baseline (critical %g×)", ms(s.Probe), ratio, ms(s.Baseline), c.CriticalProbeRatio)
		case slow && ratio > c.MaxProbeRatio:
			add(SignalProbe, OverMax, "probe %s is %.1f× its %s baseline (max %g×)", ms(s.Probe), ratio, ms(s.Baseline), c.MaxProbeRatio)
		}
	}
	over := func(sig Signal, v, maxV, critV float64, text string, unit func(float64) string) {
		switch {
		case critV > 0 && v > critV:
			add(sig, OverCritical, "%s %s (critical %s)", text, unit(v), unit(critV))
		case maxV > 0 && v > maxV:
			add(sig, OverMax, "%s %s (max %s)", text, unit(v), unit(maxV))
		}
	}
	secs := func(v float64) string { return ms(time.Duration(v * float64(time.Second))) }
	if s.Read.Has(SignalCommit) {
		over(SignalCommit, s.Commit.Seconds(), c.MaxCommitLatency.Seconds(), c.CriticalCommitLatency.Seconds(),
			"a drop's COMMIT took", secs)
	}
	if s.Read.Has(SignalReplicationLag) {
		over(SignalReplicationLag, s.ReplicationLag.Seconds(), c.MaxReplicationLag.Seconds(), c.CriticalReplicationLag.Seconds(),
			"replica replay lag", secs)
	}
	if s.Read.Has(SignalCheckpoints) && c.CheckpointPressure && s.CheckpointsRequested > 0 {
		add(SignalCheckpoints, OverMax, "%d checkpoint(s) requested since the last sample (max_wal_size reached or CHECKPOINT)", s.CheckpointsRequested)
	}
	if s.Read.Has(SignalWALRate) {
		over(SignalWALRate, s.WALRate/(1<<20), c.MaxWALRate, 0, "WAL rate", func(v float64) string { return fmt.Sprintf("%.1f MiB/s", v) })
	}
	if s.Read.Has(SignalBackendWrites) {
		over(SignalBackendWrites, s.BackendWrites, c.MaxBackendWrites, 0, "backends wrote buffers themselves:",
			func(v float64) string { return fmt.Sprintf("%.0f/s", v) })
	}
	if s.Read.Has(SignalActiveBackends) {
		over(SignalActiveBackends, float64(s.ActiveBackends), float64(c.MaxActiveBackends), float64(c.CriticalActiveBackends),
			"active sessions:", func(v float64) string { return fmt.Sprintf("%.0f", v) })
	}
	return out
}

// ms formats a latency for people: 0.42 ms, 12.3 ms, 1.52 s.
func ms(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
}
