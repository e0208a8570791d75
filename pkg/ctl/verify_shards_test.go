package ctl

import (
	"encoding/csv"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// TestVerifyShards: with ONYX_DB_SHARDS, verify reads every shard: per-shard
// schema counts, schemas on a shard nothing places them on (stray copies),
// placements pointing at no schema, and a tenant whose schema is on a shard
// other than the catalog is live, not a half-done cleanup.
func TestVerifyShards(t *testing.T) {
	w := newWorld(t)
	w.ensureLedger()
	b := w.shardB()
	gated, old := tenant.StatusGatedAccess, testenv.DaysAgo(200)
	// idA lives on b, placed there: consistent.
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idA, Status: gated, LastQuery: old, NoSchema: true})
	b.CreateTenant(t, testenv.Tenant{ID: idA, LastQuery: old})
	w.dbs.ExecData(t, "INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ($1, 'b')", idA)
	stdout, _ := mustRun(t, 0, "verify")
	contains(t, "verify of a consistent sharded fleet", stdout, "shards default, b; catalog default", "SHARD", "consistent: no cleanup left anything behind")
	// cleanup does not take a tenant living on b for one whose schema is gone
	// (it would ask to confirm completing it; without a terminal it refuses).
	stdout, _ = mustRun(t, 0, "cleanup", idA)
	if strings.Contains(stdout, "its schema is not on the data plane") {
		t.Errorf("cleanup asks to complete a tenant living on shard b:\n%s", stdout)
	}
	// status shows where the tenant lives.
	stdout, _ = mustRun(t, 0, "status", idA) // requested just above
	contains(t, "status of a tenant on shard b", stdout, "placed on b; schema on b")

	// idB: on default (its placement) and a copy on b; idC: placed on b,
	// schema on default only.
	w.gated(idB, 1, 1)
	b.CreateTenant(t, testenv.Tenant{ID: idB, LastQuery: old})
	w.gated(idC, 1, 1)
	w.dbs.ExecData(t, "INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ($1, 'b')", idC)
	stdout, _ = mustRun(t, 1, "verify")
	contains(t, "verify of a sharded fleet with strays", stdout,
		"Schemas on a shard nothing places them on (stray copies): 2",
		idB+"  b ", idC+"  default ",
		"Placements (public.tenant_shard) pointing at no schema: 1")
	if strings.Contains(stdout, "(a) schema gone") {
		t.Errorf("a tenant living on shard b was taken for a half-done cleanup:\n%s", stdout)
	}

	// -o json and -o csv say the same.
	stdout, _ = mustRun(t, 1, "verify", "-o", "json")
	var v struct {
		Consistent bool
		Shards     *struct {
			Schemas        map[string]int
			StrayCopies    []shardFindingJSON `json:"stray_copies"`
			PlacedNoSchema []shardFindingJSON `json:"placements_without_schema"`
		}
	}
	if err := json.Unmarshal([]byte(stdout), &v); err != nil || v.Shards == nil {
		t.Fatalf("verify -o json: %v, no shards:\n%s", err, stdout)
	}
	strays, placed := []shardFindingJSON{{idB, "b", "default"}, {idC, "default", "b"}}, []shardFindingJSON{{idC, "b", "b"}}
	if v.Consistent || v.Shards.Schemas["default"] != 2 || v.Shards.Schemas["b"] != 2 ||
		!slices.Equal(v.Shards.StrayCopies, strays) || !slices.Equal(v.Shards.PlacedNoSchema, placed) {
		t.Errorf("verify -o json: %+v; want 2 schemas on each shard, stray copies %v, placements without schema %v:\n%s",
			v, strays, placed, stdout)
	}
	stdout, _ = mustRun(t, 1, "verify", "-o", "csv")
	records, err := csv.NewReader(strings.NewReader(stdout)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var found [][3]string // category, tenant, shard
	for _, r := range records[1:] {
		if r[0] == "stray copy" || r[0] == "placement without schema" {
			found = append(found, [3]string{r[0], r[1], r[len(r)-1]})
		}
	}
	want := [][3]string{{"stray copy", idB, "b"}, {"stray copy", idC, "default"}, {"placement without schema", idC, "b"}}
	if records[0][len(records[0])-1] != "shard" || !slices.Equal(found, want) {
		t.Errorf("verify -o csv has %v; want %v (the shard last):\n%s", found, want, stdout)
	}
}

// shardFindingJSON is a shard finding of verify -o json: a tenant, the
// shard at issue and its placement.
type shardFindingJSON struct {
	TenantID string `json:"tenant_id"`
	Shard    string `json:"shard"`
	PlacedOn string `json:"placed_on"`
}
