package pacer

import (
	"testing"
	"time"
)

func TestBaselineCalibratesOnTheMedian(t *testing.T) {
	t.Parallel()
	var b probeBaseline
	// Mostly 3-4ms, with outliers of a busy moment.
	probes := make([]time.Duration, calibrationSamples)
	for i := range probes {
		probes[i] = []time.Duration{3 * time.Millisecond, 50 * time.Millisecond, 4 * time.Millisecond}[i%3]
	}
	for i, p := range probes[:calibrationSamples-1] {
		b.Learn(p, time.Second, time.Minute)
		if b.Learned() {
			t.Fatalf("learned after %d samples", i+1)
		}
	}
	b.Learn(probes[calibrationSamples-1], time.Second, time.Minute)
	if b.Value < 3*time.Millisecond || b.Value > 4*time.Millisecond {
		t.Fatalf("baseline %s, want the median, 3-4ms (outliers ignored)", b.Value)
	}
}

func TestBaselineAdaptsSlowly(t *testing.T) {
	t.Parallel()
	calibrated := func() probeBaseline {
		var b probeBaseline
		for range calibrationSamples {
			b.Learn(10*time.Millisecond, time.Second, time.Minute)
		}
		return b
	}
	b := calibrated()
	// Every idle probe far above: it doubles in PACE_BASELINE_ADAPT, no faster.
	for range 30 {
		b.Learn(time.Second, time.Second, time.Minute)
	}
	if b.Value < 14*time.Millisecond || b.Value > 15*time.Millisecond {
		t.Fatalf("after half of PACE_BASELINE_ADAPT above: %s, want about 14.1ms (×√2)", b.Value)
	}
	for range 30 {
		b.Learn(time.Second, time.Second, time.Minute)
	}
	if b.Value < 19*time.Millisecond || b.Value > 21*time.Millisecond {
		t.Fatalf("after PACE_BASELINE_ADAPT above: %s, want about 20ms (×2)", b.Value)
	}
	// A probe just above or below is reached, never overshot.
	b = calibrated()
	b.Learn(10*time.Millisecond+time.Microsecond, time.Second, time.Second)
	if b.Value != 10*time.Millisecond+time.Microsecond {
		t.Fatalf("baseline %s overshot the probe", b.Value)
	}
	// It tracks the median: as many probes above as below leave it in place.
	b = calibrated()
	for range 1000 {
		b.Learn(5*time.Millisecond, time.Second, time.Minute)
		b.Learn(time.Second, time.Second, time.Minute)
	}
	if b.Value < 9*time.Millisecond || b.Value > 11*time.Millisecond {
		t.Fatalf("baseline %s drifted with outliers on both sides", b.Value)
	}
}
