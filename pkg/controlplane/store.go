// Package controlplane runs every SQL statement the pipeline sends to the
// control-plane database: tenant status reads, the row lock that makes the
// final look stick (lock.go), the deletion of a tenant's rows, the ledger
// (ledger.go), operators' holds (hold.go), the cleanup caps (quota.go) and
// the shape of those tables (tables.go).
// The connection may go through the SSH bastion (see Open).
package controlplane

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"github.com/tenantcleanup/tenant-cleanup/internal/pgsession"
	"github.com/tenantcleanup/tenant-cleanup/internal/sqlfile"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

//go:embed sql/*.sql
var sqlFiles embed.FS

// query returns the named statement from sql/.
var query = sqlfile.Reader(sqlFiles)

// DialFunc dials the control-plane server, e.g. through the SSH bastion.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Open connects to the control plane, naming its connections appName. With
// dial set, every connection is made through it (and host names are
// resolved at the far end, not locally).
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
	return open(ctx, cfg)
}

// sessionWaits bound every wait of the store's connections; the transaction
// of a cleanup stays open while the data-plane steps run.
var sessionWaits = pgsession.Waits{Lock: 15 * time.Second, Statement: time.Minute, IdleInTransaction: 30 * time.Minute}

func open(ctx context.Context, cfg *pgxpool.Config) (*Store, error) {
	pool, err := pgsession.Pool(ctx, cfg, sessionWaits)
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", redactErr(err))
	}
	return &Store{pool: pool}, nil
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

// New opens the store's own pool, configured like pool's (its server,
// credentials and size) but with the pipeline's session settings (see
// pgsession). Close it when done.
func New(pool *pgxpool.Pool) *Store {
	s, err := open(context.Background(), pool.Config())
	if err != nil { // pgxpool.NewWithConfig connects lazily: only a bad configuration fails
		panic(err)
	}
	return s
}

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
	// Problem says why the row cannot be judged (a NULL status or
	// created_at); such a tenant is never eligible.
	Problem string
}

// Facts returns what the eligibility rule looks at, with lastActivity from
// the data plane.
func (r Record) Facts(found bool, lastActivity time.Time) tenant.Facts {
	return tenant.Facts{InControlPlane: found, Status: r.Status, CreatedAt: r.CreatedAt,
		LastActivity: lastActivity, Problem: r.Problem}
}

// Unreadable is a control-plane row the analysis could not judge.
type Unreadable struct {
	// ID is the tenant id as stored (valid).
	ID     tenant.ID
	Reason string
}

// Tenants reads every control-plane tenant whose id is a valid tenant id;
// invalid ids are counted in skipped and otherwise ignored. A row that
// cannot be judged (a NULL status or created_at) is returned with its
// Problem set: one bad row never stops the pass.
func (s *Store) Tenants(ctx context.Context) (tenants map[tenant.ID]Record, skipped int, err error) {
	rows, err := s.pool.Query(ctx, query("tenants"))
	if err != nil {
		return nil, 0, fmt.Errorf("control plane: read tenants: %w", pgerr.Kind(err))
	}
	defer rows.Close()
	tenants = map[tenant.ID]Record{}
	for rows.Next() {
		var (
			name, status *string
			created      *time.Time
		)
		if err := rows.Scan(&name, &status, &created); err != nil {
			return nil, 0, fmt.Errorf("control plane: read tenants: %w", pgerr.Kind(err))
		}
		if name == nil {
			skipped++
			continue
		}
		id, err := tenant.ParseID(*name)
		if err != nil {
			skipped++
			continue
		}
		tenants[id] = record(id, status, created, nil)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("control plane: read tenants: %w", pgerr.Kind(err))
	}
	return tenants, skipped, nil
}

// TenantsOf reads the control-plane rows of the given tenants (as Tenants
// reads them), by tenant id; a tenant without a row is absent.
func (s *Store) TenantsOf(ctx context.Context, ids []tenant.ID) (map[tenant.ID]Record, error) {
	out := make(map[tenant.ID]Record, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = string(id)
	}
	rows, err := s.pool.Query(ctx, query("tenants")+" WHERE tenant_id = ANY($1::text[])", names)
	if err != nil {
		return nil, fmt.Errorf("control plane: read tenants: %w", pgerr.Kind(err))
	}
	var (
		name, status *string
		created      *time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &status, &created}, func() error {
		if name == nil {
			return nil
		}
		if id, err := tenant.ParseID(*name); err == nil {
			out[id] = record(id, status, created, nil)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("control plane: read tenants: %w", pgerr.Kind(err))
	}
	return out, nil
}

// CountTenants counts the control-plane tenants whose id is a valid tenant
// id (those Tenants returns), reading the ids as they arrive.
func (s *Store) CountTenants(ctx context.Context) (int, error) {
	rows, err := s.pool.Query(ctx, "SELECT tenant_id FROM public.tenant")
	if err != nil {
		return 0, fmt.Errorf("control plane: count tenants: %w", pgerr.Kind(err))
	}
	var (
		name *string
		n    int
	)
	_, err = pgx.ForEachRow(rows, []any{&name}, func() error {
		if _, err := tenant.ParseID(deref(name)); name != nil && err == nil {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("control plane: count tenants: %w", pgerr.Kind(err))
	}
	return n, nil
}

// record builds a Record from nullable columns.
func record(id tenant.ID, status *string, created *time.Time, stripe *string) Record {
	r := Record{ID: id}
	var problems []string
	if status == nil {
		problems = append(problems, "application_status is NULL")
	} else {
		r.Status = *status
	}
	if created == nil {
		problems = append(problems, "created_at is NULL")
	} else {
		r.CreatedAt = *created
	}
	if stripe != nil {
		r.StripeCustomerID = *stripe
	}
	if len(problems) > 0 {
		r.Problem = "control-plane row cannot be judged: " + strings.Join(problems, ", ")
	}
	return r
}

// Tenant reads one tenant; found is false when it has no row.
func (s *Store) Tenant(ctx context.Context, id tenant.ID) (r Record, found bool, err error) {
	r, found, err = readTenant(ctx, s.pool, id, "")
	if err != nil {
		return Record{}, false, fmt.Errorf("control plane: read tenant %s: %w", id, pgerr.Kind(err))
	}
	return r, found, nil
}

// readTenant reads one tenant row, with an optional locking clause.
func readTenant(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, id tenant.ID, lock LockMode) (Record, bool, error) {
	var (
		status, stripe *string
		created        *time.Time
	)
	err := q.QueryRow(ctx, query("tenant")+" "+string(lock), string(id)).Scan(&status, &created, &stripe)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{ID: id}, false, nil
	}
	if err != nil {
		return Record{}, false, err
	}
	return record(id, status, created, stripe), true, nil
}

// isLockTimeout reports whether err is a lock_timeout.
func isLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
