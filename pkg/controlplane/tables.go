package controlplane

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"github.com/tenantcleanup/tenant-cleanup/internal/pgschema"
)

// tables are this pipeline's tables (the ledger, the cap reservations, the
// holds) and the shape of each the code relies on.
var tables = []struct {
	name string
	cols []pgschema.Column
}{
	{"tenant_cleanup.ledger", slices.Concat(
		pgschema.Columns(pgschema.Text, "tenant_id", "requested_by", "application_status", "stripe_customer_id", "cleaned_by", "evidence"),
		pgschema.Columns(pgschema.Timestamptz, "cleaned_at", "marked_at", "last_activity_at", "tenant_created_at",
			"drop_started_at", "schema_dropped_at", "public_rows_deleted_at"),
		pgschema.Columns(pgschema.Int, "documents_at_marking", "users_at_marking", "relations_dropped", "public_rows_deleted"),
		pgschema.Columns(pgschema.Bool, "schema_existed"),
		pgschema.Columns(pgschema.JSONB, "control_rows_deleted", "stores_removed"),
	)},
	{"tenant_cleanup.quota", slices.Concat(
		pgschema.Columns(pgschema.Text, "tenant_id"),
		pgschema.Columns(pgschema.Timestamptz, "reserved_at"),
	)},
	{"tenant_cleanup.hold", slices.Concat(
		pgschema.Columns(pgschema.Text, "tenant_id", "reason", "placed_by"),
		pgschema.Columns(pgschema.Timestamptz, "until", "placed_at"),
	)},
}

// lockKeySchema serialises concurrent first starts of several replicas.
const lockKeySchema = 2082340867

// Ensure creates this pipeline's tables (the ledger, the cap reservations,
// the holds) when they are missing, adds the ledger columns newer versions
// write, and checks their shape: a table someone created differently (a
// ledger without a unique tenant_id, say) is an error naming the problem.
func (s *Store) Ensure(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := createTables(ctx, tx, "schema"); err != nil {
			return err
		}
		for _, t := range tables {
			if err := pgschema.Verify(ctx, tx, t.name, "tenant_id", t.cols); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("control plane: prepare this pipeline's tables: %w", pgerr.Kind(err))
	}
	return nil
}

// createTables runs the named statement, which creates tables of
// tenant_cleanup when they are missing, under the schema lock; then it checks
// who owns the schema and revokes the access of others (see pgschema).
func createTables(ctx context.Context, tx pgx.Tx, statement string) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKeySchema); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, query(statement)); err != nil {
		return err
	}
	if err := pgschema.CheckOwned(ctx, tx, "tenant_cleanup"); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, pgschema.RevokeSQL("tenant_cleanup"))
	return err
}
