package dataplane

import (
	"context"
	"fmt"
	"strings"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
)

// PublicTables are the shared public tables holding a tenant's rows, in the
// order tenantctl verify reports them.
var PublicTables = []string{
	"user_tenant_mapping",
	"user_tenant_mapping_oauth_account",
	"tenant_shard",
	"tenant_anonymous_user_path",
	"tenant_invite_counter",
	"tenant_sso_domain",
}

// Inventory is what the data plane holds of every tenant, read in bulk for
// tenantctl verify. Tenant ids are kept as stored, valid or not: the caller
// validates them, and they are never used to build a statement.
type Inventory struct {
	// Schemas maps every schema named like a tenant (tenant_…) to whether
	// it is partly dropped under that name by an earlier version of this
	// tool (see Snapshot.Problem).
	Schemas map[string]bool
	// SchemaOIDs maps the same schemas to their oid.
	SchemaOIDs map[string]int64
	// Quarantines are the schemas named QuarantinePrefix…: drops under way,
	// or left by one whose record is lost.
	Quarantines map[string]bool
	// Records maps a tenant id to this pipeline's record of it.
	Records map[string]Record
	// PublicRows maps a tenant id to its row count per table of PublicTables
	// (tables without rows are absent).
	PublicRows map[string]map[string]int64
	// Shards maps a tenant id to the shard its public.tenant_shard row names.
	Shards map[string]string
}

// Inventory reads the tenant schemas and, with one grouped scan per table,
// the tenants' rows in the shared public tables.
func (s *Store) Inventory(ctx context.Context) (*Inventory, error) {
	inv := &Inventory{Schemas: map[string]bool{}, Quarantines: map[string]bool{}, SchemaOIDs: map[string]int64{}, Records: map[string]Record{},
		PublicRows: map[string]map[string]int64{}, Shards: map[string]string{}}
	recs, err := s.Records(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		inv.Records[r.ID] = r.Record
	}
	rows, err := s.pool.Query(ctx, query("verify_schemas", ""))
	if err != nil {
		return nil, fmt.Errorf("data plane: list tenant schemas: %w", pgerr.Kind(err))
	}
	for rows.Next() {
		var (
			name string
			oid  int64
		)
		if err := rows.Scan(&name, &oid); err != nil {
			rows.Close()
			return nil, fmt.Errorf("data plane: list tenant schemas: %w", pgerr.Kind(err))
		}
		if strings.HasPrefix(name, QuarantinePrefix) {
			inv.Quarantines[name] = true
			continue
		}
		inv.Schemas[name] = inv.Records[name].legacyUnderway()
		inv.SchemaOIDs[name] = oid
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("data plane: list tenant schemas: %w", pgerr.Kind(err))
	}

	if s.opts.NotCatalog { // the public tables are the catalog's
		return inv, nil
	}
	rows, err = s.pool.Query(ctx, query("verify_public_rows", ""))
	if err != nil {
		return nil, fmt.Errorf("data plane: count public rows: %w", pgerr.Kind(err))
	}
	defer rows.Close()
	for rows.Next() {
		var (
			table, id string
			n         int64
			shard     *string
		)
		if err := rows.Scan(&table, &id, &n, &shard); err != nil {
			return nil, fmt.Errorf("data plane: count public rows: %w", pgerr.Kind(err))
		}
		if inv.PublicRows[id] == nil {
			inv.PublicRows[id] = map[string]int64{}
		}
		inv.PublicRows[id][table] += n
		if shard != nil {
			inv.Shards[id] = *shard
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("data plane: count public rows: %w", pgerr.Kind(err))
	}
	return inv, nil
}
