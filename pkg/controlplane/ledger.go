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
	RelationsDropped   int64
	PublicRowsDeleted  int64
	ControlRowsDeleted map[string]int64
	CleanedBy          string
	// DropStartedAt, SchemaDroppedAt and PublicRowsDeletedAt are when each
	// data-plane step happened (zero: not by this pipeline).
	DropStartedAt, SchemaDroppedAt, PublicRowsDeletedAt time.Time
	// Evidence says why a tenant whose schema was already gone was completed
	// (empty when this cleanup dropped it).
	Evidence string
	// StoresRemoved counts what was removed from the tenant's other stores,
	// by name: large_objects (the PostgreSQL file store), …
	StoresRemoved map[string]int64
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
		return nil, fmt.Errorf("control plane: read ledger: %w", pgerr.Kind(err))
	}
	return entries, nil
}

func collectLedger(rows pgx.Rows) ([]LedgerEntry, error) {
	entries, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (LedgerEntry, error) {
		var (
			e                                   LedgerEntry
			id, counts, stores                  string
			marked, lastActivity, create        *time.Time
			dropStarted, schemaDropped, pubRows *time.Time
		)
		err := r.Scan(&id, &e.CleanedAt, &e.RequestedBy, &marked, &e.DocumentsAtMarking, &e.UsersAtMarking,
			&lastActivity, &create, &e.ApplicationStatus, &e.StripeCustomerID, &e.SchemaExisted,
			&e.RelationsDropped, &e.PublicRowsDeleted, &counts, &e.CleanedBy,
			&dropStarted, &schemaDropped, &pubRows, &e.Evidence, &stores)
		if err != nil {
			return e, err
		}
		e.ID = tenant.ID(id)
		for dst, src := range map[*time.Time]*time.Time{&e.MarkedAt: marked, &e.LastActivityAt: lastActivity,
			&e.TenantCreatedAt: create, &e.DropStartedAt: dropStarted, &e.SchemaDroppedAt: schemaDropped,
			&e.PublicRowsDeletedAt: pubRows} {
			if src != nil {
				*dst = *src
			}
		}
		_ = json.Unmarshal([]byte(counts), &e.ControlRowsDeleted)
		_ = json.Unmarshal([]byte(stores), &e.StoresRemoved)
		return e, nil
	})
	if err != nil {
		return nil, fmt.Errorf("control plane: read ledger: %w", pgerr.Kind(err))
	}
	return entries, nil
}

// Cleaned reports which of ids have a ledger row (a control plane without a
// ledger table has cleaned nothing).
func (s *Store) Cleaned(ctx context.Context, ids []tenant.ID) (map[tenant.ID]bool, error) {
	out := map[tenant.ID]bool{}
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = string(id)
	}
	rows, err := s.pool.Query(ctx, "SELECT tenant_id FROM tenant_cleanup.ledger WHERE tenant_id = ANY ($1)", keys)
	if err == nil {
		var id string
		_, err = pgx.ForEachRow(rows, []any{&id}, func() error { out[tenant.ID(id)] = true; return nil })
	}
	if err != nil && !NoLedger(err) {
		return nil, fmt.Errorf("control plane: read ledger: %w", pgerr.Kind(err))
	}
	return out, nil
}
