package pacer

import (
	"context"
	"math/bits"
	"time"
)

// Signal names one measure of the data plane's health.
type Signal uint8

// The signals, in the order they are judged and named in reasons.
const (
	// SignalProbe is the probe's latency against its idle baseline.
	SignalProbe Signal = iota
	// SignalCommit is the COMMIT latency of this replica's drops, as the
	// caller measured and reported it.
	SignalCommit
	// SignalReplicationLag is the largest replay lag of a physical replica.
	SignalReplicationLag
	// SignalCheckpoints counts checkpoints requested since the previous sample.
	SignalCheckpoints
	// SignalWALRate is the WAL generation rate.
	SignalWALRate
	// SignalBackendWrites is the rate of buffers written by backends themselves.
	SignalBackendWrites
	// SignalActiveBackends counts client sessions running a statement.
	SignalActiveBackends
	numSignals
)

var signalNames = [numSignals]string{
	SignalProbe:          "probe",
	SignalCommit:         "commit_latency",
	SignalReplicationLag: "replication_lag",
	SignalCheckpoints:    "checkpoints",
	SignalWALRate:        "wal_rate",
	SignalBackendWrites:  "backend_writes",
	SignalActiveBackends: "active_backends",
}

// String is the signal's name, also its reason label.
func (s Signal) String() string {
	if s < numSignals {
		return signalNames[s]
	}
	return "unknown"
}

// AllSignals lists every signal, in order.
func AllSignals() []Signal {
	out := make([]Signal, numSignals)
	for i := range out {
		out[i] = Signal(i)
	}
	return out
}

// Set is a set of signals.
type Set uint16

// SetOf returns the set of sigs.
func SetOf(sigs ...Signal) Set {
	var s Set
	for _, sig := range sigs {
		s.Add(sig)
	}
	return s
}

// Add puts sig in the set.
func (s *Set) Add(sig Signal) { *s |= 1 << sig }

// Has reports whether sig is in the set.
func (s Set) Has(sig Signal) bool { return s&(1<<sig) != 0 }

// Len is the number of signals in the set.
func (s Set) Len() int { return bits.OnesCount16(uint16(s)) }

// Sample is one reading of the data plane's health. Only the signals in
// Read were measured; the others are ignored by the decision (a signal
// that cannot be read is never fatal). Unread says why a signal is missing
// when that is worth telling an operator (a privilege, an error); a signal
// with nothing to measure (no replica, no drop committed, the first
// sample of a rate) is just absent.
type Sample struct {
	// At is when the sample was taken.
	At time.Time
	// Read is the set of signals measured.
	Read Set
	// Unread says, for some signals not read, why.
	Unread map[Signal]string

	// Probe is the mean latency of the sample's probes.
	Probe time.Duration
	// Baseline is the probe's idle baseline (0: not learned yet); the
	// pacer fills it in.
	Baseline time.Duration
	// Commit is the longest drop COMMIT reported since the previous
	// sample; the pacer fills it in.
	Commit time.Duration
	// Replicas is the number of physical replicas streaming, and
	// ReplicationLag the largest replay lag among them.
	Replicas       int
	ReplicationLag time.Duration
	// CheckpointsRequested counts checkpoints requested since the
	// previous sample.
	CheckpointsRequested int64
	// WALRate is the WAL written per second since the previous sample, in bytes.
	WALRate float64
	// BackendWrites is the buffers written per second by backends
	// themselves since the previous sample.
	BackendWrites float64
	// ActiveBackends counts other client sessions running a statement.
	ActiveBackends int
	// DropsInFlight counts the drop transactions running on the server, of
	// every replica (-1: unknown; see SamplerOptions.DropLockKey).
	DropsInFlight int
	// OwnDrops counts those of this replica (its sessions' application_name
	// is SamplerOptions.OwnApplicationName); -1: unknown, when the pacer
	// takes its own drops in flight for them.
	OwnDrops int
}

// Source takes samples; *Sampler reads them from PostgreSQL, tests use a
// fake. Sample is called by one goroutine at a time and never fails: what
// cannot be read is left out of the sample.
type Source interface {
	Sample(ctx context.Context) Sample
}
