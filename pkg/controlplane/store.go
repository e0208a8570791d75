// Package controlplane runs every SQL statement the pipeline sends to the
// control-plane database: tenant status reads, the row lock that makes the
// final eligibility check stick, the deletion of a tenant's rows and the
// ledger. The connection may go through the SSH bastion (see Open).
package controlplane

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

//go:embed sql/*.sql
var sqlFiles embed.FS

func query(name string) string {
	b, err := sqlFiles.ReadFile("sql/" + name + ".sql")
	if err != nil {
		panic(err) // a missing embedded file is a build mistake
	}
	return string(b)
}

// dependentTables reference public.tenant and are deleted first, in this
// order; public.tenant goes last.
var dependentTables = []string{"tenant_notification", "tenant_config", "subscription"}

// DialFunc dials the control-plane server, e.g. through the SSH bastion.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Open connects to the control plane, naming its connections appName. With dial set, every connection is made
// through it (and host names are resolved at the far end, not locally).
func Open(ctx context.Context, dsn, appName string, maxConns int32, dial DialFunc) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("control plane: parse connection string: %w", redactErr(err))
	}
	cfg.MaxConns = maxConns
	cfg.ConnConfig.RuntimeParams["application_name"] = appName
	cfg.ConnConfig.ConnectTimeout = 15 * time.Second
	if dial != nil {
		cfg.ConnConfig.DialFunc = pgconn.DialFunc(dial)
		cfg.ConnConfig.LookupFunc = func(_ context.Context, host string) ([]string, error) { return []string{host}, nil }
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", redactErr(err))
	}
	return New(pool), nil
}

// redactErr drops the wrapped error text of a connection-string parse error,
// which can quote the connection string (and its password).
func redactErr(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("invalid connection string (not shown: it may hold a password)")
	}
	return err
}

// Store is the control-plane database.
type Store struct {
	pool *pgxpool.Pool
}

// New wraps an open pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks the connection.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Record is one control-plane tenant.
type Record struct {
	ID               tenant.ID
	Status           string
	CreatedAt        time.Time
	StripeCustomerID string
}

// EnsureLedger creates the ledger schema and table when they are missing.
func (s *Store) EnsureLedger(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Serialise concurrent first starts of several replicas.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(2082340867)"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, query("ledger_schema"))
		return err
	})
	if err != nil {
		return fmt.Errorf("control plane: create ledger: %w", err)
	}
	return nil
}

// Tenants reads every control-plane tenant whose id is a valid tenant id;
// invalid ids are counted in skipped and otherwise ignored.
func (s *Store) Tenants(ctx context.Context) (tenants map[tenant.ID]Record, skipped int, err error) {
	rows, err := s.pool.Query(ctx, query("tenants"))
	if err != nil {
		return nil, 0, fmt.Errorf("control plane: read tenants: %w", err)
	}
	defer rows.Close()
	tenants = map[tenant.ID]Record{}
	for rows.Next() {
		var (
			name string
			r    Record
		)
		if err := rows.Scan(&name, &r.Status, &r.CreatedAt); err != nil {
			return nil, 0, fmt.Errorf("control plane: read tenants: %w", err)
		}
		if r.ID, err = tenant.ParseID(name); err != nil {
			skipped++
			continue
		}
		tenants[r.ID] = r
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("control plane: read tenants: %w", err)
	}
	return tenants, skipped, nil
}

// Tenant reads one tenant; found is false when it has no row.
func (s *Store) Tenant(ctx context.Context, id tenant.ID) (r Record, found bool, err error) {
	r, found, err = readTenant(ctx, s.pool, id, "")
	if err != nil {
		return Record{}, false, fmt.Errorf("control plane: read tenant %s: %w", id, err)
	}
	return r, found, nil
}

// readTenant reads one tenant row, with an optional locking clause.
func readTenant(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, id tenant.ID, lock LockMode) (Record, bool, error) {
	r := Record{ID: id}
	var stripe *string
	err := q.QueryRow(ctx, query("tenant")+" "+string(lock), string(id)).Scan(&r.Status, &r.CreatedAt, &stripe)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{ID: id}, false, nil
	}
	if err != nil {
		return Record{}, false, err
	}
	if stripe != nil {
		r.StripeCustomerID = *stripe
	}
	return r, true, nil
}

