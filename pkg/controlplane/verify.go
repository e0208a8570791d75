package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
)

// ControlTables are the control-plane tables holding a tenant's rows, in the
// order tenantctl verify reports them (the reverse of the deletion order).
var ControlTables = []string{"tenant", "subscription", "tenant_config", "tenant_notification"}

// Inventory is what the control plane holds of every tenant, read in bulk for
// tenantctl verify. Tenant ids are kept as stored, valid or not: the caller
// validates them, and they are never used to build a statement.
type Inventory struct {
	// Rows maps a tenant id to its row count per table of ControlTables
	// (tables without rows are absent).
	Rows map[string]map[string]int64
	// Status maps a tenant id to the application_status of its tenant row.
	Status map[string]string
	// Ledger maps every tenant id in the ledger to its cleaned_at; empty
	// when the ledger table does not exist yet.
	Ledger map[string]time.Time
}

// Inventory reads, with one grouped scan of the tables, every tenant's rows in
// the control-plane tables, then the ledger.
func (s *Store) Inventory(ctx context.Context) (*Inventory, error) {
	inv := &Inventory{Rows: map[string]map[string]int64{}, Status: map[string]string{}, Ledger: map[string]time.Time{}}
	rows, err := s.pool.Query(ctx, query("verify_control_rows"))
	if err != nil {
		return nil, fmt.Errorf("control plane: count tenant rows: %w", pgerr.Kind(err))
	}
	for rows.Next() {
		var (
			table, id string
			n         int64
			status    *string
		)
		if err := rows.Scan(&table, &id, &n, &status); err != nil {
			rows.Close()
			return nil, fmt.Errorf("control plane: count tenant rows: %w", pgerr.Kind(err))
		}
		if inv.Rows[id] == nil {
			inv.Rows[id] = map[string]int64{}
		}
		inv.Rows[id][table] += n
		if status != nil {
			inv.Status[id] = *status
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("control plane: count tenant rows: %w", pgerr.Kind(err))
	}

	rows, err = s.pool.Query(ctx, query("verify_ledger"))
	if err == nil {
		defer rows.Close()
		for rows.Next() {
			var (
				id string
				at time.Time
			)
			if err = rows.Scan(&id, &at); err != nil {
				break
			}
			inv.Ledger[id] = at
		}
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil && !NoLedger(err) {
		return nil, fmt.Errorf("control plane: read ledger: %w", pgerr.Kind(err))
	}
	return inv, nil
}

// LedgerStats counts the ledger's tenants and returns the latest cleanup
// (zero when none); a ledger table that does not exist yet is empty.
func (s *Store) LedgerStats(ctx context.Context) (tenants int64, last time.Time, err error) {
	var latest *time.Time
	err = s.pool.QueryRow(ctx, query("ledger_stats")).Scan(&tenants, &latest)
	if NoLedger(err) {
		return 0, time.Time{}, nil
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("control plane: read ledger: %w", pgerr.Kind(err))
	}
	if latest != nil {
		last = *latest
	}
	return tenants, last, nil
}

// NoLedger reports whether err says the ledger table does not exist (nothing
// was ever cleaned with this control plane).
func NoLedger(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42P01"
}
