// Package dataplane runs every SQL statement the pipeline sends to the data
// plane: the catalog scan and activity reads of the analyzer, and for one
// tenant at a time (under a per-tenant advisory lock) the inspection, the
// marking, the drain check, the outside-dependency check, the batched schema
// drop and the deletion of its public rows. Schema names only ever come from a
// tenant.ID and are always quoted with pgx.Identifier.
package dataplane

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"hash/fnv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgsession"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

//go:embed sql/*.sql
var sqlFiles embed.FS

// query returns the named statement from sql/, with {{schema}} replaced by the
// quoted schema name of id when id is not empty.
func query(name string, id tenant.ID) string {
	b, err := sqlFiles.ReadFile("sql/" + name + ".sql")
	if err != nil {
		panic(err) // a missing embedded file is a build mistake
	}
	q := string(b)
	if id != "" {
		q = strings.ReplaceAll(q, "{{schema}}", schema(id))
	}
	return q
}

// schema is the quoted, injection-proof schema name of a tenant.
func schema(id tenant.ID) string { return pgx.Identifier{string(id)}.Sanitize() }

// Advisory lock keys (first key of the two-int form) owned by this package.
const (
	lockKeyTenant   = 0x7c1e0001  // (key, hash(tenant id)): one worker at a time per tenant
	lockKeyDropSlot = DropLockKey // (key, slot): bounds concurrent drop transactions
	// lockKeySchema (record.go) serialises the creation of this pipeline's tables.
)

// DropLockKey is the first key of the advisory locks (key, slot) every drop
// transaction holds, of every replica: the pacer counts them in pg_locks.
const DropLockKey = 0x7c1e0002

// ErrBusy means another worker holds the tenant's lock.
var ErrBusy = errors.New("another worker is processing this tenant")

// Options tune a Store.
type Options struct {
	// LockTimeout is the lock_timeout of DDL and marking statements: a lock
	// held by live traffic makes them give up (and retry later) instead of
	// queueing in front of that traffic. Default 2s.
	LockTimeout time.Duration
	// DropSlots bounds how many drop transactions run at once across all
	// replicas sharing the database; together with the lock budget it keeps
	// concurrent drops from exhausting the shared lock table. Default 2.
	DropSlots int
	// SlotWait bounds the wait for a drop slot. Default 30s.
	SlotWait time.Duration
	// LockBudget is the number of locks one drop transaction may take.
	// Default: dropLockShare of the shared lock table divided by DropSlots,
	// so that all drops together leave the rest of it to live traffic.
	LockBudget int
	// Shard names the shard this database is, in a sharded fleet (errors
	// and refusals name it; "" in a one-shard setup).
	Shard string
	// NotCatalog is true for a shard that does not hold the public tables
	// (ONYX_DB_CATALOG_SHARD names another): nothing on it reads or deletes
	// public rows; a drop there leaves the tenant's public rows to the
	// catalog's store (DeletePublicRows). The zero value is the catalog.
	NotCatalog bool
}

// dropLockShare is the share of the shared lock table
// (max_locks_per_transaction × (max_connections + max_prepared_transactions)
// entries) that all drop transactions together may hold: 4/5 leaves a fifth
// of the nominal table, plus PostgreSQL's shared-memory slack, to live
// traffic, whose relation locks mostly take the per-backend fast path and
// never reach the table. With the default two drop slots a real Onyx tenant
// (143 tables, about 2,600 locks) is then dropped in one transaction even on
// a max_connections = 100 server (6,400 entries); a bigger schema is dropped
// in batches.
var dropLockShare = struct{ num, den int }{4, 5}

// Store is the data-plane database.
type Store struct {
	pool *pgxpool.Pool
	opts Options
	// guarded is true when the sql_drop event trigger is in force (Ensure).
	guarded bool
	// afterDropTx, when set (by tests), runs after each committed drop
	// transaction; an error stops the drop there, as a crash would.
	afterDropTx func(n int) error
	// beforeDrop, when set (by tests), runs in each drop transaction after
	// its checks, right before its DROP: what it does from another session
	// happens between the look and the drop.
	beforeDrop func() error
}

// sessionWaits bound every wait of the store's connections; steps that need
// other bounds (the DDL's lock_timeout, the drop slot wait) set them locally.
var sessionWaits = pgsession.Waits{Lock: 5 * time.Second, Statement: 5 * time.Minute, IdleInTransaction: 10 * time.Minute}

// New opens a store like Open, configured like pool (its server,
// credentials and size).
func New(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Store, error) {
	return Open(ctx, pool.Config(), opts)
}