// LockMode says how Hold locks the tenant row.
type LockMode string

// Lock modes: Share keeps the status from changing while the marker marks;
// Update also lets the holder delete the row.
const (
	Share  LockMode = "FOR SHARE"
	Update LockMode = "FOR UPDATE"
)

// Held is a control-plane transaction holding one tenant's row locked: the
// status read through it cannot change until the transaction ends.
type Held struct {
	tx     pgx.Tx
	Record Record
	// Found is false when the tenant has no control-plane row.
	Found bool
}

// Hold opens a transaction, locks the tenant's row and reads it. The caller
// must end it with Release or, for Update, DeleteTenant. A row locked by
// someone else for longer than lockTimeout is a tenant.ErrLater error.
func (s *Store) Hold(ctx context.Context, id tenant.ID, mode LockMode, lockTimeout time.Duration) (*Held, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{
		BeginQuery: fmt.Sprintf("BEGIN; SET LOCAL lock_timeout = %d", lockTimeout.Milliseconds())})
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	r, found, err := readTenant(ctx, tx, id, mode)
	if err != nil {
		_ = tx.Rollback(ctx)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
			return nil, tenant.Later(15*time.Second, "control-plane tenant row is locked", err)
		}
		return nil, fmt.Errorf("control plane: lock tenant %s: %w", id, err)
	}
	return &Held{tx: tx, Record: r, Found: found}, nil
}

// Release ends the transaction without changes.
func (h *Held) Release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = h.tx.Rollback(ctx)
}

// LedgerEntry is one row of tenant_cleanup.ledger.
type LedgerEntry struct {
	ID                 tenant.ID
	CleanedAt          time.Time
	RequestedBy        string
	MarkedAt           time.Time
	DocumentsAtMarking int64
	UsersAtMarking     int64
	LastActivityAt     time.Time
	TenantCreatedAt    time.Time
	ApplicationStatus  string
	StripeCustomerID   string
	SchemaExisted      bool
	RelationsDropped   int
	PublicRowsDeleted  int64
	ControlRowsDeleted map[string]int64
	CleanedBy          string
}

// TableRows is the number of rows deleted from one control-plane table.
type TableRows struct {
	Table string
	Rows  int64
}

// DeleteTenant deletes the tenant's control-plane rows (dependent tables
// first, the tenant row last) and inserts its ledger row, in the held
// transaction, and commits. The entry's control-plane fields are filled from
// the held record. It returns the rows deleted per table, in deletion order.
func (h *Held) DeleteTenant(ctx context.Context, e LedgerEntry) ([]TableRows, error) {
	defer h.Release() // no-op after a commit
	// The deletes (dependent tables first, the tenant row last) and the
	// ledger row go to the server in one round trip, run in order.
	tables := append(slices.Clone(dependentTables), "tenant")
	batch := &pgx.Batch{}
	for _, table := range tables {
		batch.Queue("DELETE FROM public."+pgx.Identifier{table}.Sanitize()+" WHERE tenant_id = $1", string(h.Record.ID))
	}
	results := h.tx.SendBatch(ctx, batch)
	var deleted []TableRows
	counts := map[string]int64{}
	for _, table := range tables {
		tag, err := results.Exec()
		if err != nil {
			_ = results.Close()
			return nil, fmt.Errorf("control plane: delete %s rows of %s: %w", table, h.Record.ID, err)
		}
		deleted = append(deleted, TableRows{Table: table, Rows: tag.RowsAffected()})
		counts[table] = tag.RowsAffected()
	}
	if err := results.Close(); err != nil {
		return nil, fmt.Errorf("control plane: delete rows of %s: %w", h.Record.ID, err)
	}
	countsJSON, _ := json.Marshal(counts)
	_, err := h.tx.Exec(ctx, query("ledger_insert"), string(h.Record.ID), e.RequestedBy, nullTime(e.MarkedAt),
		e.DocumentsAtMarking, e.UsersAtMarking, nullTime(e.LastActivityAt), h.Record.CreatedAt, h.Record.Status,
		h.Record.StripeCustomerID, e.SchemaExisted, e.RelationsDropped, e.PublicRowsDeleted, string(countsJSON), e.CleanedBy)
	if err != nil {
		return nil, fmt.Errorf("control plane: write ledger row of %s: %w", h.Record.ID, err)
	}
	if err := h.tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("control plane: commit cleanup of %s: %w", h.Record.ID, err)
	}
	return deleted, nil
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// LedgerEntry reads one tenant's ledger row; found is false when it has none.
func (s *Store) LedgerEntry(ctx context.Context, id tenant.ID) (LedgerEntry, bool, error) {
	entries, err := s.readLedger(ctx, " WHERE tenant_id = $1", string(id))
	if err != nil || len(entries) == 0 {
		return LedgerEntry{}, false, err
	}
	return entries[0], true, nil
}

