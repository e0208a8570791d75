package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// SweepEntry is one row of tenant_cleanup.sweep_log: what one sweep removed
// of one cleaned tenant from the stores outside PostgreSQL.
type SweepEntry struct {
	ID      tenant.ID
	SweptAt time.Time
	SweptBy string
	// Source is "ledger" (the tenant has a ledger row) or "csv" (it is only
	// in a cleaned_tenants.csv of the original scripts).
	Source string
	// Removed counts what was removed, by name: s3_objects, s3_bytes,
	// redis_keys, redis_memberships, large_objects.
	Removed map[string]int64
	// Complete: every configured store was left holding nothing of it.
	Complete bool
	// Error is why it is not complete ("" when it is).
	Error string
}

// EnsureSweepLog creates tenant_cleanup.sweep_log when it is missing, with
// the same ownership checks as Ensure.
func (s *Store) EnsureSweepLog(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return createTables(ctx, tx, "sweep_schema") })
	if err != nil {
		return fmt.Errorf("control plane: prepare tenant_cleanup.sweep_log: %w", pgerr.Kind(err))
	}
	return nil
}

// LogSweep appends e to the sweep log (EnsureSweepLog first).
func (s *Store) LogSweep(ctx context.Context, e SweepEntry) error {
	removed, err := json.Marshal(e.Removed)
	if err != nil {
		return err
	}
	var errText *string
	if e.Error != "" {
		errText = &e.Error
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO tenant_cleanup.sweep_log (tenant_id, swept_by, source, removed, complete, error)
		VALUES ($1, $2, $3, $4, $5, $6)`, string(e.ID), e.SweptBy, e.Source, string(removed), e.Complete, errText)
	if err != nil {
		return fmt.Errorf("control plane: log the sweep of %s: %w", e.ID, pgerr.Kind(err))
	}
	return nil
}

// SweepLog reads the sweep log of one tenant, oldest first (empty when
// nothing was ever swept).
func (s *Store) SweepLog(ctx context.Context, id tenant.ID) ([]SweepEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT tenant_id, swept_at, swept_by, source, removed::text, complete, coalesce(error, '')
		FROM tenant_cleanup.sweep_log WHERE tenant_id = $1 ORDER BY sweep_id`, string(id))
	var entries []SweepEntry
	if err == nil {
		entries, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (SweepEntry, error) {
			var (
				e          SweepEntry
				id, remove string
			)
			err := r.Scan(&id, &e.SweptAt, &e.SweptBy, &e.Source, &remove, &e.Complete, &e.Error)
			e.ID = tenant.ID(id)
			_ = json.Unmarshal([]byte(remove), &e.Removed)
			return e, err
		})
	}
	if NoLedger(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("control plane: read the sweep log of %s: %w", id, pgerr.Kind(err))
	}
	return entries, nil
}

// HasTenants reports whether the control plane has any tenant row: a sweep
// against one without any would take every tenant for gone.
func (s *Store) HasTenants(ctx context.Context) (bool, error) {
	var ok bool
	if err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM public.tenant)").Scan(&ok); err != nil {
		return false, fmt.Errorf("control plane: look for tenants: %w", pgerr.Kind(err))
	}
	return ok, nil
}