// Open opens the store's own pool as cfg says, with the pipeline's session
// settings (see pgsession). It reads the server's lock table size to derive
// the default lock budget. Close it when done.
func Open(ctx context.Context, cfg *pgxpool.Config, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if opts.DropSlots <= 0 {
		opts.DropSlots = 2
	}
	if opts.SlotWait <= 0 {
		opts.SlotWait = 30 * time.Second
	}
	pool, err := pgsession.Pool(ctx, cfg, sessionWaits)
	if err != nil {
		return nil, fmt.Errorf("data plane: %w", pgerr.Kind(err))
	}
	if opts.LockBudget <= 0 {
		var capacity int
		err := pool.QueryRow(ctx, `SELECT current_setting('max_locks_per_transaction')::int
			* (current_setting('max_connections')::int + current_setting('max_prepared_transactions')::int)`).Scan(&capacity)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("data plane: read lock table size: %w", pgerr.Kind(err))
		}
		opts.LockBudget = max(capacity*dropLockShare.num/dropLockShare.den/opts.DropSlots, 200)
	}
	return &Store{pool: pool, opts: opts}, nil
}

// MaxConns is the most connections the store opens at once.
func (s *Store) MaxConns() int { return int(s.pool.Config().MaxConns) }

// Shard is the name of the shard this store is ("" when not set).
func (s *Store) Shard() string { return s.opts.Shard }

// Catalog reports whether this store holds the public tables.
func (s *Store) Catalog() bool { return !s.opts.NotCatalog }

// LockBudget is the number of locks one drop transaction may take on this
// database (its own max_locks_per_transaction and max_connections).
func (s *Store) LockBudget() int { return s.opts.LockBudget }

// catalogQuery is catalog.sql for this database: with the tenant's
// public.tenant_shard row on the catalog, NULL elsewhere.
func (s *Store) catalogQuery() string {
	placement := "(SELECT shard_name FROM public.tenant_shard WHERE tenant_id = $1)"
	if s.opts.NotCatalog {
		placement = "NULL::text"
	}
	return strings.ReplaceAll(query("catalog", ""), "{{placement}}", placement)
}

// schemaQuery is catalog.sql without the placement (liveSchema).
func schemaQuery() string {
	return strings.ReplaceAll(query("catalog", ""), "{{placement}}", "NULL::text")
}

// Close closes the store's pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks the connection.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Lock takes the tenant's advisory lock on a connection of its own and
// returns a handle for the work on that tenant; ErrBusy when another worker
// (of any replica) has it. The lock lives as long as the session: Release
// it, and a crash releases it with the connection.
func (s *Store) Lock(ctx context.Context, id tenant.ID) (*TenantSession, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("data plane: %w", pgerr.Kind(err))
	}
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", lockKeyTenant, lockKey(id)).Scan(&got); err != nil {
		conn.Release()
		return nil, fmt.Errorf("data plane: lock %s: %w", id, pgerr.Kind(err))
	}
	if !got {
		conn.Release()
		return nil, ErrBusy
	}
	return &TenantSession{id: id, conn: conn, store: s}, nil
}

func lockKey(id tenant.ID) int32 {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int32(h.Sum32())
}

// TenantSession is this worker's session on one tenant (Store.Lock): a
// connection holding the tenant's advisory lock, on which every method runs.
type TenantSession struct {
	id       tenant.ID
	conn     *pgxpool.Conn
	store    *Store
	released bool
	// committed, during a Drop, receives each drop transaction's COMMIT
	// duration (DropChecks.Committed).
	committed func(time.Duration)
}

// Release unlocks the tenant and returns the connection. If the unlock cannot
// be confirmed the connection is closed, which releases the lock. Releasing
// twice is harmless; the TenantSession is unusable afterwards.
func (t *TenantSession) Release() {
	if t.released {
		return
	}
	t.released = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := t.conn.Exec(ctx, "SELECT pg_advisory_unlock($1, $2)", lockKeyTenant, lockKey(t.id)); err != nil {
		_ = t.conn.Conn().Close(ctx)
	}
	t.conn.Release()
}

// isGone reports whether err says the schema or one of its tables vanished
// (dropped concurrently, or by an earlier, interrupted cleanup).
func isGone(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "3F000" || pgErr.Code == "42P01")
}

// isLockTimeout reports whether err is a lock_timeout (or NOWAIT) failure.
func isLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}

// isStatementTimeout reports whether err is a statement_timeout.
func isStatementTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57014"
}

// ID is the locked tenant.
func (t *TenantSession) ID() tenant.ID { return t.id }
