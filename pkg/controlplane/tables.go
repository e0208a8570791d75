package controlplane

import (
	"context"
	"fmt"

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
	{"tenant_cleanup.ledger", []pgschema.Column{
		{Name: "tenant_id", Types: pgschema.Text},
		{Name: "cleaned_at", Types: pgschema.Timestamptz},
		{Name: "requested_by", Types: pgschema.Text},
		{Name: "marked_at", Types: pgschema.Timestamptz},
		{Name: "documents_at_marking", Types: pgschema.Int},
		{Name: "users_at_marking", Types: pgschema.Int},
		{Name: "last_activity_at", Types: pgschema.Timestamptz},
		{Name: "tenant_created_at", Types: pgschema.Timestamptz},
		{Name: "application_status", Types: pgschema.Text},
		{Name: "stripe_customer_id", Types: pgschema.Text},
		{Name: "schema_existed", Types: pgschema.Bool},
		{Name: "relations_dropped", Types: pgschema.Int},
		{Name: "public_rows_deleted", Types: pgschema.Int},
		{Name: "control_rows_deleted", Types: pgschema.JSONB},
		{Name: "stores_removed", Types: pgschema.JSONB},
		{Name: "cleaned_by", Types: pgschema.Text},
		{Name: "drop_started_at", Types: pgschema.Timestamptz},
		{Name: "schema_dropped_at", Types: pgschema.Timestamptz},
		{Name: "public_rows_deleted_at", Types: pgschema.Timestamptz},
		{Name: "evidence", Types: pgschema.Text},
	}},
	{"tenant_cleanup.quota", []pgschema.Column{
		{Name: "tenant_id", Types: pgschema.Text},
		{Name: "reserved_at", Types: pgschema.Timestamptz},
	}},
	{"tenant_cleanup.hold", []pgschema.Column{
		{Name: "tenant_id", Types: pgschema.Text},
		{Name: "reason", Types: pgschema.Text},
		{Name: "until", Types: pgschema.Timestamptz},
		{Name: "placed_by", Types: pgschema.Text},
		{Name: "placed_at", Types: pgschema.Timestamptz},
	}},
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
