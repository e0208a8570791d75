package pacer

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// testConfig is the default configuration with a ceiling of 4 and 3
// healthy samples per increase, so that every rule shows.
func testConfig() Config {
	c := DefaultConfig()
	c.MaxConcurrency = 4
	c.HealthySamples = 3
	return c
}

const baseline = 2 * time.Millisecond

// probe is a sample with the probe alone, at ratio × the baseline.
func probe(ratio float64) Sample {
	return Sample{Read: SetOf(SignalProbe), Probe: time.Duration(ratio * float64(baseline)), Baseline: baseline}
}

// with adds signals to a sample.
func with(s Sample, f func(*Sample), sigs ...Signal) Sample {
	for _, sig := range sigs {
		s.Read.Add(sig)
	}
	f(&s)
	return s
}

func TestDecide(t *testing.T) {
	t.Parallel()
	running := func(limit, healthy int) Decision { return Decision{Throttle: Running, Limit: limit, Healthy: healthy} }
	cfg := testConfig()
	for _, tc := range []struct {
		name    string
		cfg     func(*Config)
		cur     Decision
		sample  Sample
		want    Throttle
		limit   int
		healthy int
		label   string
		reason  string // a part of the reason
	}{
		{name: "over max halves the limit and throttles", cur: running(4, 2), sample: probe(2.5),
			want: Throttled, limit: 2, label: "probe", reason: "probe 5.00 ms is 2.5× its 2.00 ms baseline (max 2×)"},
		{name: "halving rounds down", cur: running(3, 0), sample: probe(3), want: Throttled, limit: 1, label: "probe"},
		{name: "over max never goes below 1", cur: Decision{Throttle: Throttled, Limit: 1}, sample: probe(4.9),
			want: Throttled, limit: 1, label: "probe", reason: "throttled to 1 drop at once across replicas"},
		{name: "over critical pauses", cur: running(4, 2), sample: probe(6),
			want: Paused, limit: 1, label: "probe", reason: "paused, no new drop starts: probe 12.0 ms is 6.0× its 2.00 ms baseline (critical 5×)"},
		{name: "paused stays paused above max (hysteresis)", cur: Decision{Throttle: Paused, Limit: 1}, sample: probe(3),
			want: Paused, limit: 1, label: "probe", reason: "paused until every signal is below its max"},
		{name: "paused resumes below max, one at a time", cur: Decision{Throttle: Paused, Limit: 1}, sample: probe(1.5),
			want: Running, limit: 1, healthy: 1, label: LabelNone, reason: "recovering: up to 1 drop at once, one more after 2 more healthy samples"},
		{name: "throttled recovers without growing at once", cur: Decision{Throttle: Throttled, Limit: 2}, sample: probe(1),
			want: Running, limit: 2, healthy: 1, label: LabelNone},
		{name: "healthy counts", cur: running(1, 0), sample: probe(1), want: Running, limit: 1, healthy: 1, label: LabelNone},
		{name: "healthy samples in a row add one", cur: running(1, 2), sample: probe(1), want: Running, limit: 2, healthy: 0, label: LabelNone},
		{name: "never above the maximum", cur: running(4, 2), sample: probe(1),
			want: Running, limit: 4, healthy: 3, label: LabelNone, reason: "healthy: up to 4 drops at once"},
		{name: "a slowdown within the slack is noise", cur: running(2, 0),
			sample: Sample{Read: SetOf(SignalProbe), Probe: 90 * time.Microsecond, Baseline: 10 * time.Microsecond},
			want:   Running, limit: 2, healthy: 1, label: LabelNone},
		{name: "no baseline, the probe is not judged", cur: running(2, 0),
			sample: Sample{Read: SetOf(SignalProbe), Probe: time.Second}, want: Running, limit: 2, healthy: 1, label: LabelNone},
		{name: "nothing read changes nothing", cur: Decision{Throttle: Throttled, Limit: 2, Healthy: 0, Label: "probe", Reason: "throttled"},
			sample: Sample{Probe: time.Hour, Baseline: baseline, Unread: map[Signal]string{SignalProbe: "connect: refused"}},
			want:   Throttled, limit: 2, label: "probe", reason: "keeping the last decision: throttled"},
		{name: "a signal not read is ignored", cur: running(2, 0),
			sample: Sample{Read: SetOf(SignalProbe), Probe: baseline, Baseline: baseline, ReplicationLag: time.Hour, CheckpointsRequested: 9},
			want:   Running, limit: 2, healthy: 1, label: LabelNone},
		{name: "commit latency over max", cur: running(2, 0),
			sample: with(probe(1), func(s *Sample) { s.Commit = 3 * time.Second }, SignalCommit),
			want:   Throttled, limit: 1, label: "commit_latency", reason: "a drop's COMMIT took 3.00 s (max 2.00 s)"},
		{name: "commit latency over critical", cur: running(2, 0),
			sample: with(probe(1), func(s *Sample) { s.Commit = 11 * time.Second }, SignalCommit),
			want:   Paused, limit: 1, label: "commit_latency"},
		{name: "replication lag over max", cur: running(4, 0),
			sample: with(probe(1), func(s *Sample) { s.Replicas, s.ReplicationLag = 1, 6*time.Second }, SignalReplicationLag),
			want:   Throttled, limit: 2, label: "replication_lag", reason: "replica replay lag 6.00 s (max 5.00 s)"},
		{name: "replication lag over critical", cur: running(4, 0),
			sample: with(probe(1), func(s *Sample) { s.Replicas, s.ReplicationLag = 1, time.Minute }, SignalReplicationLag),
			want:   Paused, limit: 1, label: "replication_lag"},
		{name: "a requested checkpoint throttles", cur: running(2, 0),
			sample: with(probe(1), func(s *Sample) { s.CheckpointsRequested = 1 }, SignalCheckpoints),
			want:   Throttled, limit: 1, label: "checkpoints", reason: "1 checkpoint(s) requested"},
		{name: "checkpoint pressure off", cfg: func(c *Config) { c.CheckpointPressure = false }, cur: running(2, 0),
			sample: with(probe(1), func(s *Sample) { s.CheckpointsRequested = 1 }, SignalCheckpoints),
			want:   Running, limit: 2, healthy: 1, label: LabelNone},
		{name: "WAL rate is not judged by default", cur: running(2, 0),
			sample: with(probe(1), func(s *Sample) { s.WALRate = 1 << 30 }, SignalWALRate),
			want:   Running, limit: 2, healthy: 1, label: LabelNone},
		{name: "WAL rate over its max", cfg: func(c *Config) { c.MaxWALRate = 64 }, cur: running(2, 0),
			sample: with(probe(1), func(s *Sample) { s.WALRate = 100 << 20 }, SignalWALRate),
			want:   Throttled, limit: 1, label: "wal_rate", reason: "WAL rate 100.0 MiB/s (max 64.0 MiB/s)"},
		{name: "backend writes over their max", cfg: func(c *Config) { c.MaxBackendWrites = 1000 }, cur: running(2, 0),
			sample: with(probe(1), func(s *Sample) { s.BackendWrites = 5000 }, SignalBackendWrites),
			want:   Throttled, limit: 1, label: "backend_writes"},
		{name: "active sessions over max", cfg: func(c *Config) { c.MaxActiveBackends, c.CriticalActiveBackends = 16, 32 }, cur: running(4, 0),
			sample: with(probe(1), func(s *Sample) { s.ActiveBackends = 20 }, SignalActiveBackends),
			want:   Throttled, limit: 2, label: "active_backends", reason: "active sessions: 20 (max 16)"},
		{name: "active sessions over critical", cfg: func(c *Config) { c.MaxActiveBackends, c.CriticalActiveBackends = 16, 32 }, cur: running(4, 0),
			sample: with(probe(1), func(s *Sample) { s.ActiveBackends = 40 }, SignalActiveBackends),
			want:   Paused, limit: 1, label: "active_backends"},
		{name: "the worst signal names the reason, every one is told", cur: running(4, 0),
			sample: with(probe(3), func(s *Sample) { s.Replicas, s.ReplicationLag = 2, time.Minute }, SignalReplicationLag),
			want:   Paused, limit: 1, label: "replication_lag", reason: "probe 6.00 ms is 3.0× its 2.00 ms baseline (max 2×); replica replay lag 60.00 s (critical 30.00 s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := cfg
			if tc.cfg != nil {
				tc.cfg(&c)
			}
			got := Decide(c, tc.cur, tc.sample)
			if got.Throttle != tc.want || got.Limit != tc.limit || got.Healthy != tc.healthy || got.Label != tc.label {
				t.Fatalf("got %s limit %d healthy %d label %q, want %s limit %d healthy %d label %q (reason %q)",
					got.Throttle, got.Limit, got.Healthy, got.Label, tc.want, tc.limit, tc.healthy, tc.label, got.Reason)
			}
			if !strings.Contains(got.Reason, tc.reason) {
				t.Fatalf("reason %q does not say %q", got.Reason, tc.reason)
			}
		})
	}
}

