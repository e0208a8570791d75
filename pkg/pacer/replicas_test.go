package pacer

import "testing"

// admits reports whether the pacer would start a drop now.
func (f fixture) admits() bool {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	return f.p.admit()
}

// Throttled, "the limit counts every replica's drops the last sample saw"
// (docs/pacing.md), "so that N throttled replicas do not run N drops between
// them" (apply). A replica's pacer slot is held for the whole cleanup
// (pipeline.Cleaner.clean: from before the control-plane reservation to
// after the public rows), while the sample counts drop transactions (their
// drop-slot advisory locks): a replica whose drop is not in its drop
// transaction at the sample (waiting for a drop slot, preparing the control
// plane, removing S3 files) subtracts its own slot from another replica's
// drop, and both count that one drop as their own.
//
// Two replicas A and B, throttled at 2, one drop each: A's waits for a drop
// slot, B's holds one. Both samples (taken after both drops started) see one
// drop in flight. Even a pacer that cannot see A's drop yet must count B's
// drop for A (A then has 2 against its limit of 2): at most 3 drops at once
// (B may start one more, not seeing A's). Yet both replicas take the one
// drop the sample saw for their own, and each starts a second: 4 drops at a
// throttled limit of 2, and with N replicas 2N.
//
// The sample tells each replica's own drop transactions from the others'
// (SamplerOptions.OwnApplicationName): A's says none of the drop is its own.
func TestThrottledReplicasDoNotCountAnotherReplicasDropAsTheirOwn(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.HealthySamples = 1
	a, b := setup(t, cfg, true), setup(t, cfg, true)
	for _, f := range []fixture{a, b} {
		for range 3 {
			f.sample(idle(1))
		}
	}
	// One drop each, started while running: A's is not in its drop
	// transaction yet (waiting for a drop slot), B's is.
	releaseA, releaseB := a.acquire(t), b.acquire(t)
	defer releaseA(Outcome{})
	defer releaseB(Outcome{})
	for f, own := range map[fixture]int{a: 0, b: 1} {
		over := idle(3)
		over.DropsInFlight, over.OwnDrops = 1, own // B's drop transaction: the only one in the database
		if st := f.sample(over); st.Throttle != Throttled || st.Limit != 2 {
			t.Fatalf("over max: %+v", st)
		}
	}
	started := 0
	for name, f := range map[string]fixture{"A": a, "B": b} {
		if f.admits() {
			started++
			defer f.acquire(t)(Outcome{})
			t.Logf("replica %s starts a second drop (its own in flight: 1, the sample saw 1)", name)
		}
	}
	if total := 2 + started; total > 2+1 {
		t.Fatalf("%d drops at once across two replicas throttled to 2 (the sample saw 1 drop in flight, each replica has 1): "+
			"each replica counted the other's drop as its own", total)
	}
}
