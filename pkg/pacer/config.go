package pacer

import (
	"errors"
	"fmt"
	"time"
)

// Modes of PACE.
const (
	// ModeAuto paces drops by the data plane's health (the default).
	ModeAuto = "auto"
	// ModeOff runs drops at full speed and reads nothing: for an off-peak
	// window, or a server nobody else uses.
	ModeOff = "off"
)

// Config is the pacing of one cleaner replica, read from the environment by
// pkg/config (embed it; the tags follow that package's conventions). The
// defaults come from what issue 17 measured on the development machine: the
// foreground's p99 was 1.18 × with one drop at a time, 2.5 × with two, 8 ×
// with the pipeline's four workers and two drop slots. A zero threshold
// turns its signal's judgement off (the signal is still read and shown).
type Config struct {
	// Mode is auto or off.
	Mode string `envconfig:"PACE" default:"auto" desc:"auto: drops wait while the data plane is loaded; off: full speed (off-peak), nothing is read"`
	// Interval is the time between samples. One second is about one drop
	// (0.3-1 s for 143 tables), so every drop is seen; a sample costs the
	// server about a millisecond (the probes and four statistics reads).
	Interval time.Duration `envconfig:"PACE_INTERVAL" default:"1s" range:"100ms..1m" desc:"time between samples of the data plane's health"`
	// MaxConcurrency is the most drops this replica runs at once when all is
	// healthy. Two: one drop at a time cost the foreground 1.18 × p99 and
	// two 2.5 ×; more cannot run anyway under the default DROP_CONCURRENCY
	// of 2 slots across replicas. The limit starts at 1.
	MaxConcurrency int `envconfig:"PACE_MAX_CONCURRENCY" default:"2" range:"1..64" desc:"drops at once by one replica when healthy (the limit starts at 1)"`
	// HealthySamples is how many healthy samples in a row add one to the
	// limit. Five (seconds): increases are slow and decreases immediate, so
	// the limit settles below the load the server can take (AIMD).
	HealthySamples int `envconfig:"PACE_HEALTHY_SAMPLES" default:"5" range:"1..1000" desc:"healthy samples in a row before the limit grows by one"`

	// Probes is the number of probes per sample, back to back; their mean
	// counts. The mean, not the median: what drops do to customers shows
	// in the tail first (their p99), and a probe slowed now and then moves
	// the mean but not the median (see docs/pacing.md).
	Probes int `envconfig:"PACE_PROBES" default:"5" range:"1..50" desc:"probe queries per sample (their mean counts)"`
	// MaxProbeRatio throttles when the probe is this many times slower than
	// its baseline: 2 × sits between the 1.18 × one drop at a time cost the
	// foreground's p99 and the 2.5 × of two.
	MaxProbeRatio float64 `envconfig:"PACE_MAX_PROBE_RATIO" default:"2" range:"1.1..1000" desc:"probe latency over its idle baseline that halves the limit"`
	// CriticalProbeRatio pauses drops: 5 × is well short of the 8 × that
	// made issue 17.
	CriticalProbeRatio float64 `envconfig:"PACE_CRITICAL_PROBE_RATIO" default:"5" range:"1.1..1000" desc:"probe latency over its idle baseline that pauses drops until below the max ratio"`
	// ProbeSlack is the least slowdown that counts whatever the ratio, for
	// a baseline of a few tens of microseconds (a local socket): 0.1 ms
	// more per round trip is well under 1 % of a 6-12 ms p99 even for a
	// transaction of ten statements.
	ProbeSlack time.Duration `envconfig:"PACE_PROBE_SLACK" default:"100us" range:"0s..1s" desc:"a probe must also be this much slower than its baseline to count as slow"`
	// BaselineAdapt is how fast the baseline follows the probe while this
	// replica drops nothing: it can at most double (or halve) in this time.
	// Thirty minutes follow a lasting change (traffic growth, a resized
	// instance) within the hour, while a burst of minutes barely moves it.
	BaselineAdapt time.Duration `envconfig:"PACE_BASELINE_ADAPT" default:"30m" range:"1m..168h" desc:"time the probe's baseline takes at least to double or halve (re-learned only while idle)"`

	// MaxCommitLatency throttles when a drop's COMMIT (as the caller
	// measured it) took longer. A 143-table drop commits in 0.2-0.7 s on
	// the development machine; 2 s means the server's I/O is struggling.
	MaxCommitLatency time.Duration `envconfig:"PACE_MAX_COMMIT_LATENCY" default:"2s" range:"0s..1h" desc:"drop COMMIT latency that halves the limit (0: not judged)"`
	// CriticalCommitLatency pauses drops.
	CriticalCommitLatency time.Duration `envconfig:"PACE_CRITICAL_COMMIT_LATENCY" default:"10s" range:"0s..1h" desc:"drop COMMIT latency that pauses drops (0: not judged)"`
	// MaxReplicationLag throttles when a physical replica's replay lags more:
	// a drop replays in well under a second, so 5 s means the replica is
	// already behind and readers of it see stale data.
	MaxReplicationLag time.Duration `envconfig:"PACE_MAX_REPLICATION_LAG" default:"5s" range:"0s..24h" desc:"replay lag of a physical replica that halves the limit (0: not judged; needs pg_monitor)"`
	// CriticalReplicationLag pauses drops.
	CriticalReplicationLag time.Duration `envconfig:"PACE_CRITICAL_REPLICATION_LAG" default:"30s" range:"0s..24h" desc:"replay lag that pauses drops (0: not judged)"`
	// CheckpointPressure throttles when a checkpoint was requested since
	// the previous sample (WAL reached max_wal_size, or a CHECKPOINT
	// command): the server is then writing and fsyncing at full speed, and
	// every drop adds file unlinks and more WAL to it.
	CheckpointPressure bool `envconfig:"PACE_CHECKPOINT_PRESSURE" default:"true" desc:"a requested checkpoint (max_wal_size reached) halves the limit"`
	// MaxWALRate throttles above this WAL rate, in MiB/s. Off by default: a
	// 143-table drop writes about 1 MiB, little next to a busy foreground,
	// and WAL hurts through checkpoints and replicas, both judged already.
	// Set it to a replica link's or an archive's budget.
	MaxWALRate float64 `envconfig:"PACE_MAX_WAL_RATE" default:"0" range:"0..100000" unit:"MiB/s" desc:"WAL rate that halves the limit (0: not judged)"`
	// MaxBackendWrites throttles when backends write this many buffers per
	// second themselves (the background writer and checkpointer fall
	// behind). Off by default: its normal level depends on shared_buffers
	// and the workload (relation extension counts too).
	MaxBackendWrites float64 `envconfig:"PACE_MAX_BACKEND_WRITES" default:"0" range:"0..10000000" unit:"buffers/s" desc:"buffers written by backends per second that halve the limit (0: not judged)"`
	// MaxActiveBackends throttles with more sessions running a statement
	// (gh-ost's --max-load on Threads_running). Off by default: the right
	// value is about twice the server's vCPUs, which SQL cannot read, and
	// the probe already feels a saturated CPU.
	MaxActiveBackends int `envconfig:"PACE_MAX_ACTIVE_BACKENDS" default:"0" range:"0..100000" desc:"active sessions that halve the limit (0: not judged; needs pg_monitor)"`
	// CriticalActiveBackends pauses drops (gh-ost's --critical-load).
	CriticalActiveBackends int `envconfig:"PACE_CRITICAL_ACTIVE_BACKENDS" default:"0" range:"0..100000" desc:"active sessions that pause drops (0: not judged)"`
}

