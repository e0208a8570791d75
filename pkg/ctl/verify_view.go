package ctl

import (
	"strconv"

	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// verifyView is verify -o json.
type verifyView struct {
	Consistent          bool            `json:"consistent"`
	ShardName           string          `json:"shard_name"`
	Schemas             int             `json:"schemas"`
	TenantsWithPublic   int             `json:"tenants_with_public_rows"`
	ControlPlaneTenants int             `json:"control_plane_tenants"`
	LedgerRows          int             `json:"ledger_rows"`
	Problems            []problemView   `json:"problems"`
	InvalidIDs          []invalidIDView `json:"invalid_ids"`
	LostDrops           []string        `json:"lost_drops"`
	MaybeElsewhere      []problemView   `json:"maybe_on_another_shard"`
	OnOtherShards       int             `json:"on_other_shards"`
	OddSchemas          []string        `json:"odd_schemas"`
	Published           []tenant.ID     `json:"published"`
	// StoreLeftovers is (e): what ledgered tenants left in the other stores.
	StoreLeftovers []sweepItemView `json:"store_leftovers"`
	// Shards is what verify found across the shards of a sharded fleet
	// (absent with one shard).
	Shards *shardCheckView `json:"shards,omitempty"`
}

// problemView is one inconsistent tenant.
type problemView struct {
	Category    string           `json:"category"`
	TenantID    tenant.ID        `json:"tenant_id"`
	Schema      string           `json:"schema"`
	PublicRows  map[string]int64 `json:"public_rows"`
	ControlRows map[string]int64 `json:"control_plane_rows"`
	Status      string           `json:"status"`
	Shard       string           `json:"shard,omitempty"`
	Repairable  bool             `json:"repairable"`
	Requested   bool             `json:"requested"`
	NeedsHuman  string           `json:"needs_human,omitempty"`
}

type invalidIDView struct {
	Quoted string           `json:"quoted"`
	Rows   map[string]int64 `json:"rows"`
}

func newProblemView(p leftover) problemView {
	return problemView{Category: p.category, TenantID: p.id, Schema: p.schema, PublicRows: p.public, ControlRows: p.control,
		Status: p.status, Shard: p.shard, Repairable: p.repairable, Requested: p.publishedOK, NeedsHuman: p.needsHuman}
}

func newVerifyView(r *reconciliation, published []tenant.ID) verifyView {
	v := verifyView{Consistent: !r.inconsistent(), ShardName: r.shardName, Schemas: r.schemas, TenantsWithPublic: r.withPublic,
		ControlPlaneTenants: r.inControl, LedgerRows: r.ledgerTenants, Problems: []problemView{}, InvalidIDs: []invalidIDView{},
		LostDrops: append([]string{}, r.lostDrops...), MaybeElsewhere: []problemView{}, OnOtherShards: r.elsewhere,
		OddSchemas: append([]string{}, r.oddSchemas...), Published: append([]tenant.ID{}, published...)}
	for _, p := range r.problems {
		v.Problems = append(v.Problems, newProblemView(p))
	}
	v.Shards = r.shards.view()
	v.StoreLeftovers = []sweepItemView{}
	if r.stores != nil {
		v.StoreLeftovers = newSweepItemViews(r.stores.plan.Items)
	}
	for _, p := range r.maybeElsewhere {
		v.MaybeElsewhere = append(v.MaybeElsewhere, newProblemView(p))
	}
	for _, inv := range r.invalid {
		v.InvalidIDs = append(v.InvalidIDs, invalidIDView{Quoted: tenant.QuoteInput(inv.raw), Rows: inv.rows})
	}
	return v
}

// verifyCSVHeader is the header of verify -o csv: a row per problem, then
// (in a sharded fleet) one per shard finding, its shard in the last column.
var verifyCSVHeader = []string{"category", "tenant_id", "schema", "public_rows", "control_plane_rows", "status", "repairable", "requested",
	"needs_human", "shard"}

func verifyCSV(r *reconciliation) [][]string {
	text := tenant.SpreadsheetSafe
	var rows [][]string
	for _, p := range r.problems {
		rows = append(rows, []string{p.category, string(p.id), text(p.schema), counts(dataplane.PublicTables, p.public),
			counts(controlplane.ControlTables, p.control), text(p.status), strconv.FormatBool(p.repairable),
			strconv.FormatBool(p.publishedOK), p.needsHuman, text(p.shard)})
	}
	return append(rows, r.shards.csvRows()...)
}
