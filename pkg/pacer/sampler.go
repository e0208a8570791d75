package pacer

import (
	"context"
	"embed"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgsession"
	"github.com/tenantcleanup/tenant-cleanup/internal/sqlfile"
)

//go:embed sql/*.sql
var sqlFiles embed.FS

// query returns the named statement from sql/.
var query = sqlfile.Reader(sqlFiles)

// ApplicationName is the application_name of the sampler's connection.
const ApplicationName = "tenant-cleanup-pacer"

// needMonitor is why a signal that needs pg_monitor was not read.
const needMonitor = "needs pg_monitor (pg_read_all_stats) to see "

// SamplerOptions tune a Sampler.
type SamplerOptions struct {
	// DropLockKey is the first key of the advisory locks (key, slot) that
	// drop transactions hold (pkg/dataplane's drop slots). When set, the
	// sampler counts the drops of every replica in flight, and the probe's
	// baseline learns only while there are none.
	DropLockKey int32
	// OwnApplicationName is the application_name of this replica's
	// data-plane sessions (unique per replica): the drops they hold are its
	// own, the others another replica's. Empty: unknown.
	OwnApplicationName string
}

// Sampler reads the data plane's health through one connection of its own
// (application_name tenant-cleanup-pacer). What it reads, and who may:
//
//   - the probe (PACE_PROBES times, the mean counts) and the WAL position
//     (pg_current_wal_lsn): any role;
//   - checkpoints requested and backend writes (pg_stat_bgwriter, or
//     pg_stat_checkpointer from PostgreSQL 17): any role;
//   - drops in flight (pg_locks), when SamplerOptions.DropLockKey is set:
//     any role;
//   - the replicas' replay lag (pg_stat_replication) and the active
//     sessions of every role (pg_stat_activity): pg_monitor
//     (pg_read_all_stats); without it they are reported unread and ignored.
type Sampler struct {
	pool *pgxpool.Pool
	own  bool
	cfg  Config
	opts SamplerOptions

	mu      sync.Mutex
	version int // server_version_num; 0 until read
	prev    counters
}

// counters are the cumulative readings rates are computed from.
type counters struct {
	at                    time.Time
	wal                   float64
	checkpoints, bWrites  int64
	haveWAL, haveCheckpts bool
	haveWrites            bool
}

// OpenSampler opens a sampler with a pool of its own: one connection to
// the server of base (copied), with the pipeline's session settings. It
// connects on the first sample.
func OpenSampler(ctx context.Context, base *pgxpool.Config, cfg Config, opts SamplerOptions) (*Sampler, error) {
	pc := base.Copy()
	pc.MaxConns, pc.MinConns = 1, 0
	pc.ConnConfig.RuntimeParams["application_name"] = ApplicationName
	pool, err := pgsession.Pool(ctx, pc, pgsession.Waits{Lock: time.Second, Statement: 30 * time.Second, IdleInTransaction: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("pacer: open sampler: %w", err)
	}
	s := NewSampler(pool, cfg, opts)
	s.own = true
	return s, nil
}

// NewSampler returns a sampler reading through pool (better one of its own:
// a probe that waits for a connection measures the pool, not the server).
func NewSampler(pool *pgxpool.Pool, cfg Config, opts SamplerOptions) *Sampler {
	return &Sampler{pool: pool, cfg: cfg, opts: opts}
}

// Close closes the sampler's pool, if it opened it.
func (s *Sampler) Close() {
	if s.own {
		s.pool.Close()
	}
}

// Sample reads every signal it can; see Sampler.
func (s *Sampler) Sample(ctx context.Context) Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Sample{At: time.Now(), DropsInFlight: -1, OwnDrops: -1, Unread: map[Signal]string{}}
	s.probes(ctx, &out)
	now := time.Now()
	elapsed := now.Sub(s.prev.at).Seconds()
	next := counters{at: now}
	s.readWAL(ctx, &out, &next, elapsed)
	s.readCheckpoints(ctx, &out, &next, elapsed)
	s.prev = next
	s.readReplication(ctx, &out)
	s.readActivity(ctx, &out)
	if s.opts.DropLockKey != 0 {
		if err := s.pool.QueryRow(ctx, query("drops"), s.opts.DropLockKey, s.opts.OwnApplicationName).Scan(
			&out.DropsInFlight, &out.OwnDrops); err != nil {
			out.DropsInFlight = -1
		}
		if s.opts.OwnApplicationName == "" || out.DropsInFlight < 0 {
			out.OwnDrops = -1
		}
	}
	return out
}

