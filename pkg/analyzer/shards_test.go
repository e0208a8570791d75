package analyzer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// TestAnalyzeEveryShard: the analyzer lists tenant schemas on every shard,
// reads each tenant's activity where its schema is (the latest of all
// copies), counts per shard, adds the shard column last to its CSV, reports
// a schema on a shard other than its placement as a stray copy, never
// selects a tenant placed on a shard that is not configured, and leaves the
// tenants it cannot see for the next pass while a shard is unreachable.
func TestAnalyzeEveryShard(t *testing.T) {
	ctx := context.Background()
	catalog, b := testenv.NewDatabases(t), testenv.NewDatabases(t)
	gated := tenant.StatusGatedAccess
	old := testenv.DaysAgo(200)
	// On the default (catalog) shard.
	catalog.CreateTenant(t, testenv.Tenant{ID: "tenant_i-01", Status: gated, LastQuery: old, Pairs: 1, DocsPerPair: 5})
	// On shard b only, placed there.
	catalog.CreateTenant(t, testenv.Tenant{ID: "tenant_i-02", Status: gated, LastQuery: old, NoSchema: true})
	b.CreateTenant(t, testenv.Tenant{ID: "tenant_i-02", LastQuery: old, Pairs: 1, DocsPerPair: 7})
	catalog.ExecData(t, `INSERT INTO public.tenant_shard VALUES ('tenant_i-02', 'b')`)
	// Being moved: inactive on the catalog, active three days ago on b.
	catalog.CreateTenant(t, testenv.Tenant{ID: "tenant_i-03", Status: gated, LastQuery: old, Pairs: 1, DocsPerPair: 1})
	b.CreateTenant(t, testenv.Tenant{ID: "tenant_i-03", LastQuery: testenv.DaysAgo(3), Pairs: 1, DocsPerPair: 1})
	// Placed on shard c, which is not configured: no schema here, gated,
	// inactive; its cleanup even confirmed by an operator.
	catalog.CreateTenant(t, testenv.Tenant{ID: "tenant_i-04", Status: gated, LastQuery: old, NoSchema: true})
	catalog.ExecData(t, `INSERT INTO public.tenant_shard VALUES ('tenant_i-04', 'c')`)

	u, err := url.Parse(b.DataURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.StartProxy(t, u.Host)
	u.Host = proxy.Addr
	stores := map[string]*dataplane.Store{}
	data := openStore(t, catalog.Data, dataplane.Options{})
	stores["b"] = openStore(t, testenv.Pool(t, u.String()), dataplane.Options{Shard: "b", NotCatalog: true})
	if err := data.ConfirmCompletion(ctx, "tenant_i-04", "operator"); err != nil {
		t.Fatal(err)
	}
	a := &Analyzer{Data: data, Shards: stores, Control: controlplane.New(catalog.Control), InactiveDays: 90, Workers: 2,
		Now: time.Now, Log: slog.New(slog.DiscardHandler)}
	r, err := a.Analyze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var candidates []string
	for _, c := range r.Candidates() {
		candidates = append(candidates, string(c.ID)+"@"+strings.Join(c.Shards, ";"))
	}
	if got := strings.Join(candidates, " "); got != "tenant_i-02@b tenant_i-01@default" {
		t.Fatalf("candidates %s; want tenant_i-02 on b and tenant_i-01 on default (tenant_i-03 is active on b, "+
			"tenant_i-04 is placed on c)", got)
	}
	if len(r.StrayCopies) != 1 || r.StrayCopies[0] != (StrayCopy{ID: "tenant_i-03", Shard: "b", Placement: "default"}) {
		t.Fatalf("stray copies %+v; want tenant_i-03 on b", r.StrayCopies)
	}
	if len(r.ForReview) != 1 || r.ForReview[0] != "tenant_i-04" {
		t.Fatalf("for review %v; want tenant_i-04 (placed on an unconfigured shard)", r.ForReview)
	}
	want := []ShardCount{{Name: "default", Schemas: 2, Candidates: 1, Documents: 6}, {Name: "b", Schemas: 2, Candidates: 1, Documents: 8}}
	if len(r.Shards) != 2 || r.Shards[0] != want[0] || r.Shards[1] != want[1] {
		t.Fatalf("per-shard counts %+v; want %+v", r.Shards, want)
	}
	var csv, summary bytes.Buffer
	if err := WriteCSVTo(&csv, r); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(csv.String()), "\n")
	if lines[0] != "tenant_id,num_documents,num_users,last_query_time,days_since_last_query,shard" ||
		!strings.HasPrefix(lines[1], "tenant_i-02,7,") || !strings.HasSuffix(lines[1], ",b") || !strings.HasSuffix(lines[2], ",default") {
		t.Fatalf("CSV:\n%s", csv.String())
	}
	PrintSummary(&summary, r)
	for _, w := range []string{"shard", "tenant schemas", "1 stray copies", "tenant_i-03 on shard b (placed on default)"} {
		if !strings.Contains(summary.String(), w) {
			t.Errorf("summary lacks %q:\n%s", w, summary.String())
		}
	}

	// Shard b unreachable: the pass goes on with the catalog; tenant_i-02
	// (no schema on the shards that answered) waits, never taken for an
	// interrupted cleanup.
	proxy.Cut()
	r, err = a.Analyze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Candidates() {
		if c.ID == "tenant_i-02" {
			t.Fatal("a tenant of the unreachable shard was selected")
		}
		if c.ID == "tenant_i-03" {
			t.Fatal("tenant_i-03 selected on its inactive catalog copy while shard b, where its copy was active " +
				"three days ago, could not be read")
		}
	}
	if r.Withheld == 0 {
		t.Fatalf("withheld %d; want the catalog's tenants (shard b may hold a copy of theirs)", r.Withheld)
	}
	summary.Reset()
	if PrintSummary(&summary, r); !strings.Contains(summary.String(), "tenants not selected: a shard that could not be read") {
		t.Fatalf("summary:\n%s", summary.String())
	}
	if r.Shards[1].Unreachable == "" {
		t.Fatalf("shard b not reported unreachable: %+v", r.Shards)
	}
	found := false
	for _, u := range r.Unreadable {
		found = found || (u.ID == "tenant_i-02" && strings.Contains(u.Reason, "could not be read"))
	}
	if !found {
		t.Fatalf("unreadable %+v; want tenant_i-02 waiting for shard b", r.Unreadable)
	}
}

