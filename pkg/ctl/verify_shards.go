package ctl

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// shardCheck is what verify finds across the shards of a sharded fleet
// (ONYX_DB_SHARDS): every shard's tenant schemas against the catalog's
// placements (public.tenant_shard; no row: the default shard).
type shardCheck struct {
	// names are the configured shards, the catalog first.
	names []string
	// schemas counts the tenant schemas per shard.
	schemas map[string]int
	// strays are tenant schemas on a shard their tenant is not placed on:
	// nothing references them there (a move under way, or left behind).
	strays []shardFinding
	// placedNoSchema are placements (tenant_shard rows) naming a configured
	// shard that holds no schema of the tenant, while the tenant still has
	// a schema on another shard (a tenant with no schema anywhere is a
	// half-done cleanup or an orphan, listed above).
	placedNoSchema []shardFinding
	// lostDrops are quarantine schemas on the other shards that no record
	// there claims (shardFinding.id is the schema's name).
	lostDrops []shardFinding
}

// shardFinding is a tenant, the shard at issue and its placement.
type shardFinding struct {
	id               string
	shard, placement string
}

// What verify says of each kind of shard finding, in every output: the
// title of its list, its category (-o csv) and the next step.
const (
	strayTitle     = "Schemas on a shard nothing places them on (stray copies)"
	strayCategory  = "stray copy"
	strayNext      = "a move under way, or a copy left behind: the pipeline cleans every copy with its tenant; otherwise needs a human"
	placedTitle    = "Placements (public.tenant_shard) pointing at no schema"
	placedCategory = "placement without schema"
	placedNext     = "the tenant's schema is on another shard only: fix its tenant_shard row, or finish the move"
	lostCategory   = "lost drop"
	lostNext       = "left on the shard by a drop whose record is lost: needs a human"
)

func (s *shardCheck) found() bool {
	return s != nil && (len(s.strays) > 0 || len(s.placedNoSchema) > 0 || len(s.lostDrops) > 0)
}

// checkShards reads the inventory of every other shard and folds it into
// catalog (the catalog's inventory): a tenant's schemas, records and drops
// under way on any shard count as the tenant's, for the reconciliation.
func checkShards(ctx context.Context, env *service.Env, catalog *dataplane.Inventory) (*shardCheck, error) {
	sc := &shardCheck{names: []string{env.CatalogShard}, schemas: map[string]int{env.CatalogShard: len(catalog.Schemas)}}
	names := slices.Sorted(maps.Keys(env.Shards))
	sc.names = append(sc.names, names...)
	on := map[string][]string{} // tenant → shards holding its schema
	for k := range catalog.Schemas {
		on[k] = append(on[k], env.CatalogShard)
	}
	var recs = map[string][]dataplane.Record{}
	for k, r := range catalog.Records {
		recs[k] = append(recs[k], r)
	}
	for _, name := range names {
		inv, err := env.Shards[name].Inventory(ctx)
		if err != nil {
			return nil, fmt.Errorf("shard %s: %w", name, err)
		}
		sc.schemas[name] = len(inv.Schemas)
		claimed := map[string]bool{}
		for _, rec := range inv.Records {
			claimed[rec.Quarantine()] = true
		}
		for q := range inv.Quarantines {
			if claimed[q] {
				catalog.Quarantines[q] = true
			} else {
				sc.lostDrops = append(sc.lostDrops, shardFinding{id: q, shard: name})
			}
		}
		for k, partly := range inv.Schemas {
			on[k] = append(on[k], name)
			catalog.Schemas[k] = catalog.Schemas[k] || partly
			if _, ok := catalog.SchemaOIDs[k]; !ok {
				catalog.SchemaOIDs[k] = inv.SchemaOIDs[k]
			}
		}
		for k, r := range inv.Records {
			recs[k] = append(recs[k], r)
		}
	}
	for k, rs := range recs {
		catalog.Records[k] = dataplane.MergeRecords(rs)
	}
	slices.SortFunc(sc.lostDrops, func(a, b shardFinding) int { return strings.Compare(a.id, b.id) })
	placementOf := func(k string) string {
		if p, ok := catalog.Shards[k]; ok {
			return p
		}
		return env.DefaultShard
	}
	for _, k := range slices.Sorted(maps.Keys(on)) {
		if _, err := tenant.ParseID(k); err != nil {
			continue // listed as schemas named like tenants
		}
		placement := placementOf(k)
		for _, shard := range on[k] {
			if shard != placement {
				sc.strays = append(sc.strays, shardFinding{id: k, shard: shard, placement: placement})
			}
		}
		if !slices.Contains(on[k], placement) && slices.Contains(sc.names, placement) {
			sc.placedNoSchema = append(sc.placedNoSchema, shardFinding{id: k, shard: placement, placement: placement})
		}
	}
	return sc, nil
}

