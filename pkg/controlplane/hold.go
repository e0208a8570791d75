package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Hold reads a tenant's hold, active or expired.
func (s *Store) Hold(ctx context.Context, id tenant.ID) (tenant.Hold, bool, error) {
	h, found, err := readHold(ctx, s.pool, id)
	if err != nil {
		return tenant.Hold{}, false, fmt.Errorf("control plane: read the hold of %s: %w", id, pgerr.Kind(err))
	}
	return h, found, nil
}

// ActiveHold returns the tenant's hold if one is in force at now. This read
// takes no lock: the final look reads the hold again under the tenant's row
// lock (LockTenant).
func (s *Store) ActiveHold(ctx context.Context, id tenant.ID, now time.Time) (tenant.Hold, bool, error) {
	h, found, err := s.Hold(ctx, id)
	if err != nil || !found || !h.Active(now) {
		return tenant.Hold{}, false, err
	}
	return h, true, nil
}

// Holds lists every hold, active or expired, by tenant.
func (s *Store) Holds(ctx context.Context) ([]tenant.Hold, error) {
	rows, err := s.pool.Query(ctx, query("hold_select")+" ORDER BY tenant_id")
	if err != nil {
		if NoLedger(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("control plane: read holds: %w", pgerr.Kind(err))
	}
	holds, err := pgx.CollectRows(rows, scanHold)
	if err != nil {
		return nil, fmt.Errorf("control plane: read holds: %w", pgerr.Kind(err))
	}
	return holds, nil
}

// PlaceHold places (or replaces) a hold. It first share-locks the tenant's
// row, so it waits for a marking or cleanup of the tenant under way: a hold
// and a cleanup never overlap, and a hold placed after a cleanup committed
// finds the tenant gone (inControl false). previous is the hold it replaced.
func (s *Store) PlaceHold(ctx context.Context, h tenant.Hold, lockTimeout time.Duration) (previous *tenant.Hold, inControl bool, err error) {
	begin := pgx.TxOptions{BeginQuery: fmt.Sprintf("BEGIN; SET LOCAL lock_timeout = %d", lockTimeout.Milliseconds())}
	err = pgx.BeginTxFunc(ctx, s.pool, begin, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, "SELECT true FROM public.tenant WHERE tenant_id = $1 FOR SHARE", string(h.ID)).Scan(&inControl)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		old, found, err := readHold(ctx, tx, h.ID)
		if err != nil {
			return err
		}
		if found {
			previous = &old
		}
		_, err = tx.Exec(ctx, query("hold_place"), string(h.ID), h.Reason, nullTime(ptrTime(h.Until)), h.By)
		return err
	})
	if isLockTimeout(err) {
		return nil, false, fmt.Errorf("control plane: the tenant's row stayed locked for %s (a marking or cleanup of it is "+
			"under way?): run tenantctl status %s, then try again", lockTimeout, h.ID)
	}
	if err != nil {
		return nil, false, fmt.Errorf("control plane: hold %s: %w", h.ID, pgerr.Kind(err))
	}
	return previous, inControl, nil
}

// RemoveHold lifts a tenant's hold and returns it; removed is false when it
// had none.
func (s *Store) RemoveHold(ctx context.Context, id tenant.ID) (h tenant.Hold, removed bool, err error) {
	rows, err := s.pool.Query(ctx, "DELETE FROM tenant_cleanup.hold WHERE tenant_id = $1 RETURNING tenant_id, reason, until, placed_by, placed_at", string(id))
	if err == nil {
		var holds []tenant.Hold
		holds, err = pgx.CollectRows(rows, scanHold)
		if len(holds) > 0 {
			return holds[0], true, nil
		}
	}
	if err != nil && !NoLedger(err) {
		return tenant.Hold{}, false, fmt.Errorf("control plane: unhold %s: %w", id, pgerr.Kind(err))
	}
	return tenant.Hold{}, false, nil
}

func readHold(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, id tenant.ID) (tenant.Hold, bool, error) {
	rows, err := q.Query(ctx, query("hold_select")+" WHERE tenant_id = $1", string(id))
	if err != nil {
		return tenant.Hold{}, false, err
	}
	holds, err := pgx.CollectRows(rows, scanHold)
	if err != nil || len(holds) == 0 {
		return tenant.Hold{}, false, err
	}
	return holds[0], true, nil
}

func scanHold(r pgx.CollectableRow) (tenant.Hold, error) {
	var (
		h     tenant.Hold
		id    string
		until *time.Time
	)
	err := r.Scan(&id, &h.Reason, &until, &h.By, &h.At)
	h.ID, h.Until = tenant.ID(id), until
	return h, err
}

func ptrTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}