func openStore(t *testing.T, pool *pgxpool.Pool, opts dataplane.Options) *dataplane.Store {
	t.Helper()
	st, err := dataplane.New(context.Background(), pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Ensure(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestJudgeWithACopyLost: a tenant with a copy on a shard that failed
// before that copy was read is never a candidate on its other copies alone
// (the lost copy may be the active one): it waits for the next pass.
func TestJudgeWithACopyLost(t *testing.T) {
	now := time.Now()
	p := &passState{a: &Analyzer{Shards: map[string]*dataplane.Store{"b": nil}},
		r:     &Report{keepCandidates: true, Shards: make([]ShardCount, 2)},
		reads: []*shardRead{{name: "default"}, {name: "b"}}, now: now, window: tenant.Window(90)}
	id := tenant.ID("tenant_i-01")
	c := &chunk{ids: []tenant.ID{id}, first: []int{0, 2},
		copies: []shardCopy{
			{shard: 0, info: dataplane.SchemaInfo{ID: id}, activity: dataplane.TenantActivity{ID: id,
				Activity: dataplane.Activity{LastQuery: now.AddDate(0, 0, -200)}}},
			{shard: 1, info: dataplane.SchemaInfo{ID: id}, lost: errors.New("read tenant activity: connection reset")},
		},
		control: map[tenant.ID]controlplane.Record{id: {ID: id, Status: tenant.StatusGatedAccess, CreatedAt: now.AddDate(-1, 0, 0)}},
		records: make([]map[tenant.ID]dataplane.Record, 2)}
	var emitted []tenant.ID
	if err := p.judge(c, func(t Tenant) error { emitted = append(emitted, t.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(emitted) != 0 || p.r.CandidateCount() != 0 {
		t.Fatalf("published %v (%d candidates); want none: its copy on shard b was not read", emitted, p.r.CandidateCount())
	}
	if p.r.Withheld != 1 {
		t.Fatalf("withheld %d; want 1", p.r.Withheld)
	}

	// An ACTIVE tenant with a copy lost is not a candidate whatever that
	// copy holds: it is not counted as withheld, and its reason is its own.
	p.r.keepAll = true
	c.control[id] = controlplane.Record{ID: id, Status: "ACTIVE", CreatedAt: now.AddDate(-1, 0, 0)}
	if err := p.judge(c, func(t Tenant) error { emitted = append(emitted, t.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if p.r.Withheld != 1 || len(p.r.Tenants) != 1 || !strings.Contains(p.r.Tenants[0].Reason, "ACTIVE") {
		t.Fatalf("withheld %d, tenants %+v; want 1 withheld, and the ACTIVE tenant's reason its status", p.r.Withheld, p.r.Tenants)
	}
}

// TestJudgeAfterAListCutShort: a shard whose list failed part way says
// nothing of the tenants after the last name it listed: such a tenant may
// have a copy there (being moved), so it is never a candidate on its other
// copies this pass; a tenant before that name is judged as usual.
func TestJudgeAfterAListCutShort(t *testing.T) {
	now := time.Now()
	catalog := &shardRead{name: "default", listed: make(chan dataplane.SchemaInfo, 4)}
	b := &shardRead{name: "b", listed: make(chan dataplane.SchemaInfo, 4)}
	for _, id := range []tenant.ID{"tenant_i-01", "tenant_i-03"} {
		catalog.listed <- dataplane.SchemaInfo{ID: id}
	}
	close(catalog.listed)
	b.listed <- dataplane.SchemaInfo{ID: "tenant_i-02"}
	b.cut = true
	b.fail(errors.New("list tenant schemas: connection reset"))
	close(b.listed)
	p := &passState{a: &Analyzer{Shards: map[string]*dataplane.Store{"b": nil}},
		r:     &Report{keepCandidates: true, Shards: make([]ShardCount, 2)},
		reads: []*shardRead{catalog, b}, now: now, window: tenant.Window(90)}
	c := p.nextChunk()
	if c == nil || len(c.ids) != 3 || c.failure() != nil {
		t.Fatalf("chunk %+v", c)
	}
	c.control = map[tenant.ID]controlplane.Record{}
	for i, id := range c.ids {
		c.control[id] = controlplane.Record{ID: id, Status: tenant.StatusGatedAccess, CreatedAt: now.AddDate(-1, 0, 0)}
		for k := c.first[i]; k < c.first[i+1]; k++ {
			cp := &c.copies[k]
			if cp.shard == 1 {
				cp.lost = b.failure()
				continue
			}
			cp.activity = dataplane.TenantActivity{ID: id, Activity: dataplane.Activity{LastQuery: now.AddDate(0, 0, -200)}}
		}
	}
	c.records = make([]map[tenant.ID]dataplane.Record, 2)
	var emitted []string
	if err := p.judge(c, func(t Tenant) error { emitted = append(emitted, string(t.ID)); return nil }); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(emitted, " "); got != "tenant_i-01" {
		t.Fatalf("published %q; want tenant_i-01 alone (tenant_i-02's copy on b was lost, tenant_i-03 comes after "+
			"the last name b listed)", got)
	}
}