// printShardCheck prints the per-shard counts and what is wrong across shards.
func printShardCheck(w io.Writer, s *shardCheck, limit int) {
	if s == nil {
		return
	}
	fmt.Fprintln(w, "\nShards (tenant schemas):")
	tw := table(w)
	row(tw, "SHARD", "TENANT SCHEMAS")
	for _, name := range s.names {
		row(tw, name, s.schemas[name])
	}
	tw.Flush()
	list := func(title string, items []shardFinding, next string) {
		if len(items) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s: %d\n", title, len(items))
		tw := table(w)
		row(tw, "TENANT", "SHARD", "PLACED ON", "NEXT STEP")
		for i, f := range items {
			if i == limit {
				row(tw, fmt.Sprintf("… and %d more", len(items)-i), "", "", "")
				break
			}
			row(tw, f.id, f.shard, f.placement, next)
		}
		tw.Flush()
	}
	list(strayTitle, s.strays, strayNext)
	list(placedTitle, s.placedNoSchema, placedNext)
	if len(s.lostDrops) > 0 {
		fmt.Fprintf(w, "\nSchemas left on the shards by a drop whose record is lost (need a human): %d\n", len(s.lostDrops))
		lost := make([]string, len(s.lostDrops))
		for i, f := range s.lostDrops {
			lost[i] = f.id + " (shard " + f.shard + ")"
		}
		listCapped(w, "  ", lost, limit)
	}
}

// shardCheckView is a sharded fleet's shard findings in verify -o json.
type shardCheckView struct {
	// Schemas counts the tenant schemas per shard.
	Schemas        map[string]int     `json:"schemas"`
	StrayCopies    []shardFindingView `json:"stray_copies"`
	PlacedNoSchema []shardFindingView `json:"placements_without_schema"`
	LostDrops      []shardFindingView `json:"lost_drops"`
}

// shardFindingView is one shard finding: a tenant (or, for a lost drop, a
// schema), the shard at issue, the tenant's placement and the next step.
type shardFindingView struct {
	TenantID string `json:"tenant_id,omitempty"`
	Schema   string `json:"schema"`
	Shard    string `json:"shard"`
	PlacedOn string `json:"placed_on,omitempty"`
	NextStep string `json:"next_step"`
}

// view is s as verify -o json shows it (nil with one shard).
func (s *shardCheck) view() *shardCheckView {
	if s == nil {
		return nil
	}
	return &shardCheckView{Schemas: s.schemas, StrayCopies: findingViews(s.strays, strayNext),
		PlacedNoSchema: findingViews(s.placedNoSchema, placedNext), LostDrops: findingViews(s.lostDrops, lostNext)}
}

func findingViews(fs []shardFinding, next string) []shardFindingView {
	out := []shardFindingView{}
	for _, f := range fs {
		v := shardFindingView{Schema: f.id, Shard: f.shard, PlacedOn: f.placement, NextStep: next}
		if f.placement != "" {
			v.TenantID = f.id
		}
		out = append(out, v)
	}
	return out
}

// csvRows are s's findings as rows of verify -o csv (verifyCSVHeader).
func (s *shardCheck) csvRows() [][]string {
	if s == nil {
		return nil
	}
	var rows [][]string
	for _, kind := range []struct {
		category, next string
		fs             []shardFinding
	}{{strayCategory, strayNext, s.strays}, {placedCategory, placedNext, s.placedNoSchema}, {lostCategory, lostNext, s.lostDrops}} {
		for _, v := range findingViews(kind.fs, kind.next) {
			text := tenant.SpreadsheetSafe // names read from the databases
			rows = append(rows, []string{kind.category, text(v.TenantID), text(v.Schema), "", "", "", "false", "false", v.NextStep, text(v.Shard)})
		}
	}
	return rows
}

// shardsView is where one tenant lives in a sharded fleet (status TENANT_ID).
type shardsView struct {
	// Placement is the shard public.tenant_shard places it on (the default
	// shard without a row); Configured is false when it is not a shard
	// this product knows.
	Placement  string `json:"placement"`
	Configured bool   `json:"placement_configured"`
	// SchemaOn lists the shards holding a schema of its name; Unreachable
	// those that could not be asked.
	SchemaOn    []string `json:"schema_on"`
	Unreachable []string `json:"unreachable,omitempty"`
}

func (v *shardsView) describe() string {
	s := "placed on " + v.Placement
	if !v.Configured {
		s += " (not a configured shard: the pipeline refuses the tenant)"
	}
	if len(v.SchemaOn) == 0 {
		s += "; schema on no configured shard"
	} else {
		s += "; schema on " + strings.Join(v.SchemaOn, ", ")
	}
	if len(v.Unreachable) > 0 {
		s += "; not reachable: " + strings.Join(v.Unreachable, ", ")
	}
	return s
}

// tenantShards reads where id lives: its placement on the catalog and the
// shards holding its schema.
func tenantShards(ctx context.Context, env *service.Env, id tenant.ID) (*shardsView, error) {
	placements, err := env.Data.Placements(ctx)
	if err != nil {
		return nil, err
	}
	v := &shardsView{Placement: env.DefaultShard}
	if p, ok := placements[id]; ok {
		v.Placement = p
	}
	_, v.Configured = env.Shards[v.Placement]
	v.Configured = v.Configured || v.Placement == env.CatalogShard
	stores := map[string]*dataplane.Store{env.CatalogShard: env.Data}
	maps.Copy(stores, env.Shards)
	names := append([]string{env.CatalogShard}, slices.Sorted(maps.Keys(env.Shards))...)
	for _, name := range names {
		exists, err := stores[name].SchemaExists(ctx, id)
		switch {
		case err != nil && name == env.CatalogShard:
			return nil, err
		case err != nil:
			v.Unreachable = append(v.Unreachable, name)
		case exists:
			v.SchemaOn = append(v.SchemaOn, name)
		}
	}
	return v, nil
}
