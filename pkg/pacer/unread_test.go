package pacer

import (
	"testing"
)

// unreadable is the sample of a sampler that cannot connect to the data
// plane: the server refuses new connections because it is saturated.
func unreadable() Sample {
	return Sample{DropsInFlight: -1, Unread: map[Signal]string{
		SignalProbe: "connect: FATAL: sorry, too many clients already (SQLSTATE 53300)"}}
}

// A sampler that cannot reach the data plane (here: the server is out of
// connections, a sign of overload) is trusted UnreadLimit samples; then the
// pacer no longer runs at its last limit but one drop at a time.
func TestNoSignalForLongThrottlesARunningPacer(t *testing.T) {
	t.Parallel()
	f := setup(t, testConfig(), true)
	for range 12 { // healthy: the limit grows to 4
		f.sample(idle(1))
	}
	if st := f.p.State(); st.Limit != 4 {
		t.Fatalf("limit %d after healthy samples", st.Limit)
	}
	for range 600 { // ten minutes at PACE_INTERVAL=1s of nothing read
		f.sample(unreadable())
	}
	if st := f.p.State(); st.Throttle != Throttled || st.Limit != 1 || st.Label != LabelNoSignal {
		t.Fatalf("after 600 samples where nothing could be read: %s with %d drops at once (%s); want throttled to one", st.Throttle, st.Limit, st.Label)
	}
}

// The other side: paused when the sampler loses its connection, the pacer
// does not stay paused for good: past UnreadLimit samples one drop at a
// time starts, judged by its COMMIT time.
func TestNoSignalForLongEndsAPause(t *testing.T) {
	t.Parallel()
	f := setup(t, testConfig(), true)
	f.sample(idle(20)) // critical: paused
	if st := f.p.State(); st.Throttle != Paused {
		t.Fatalf("not paused: %+v", st)
	}
	for range 3600 { // an hour of nothing read
		f.sample(unreadable())
	}
	if st := f.p.State(); st.Throttle == Paused {
		t.Fatalf("still paused after an hour without any sample (reason %d bytes)", len(st.Reason))
	}
}

// A pacer whose calibration never reads a probe starts throttled to one
// drop at a time (each judged by its COMMIT time), not at full speed.
func TestNoBaselineStartsThrottled(t *testing.T) {
	t.Parallel()
	f := setup(t, testConfig(), false)
	f.src.set(unreadable())
	for range calibrationPatience + calibrationSamples {
		f.p.step(f.ctx)
	}
	st := f.p.State()
	if st.Calibrating || st.Throttle != Throttled || st.Limit != 1 || st.Label != LabelNoSignal {
		t.Fatalf("after calibrating without a probe: %+v; want throttled to one drop (%s)", st, LabelNoSignal)
	}
}

// The reason of a pacer that reads nothing stays short, however long that
// lasts (it goes into pace reports, events and logs).
func TestNoSignalReasonStaysShort(t *testing.T) {
	t.Parallel()
	f := setup(t, testConfig(), true)
	for range 100 {
		f.sample(unreadable())
	}
	if n := len(f.p.State().Reason); n > 1000 {
		t.Fatalf("after 100 unreadable samples the pacer's reason is %d bytes long (≈ %d bytes a sample, unbounded)", n, n/100)
	}
}