// Ledger reads the whole ledger, oldest cleanup first. A control plane
// without a ledger table has cleaned nothing.
func (s *Store) Ledger(ctx context.Context) ([]LedgerEntry, error) {
	return s.readLedger(ctx, " ORDER BY cleaned_at, tenant_id")
}

func (s *Store) readLedger(ctx context.Context, clause string, args ...any) ([]LedgerEntry, error) {
	rows, err := s.pool.Query(ctx, query("ledger_select")+clause, args...)
	var entries []LedgerEntry
	if err == nil {
		entries, err = collectLedger(rows)
	}
	if NoLedger(err) { // no ledger yet: nothing cleaned
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("control plane: read ledger: %w", err)
	}
	return entries, nil
}

func collectLedger(rows pgx.Rows) ([]LedgerEntry, error) {
	entries, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (LedgerEntry, error) {
		var (
			e                            LedgerEntry
			id, counts                   string
			marked, lastActivity, create *time.Time
		)
		err := r.Scan(&id, &e.CleanedAt, &e.RequestedBy, &marked, &e.DocumentsAtMarking, &e.UsersAtMarking,
			&lastActivity, &create, &e.ApplicationStatus, &e.StripeCustomerID, &e.SchemaExisted,
			&e.RelationsDropped, &e.PublicRowsDeleted, &counts, &e.CleanedBy)
		if err != nil {
			return e, err
		}
		e.ID = tenant.ID(id)
		for dst, src := range map[*time.Time]*time.Time{&e.MarkedAt: marked, &e.LastActivityAt: lastActivity, &e.TenantCreatedAt: create} {
			if src != nil {
				*dst = *src
			}
		}
		_ = json.Unmarshal([]byte(counts), &e.ControlRowsDeleted)
		return e, nil
	})
	if err != nil {
		return nil, fmt.Errorf("control plane: read ledger: %w", err)
	}
	return entries, nil
}

// Reservation is the answer of the cleanup caps.
type Reservation struct {
	// OK is true when the tenant may be cleaned now.
	OK bool
	// Cap names the cap reached ("hourly" or "daily") when not OK, and
	// FreeAt is when a place frees up.
	Cap    string
	FreeAt time.Time
	// LastHour and LastDay count the cleanups reserved in each window.
	LastHour, LastDay int64
}

// quotaLockKey serialises reservations across replicas.
const quotaLockKey = 2082340868

// Reserve claims a place for the tenant's cleanup under the hourly and daily
// caps (0 = no cap), shared by every replica: the count is the reservations
// made in the last hour and day, a crash after reserving still counts (it
// errs on the side of cleaning less), and a redelivery of the same tenant
// reuses its reservation.
func (s *Store) Reserve(ctx context.Context, id tenant.ID, perHour, perDay int) (Reservation, error) {
	var r Reservation
	if perHour <= 0 && perDay <= 0 {
		return Reservation{OK: true}, nil
	}
	begin := pgx.TxOptions{BeginQuery: fmt.Sprintf("BEGIN; SELECT pg_advisory_xact_lock(%d)", quotaLockKey)}
	err := pgx.BeginTxFunc(ctx, s.pool, begin, func(tx pgx.Tx) error {
		var freeAt *time.Time
		if err := tx.QueryRow(ctx, query("reserve"), string(id), perHour, perDay).Scan(
			&r.OK, &r.Cap, &freeAt, &r.LastHour, &r.LastDay); err != nil {
			return err
		}
		if freeAt != nil {
			r.FreeAt = *freeAt
		}
		return nil
	})
	if err != nil {
		return Reservation{}, fmt.Errorf("control plane: reserve a cleanup for %s: %w", id, err)
	}
	return r, nil
}