// DefaultConfig is Config with every default of its tags.
func DefaultConfig() Config {
	return Config{
		Mode:                   ModeAuto,
		Interval:               time.Second,
		MaxConcurrency:         2,
		HealthySamples:         5,
		Probes:                 5,
		MaxProbeRatio:          2,
		CriticalProbeRatio:     5,
		ProbeSlack:             100 * time.Microsecond,
		BaselineAdapt:          30 * time.Minute,
		MaxCommitLatency:       2 * time.Second,
		CriticalCommitLatency:  10 * time.Second,
		MaxReplicationLag:      5 * time.Second,
		CriticalReplicationLag: 30 * time.Second,
		CheckpointPressure:     true,
	}
}

// Validate checks what the range tags cannot: the words, and every critical
// threshold above its max (a pause that nothing could end otherwise comes
// before the throttle). pkg/config checks the ranges.
func (c *Config) Validate() error {
	var errs []error
	if c.Mode != ModeAuto && c.Mode != ModeOff {
		errs = append(errs, fmt.Errorf("PACE must be %s or %s, got %q", ModeAuto, ModeOff, c.Mode))
	}
	if c.Interval <= 0 || c.MaxConcurrency < 1 || c.HealthySamples < 1 || c.Probes < 1 || c.BaselineAdapt <= 0 {
		errs = append(errs, errors.New("PACE_INTERVAL, PACE_MAX_CONCURRENCY, PACE_HEALTHY_SAMPLES, PACE_PROBES and PACE_BASELINE_ADAPT must be positive"))
	}
	if c.MaxProbeRatio <= 1 || c.CriticalProbeRatio <= c.MaxProbeRatio {
		errs = append(errs, fmt.Errorf("need 1 < PACE_MAX_PROBE_RATIO (%g) < PACE_CRITICAL_PROBE_RATIO (%g)", c.MaxProbeRatio, c.CriticalProbeRatio))
	}
	for _, p := range []struct {
		max, critical int64
		names         string
	}{
		{int64(c.MaxCommitLatency), int64(c.CriticalCommitLatency), "PACE_MAX_COMMIT_LATENCY below PACE_CRITICAL_COMMIT_LATENCY"},
		{int64(c.MaxReplicationLag), int64(c.CriticalReplicationLag), "PACE_MAX_REPLICATION_LAG below PACE_CRITICAL_REPLICATION_LAG"},
		{int64(c.MaxActiveBackends), int64(c.CriticalActiveBackends), "PACE_MAX_ACTIVE_BACKENDS below PACE_CRITICAL_ACTIVE_BACKENDS"},
	} {
		if p.max > 0 && p.critical > 0 && p.critical <= p.max {
			errs = append(errs, fmt.Errorf("need %s when both are set", p.names))
		}
	}
	return errors.Join(errs...)
}