// probes runs the probes back to back on one connection and keeps their
// mean. A probe that takes longer than its timeout counts as that slow; one
// that fails otherwise is left out.
func (s *Sampler) probes(ctx context.Context, out *Sample) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		out.Unread[SignalProbe] = "connect: " + err.Error()
		return
	}
	defer conn.Release()
	timeout := max(s.cfg.Interval, time.Second)
	var sum time.Duration
	var n int
	var lastErr error
	for range s.cfg.Probes {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		start := time.Now()
		_, err := conn.Exec(pctx, query("probe"))
		took := time.Since(start)
		timedOut := pctx.Err() != nil
		cancel()
		switch {
		case err == nil, timedOut && ctx.Err() == nil:
			sum += took
			n++
		case ctx.Err() != nil:
			return
		default:
			lastErr = err
		}
		if conn.Conn().IsClosed() {
			break
		}
	}
	if n == 0 {
		if lastErr != nil {
			out.Unread[SignalProbe] = lastErr.Error()
		}
		return
	}
	out.Probe = sum / time.Duration(n)
	out.Read.Add(SignalProbe)
}

// readWAL reads the WAL position and, with a previous one, the rate.
func (s *Sampler) readWAL(ctx context.Context, out *Sample, next *counters, elapsed float64) {
	if err := s.pool.QueryRow(ctx, query("wal")).Scan(&next.wal); err != nil {
		out.Unread[SignalWALRate] = err.Error()
		return
	}
	next.haveWAL = true
	if s.prev.haveWAL && elapsed > 0 && next.wal >= s.prev.wal {
		out.WALRate = (next.wal - s.prev.wal) / elapsed
		out.Read.Add(SignalWALRate)
	}
}

// readCheckpoints reads the checkpoint counters and, with previous ones,
// the checkpoints requested since and the backend write rate.
func (s *Sampler) readCheckpoints(ctx context.Context, out *Sample, next *counters, elapsed float64) {
	if s.version == 0 {
		if err := s.pool.QueryRow(ctx, "SELECT pg_catalog.current_setting('server_version_num')::int").Scan(&s.version); err != nil {
			out.Unread[SignalCheckpoints] = err.Error()
			return
		}
	}
	if s.version >= 170000 {
		out.Unread[SignalBackendWrites] = "PostgreSQL 17 moved backend writes to pg_stat_io"
		if err := s.pool.QueryRow(ctx, query("checkpointer")).Scan(&next.checkpoints); err != nil {
			out.Unread[SignalCheckpoints] = err.Error()
			return
		}
	} else {
		if err := s.pool.QueryRow(ctx, query("bgwriter")).Scan(&next.checkpoints, &next.bWrites); err != nil {
			out.Unread[SignalCheckpoints] = err.Error()
			out.Unread[SignalBackendWrites] = err.Error()
			return
		}
		next.haveWrites = true
	}
	next.haveCheckpts = true
	if s.prev.haveCheckpts && next.checkpoints >= s.prev.checkpoints {
		out.CheckpointsRequested = next.checkpoints - s.prev.checkpoints
		out.Read.Add(SignalCheckpoints)
	}
	if s.prev.haveWrites && next.haveWrites && elapsed > 0 && next.bWrites >= s.prev.bWrites {
		out.BackendWrites = float64(next.bWrites-s.prev.bWrites) / elapsed
		out.Read.Add(SignalBackendWrites)
	}
}

// readReplication reads the physical replicas' replay lag.
func (s *Sampler) readReplication(ctx context.Context, out *Sample) {
	var replicas, visible int
	var lag float64
	if err := s.pool.QueryRow(ctx, query("replication")).Scan(&replicas, &visible, &lag); err != nil {
		out.Unread[SignalReplicationLag] = err.Error()
		return
	}
	out.Replicas = replicas
	switch {
	case replicas == 0: // nothing to judge
	case visible < replicas:
		out.Unread[SignalReplicationLag] = needMonitor + "the replicas' lag"
	default:
		out.ReplicationLag = time.Duration(lag * float64(time.Second))
		out.Read.Add(SignalReplicationLag)
	}
}

// readActivity counts the other sessions running a statement.
func (s *Sampler) readActivity(ctx context.Context, out *Sample) {
	var active, hidden int
	if err := s.pool.QueryRow(ctx, query("activity")).Scan(&active, &hidden); err != nil {
		out.Unread[SignalActiveBackends] = err.Error()
		return
	}
	if hidden > 0 {
		out.Unread[SignalActiveBackends] = needMonitor + "other roles' sessions"
		return
	}
	out.ActiveBackends = active
	out.Read.Add(SignalActiveBackends)
}
