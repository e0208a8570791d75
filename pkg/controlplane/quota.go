package controlplane

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

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
		return Reservation{}, fmt.Errorf("control plane: reserve a cleanup for %s: %w", id, pgerr.Kind(err))
	}
	return r, nil
}