// TestDecideInvariants drives Decide with random samples: the limit stays
// within 1..MaxConcurrency, a pause comes only from a critical signal or
// continues one, and the limit only grows from a healthy sample.
func TestDecideInvariants(t *testing.T) {
	t.Parallel()
	c := testConfig()
	r := rand.New(rand.NewPCG(17, 17))
	d := Start(c)
	for i := range 10000 {
		s := probe([]float64{0.5, 1, 1.9, 2.5, 4, 6, 20}[r.IntN(7)])
		if r.IntN(10) == 0 {
			s.Read = 0
		}
		next := Decide(c, d, s)
		critical := s.Read.Len() > 0 && float64(s.Probe) > c.CriticalProbeRatio*float64(s.Baseline)
		overMax := s.Read.Len() > 0 && float64(s.Probe) > c.MaxProbeRatio*float64(s.Baseline)
		switch {
		case next.Limit < 1 || next.Limit > c.MaxConcurrency:
			t.Fatalf("step %d: limit %d out of 1..%d", i, next.Limit, c.MaxConcurrency)
		case next.Throttle == Paused && !critical && d.Throttle != Paused:
			t.Fatalf("step %d: paused without a critical signal: %+v after %+v", i, next, d)
		case next.Limit > d.Limit && overMax:
			t.Fatalf("step %d: limit grew on an unhealthy sample", i)
		case next.Throttle == Running && d.Throttle == Paused && overMax:
			t.Fatalf("step %d: resumed above max", i)
		}
		d = next
	}
}
