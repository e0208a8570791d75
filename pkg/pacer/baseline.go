package pacer

import (
	"math"
	"slices"
	"time"
)

// calibrationSamples is how many idle samples' probes make the first
// baseline: ten seconds by default, so that it is not the picture of a
// busy moment.
const calibrationSamples = 10

// probeBaseline is what the probe takes while no drop runs. It is learned
// before the first drop as the median of the first idle samples' probes
// (each the mean of PACE_PROBES probes), then follows the probes of idle
// samples only, by a multiplicative step towards each: a streaming median,
// so an outlier moves it no more than an ordinary probe, and its speed is
// bounded (at most ×2 or ÷2 per PACE_BASELINE_ADAPT). A busy hour of the
// foreground therefore raises it little, and drops never raise it.
type probeBaseline struct {
	// Value is the baseline; 0 until learned.
	Value   time.Duration
	pending []time.Duration
}

// Learned reports whether the first baseline is known.
func (b *probeBaseline) Learned() bool { return b.Value > 0 }

// Learn takes the probe of an idle sample; interval and adapt are
// PACE_INTERVAL and PACE_BASELINE_ADAPT.
func (b *probeBaseline) Learn(probe, interval, adapt time.Duration) {
	if probe <= 0 {
		return
	}
	if !b.Learned() {
		b.pending = append(b.pending, probe)
		if len(b.pending) >= calibrationSamples {
			b.Value = median(b.pending)
			b.pending = nil
		}
		return
	}
	step := math.Exp(math.Ln2 * float64(interval) / float64(adapt))
	switch {
	case probe > b.Value:
		b.Value = min(time.Duration(float64(b.Value)*step), probe)
	case probe < b.Value:
		b.Value = max(time.Duration(float64(b.Value)/step), probe)
	}
	b.Value = max(b.Value, time.Microsecond)
}

// median of ds (not empty); ds is not changed.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
