package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// shardWorld is an env whose data plane has other shards: databases of
// their own on the same server (the catalog, named "default", is the env's
// data plane).
type shardWorld struct {
	*env
	shards map[string]*testenv.Databases
	// proxies, when a shard was opened through one, make it unreachable
	// (Cut) and reachable again (Restore).
	proxies map[string]*testenv.Proxy
}

// setupShards builds an env with the named other shards; those in
// viaProxy are reached through a proxy the test can cut.
func setupShards(t *testing.T, names []string, viaProxy ...string) *shardWorld {
	t.Helper()
	e := setup(t)
	w := &shardWorld{env: e, shards: map[string]*testenv.Databases{}, proxies: map[string]*testenv.Proxy{}}
	stores := map[string]*dataplane.Store{}
	for _, name := range names {
		dbs := testenv.NewDatabases(t)
		w.shards[name] = dbs
		pool := dbs.Data
		for _, p := range viaProxy {
			if p != name {
				continue
			}
			u, err := url.Parse(dbs.DataURL)
			if err != nil {
				t.Fatal(err)
			}
			proxy := testenv.StartProxy(t, u.Host)
			w.proxies[name] = proxy
			u.Host = proxy.Addr
			pool = testenv.Pool(t, u.String())
		}
		st, err := dataplane.New(context.Background(), pool, dataplane.Options{Shard: name, NotCatalog: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		if _, err := st.Ensure(context.Background(), true); err != nil {
			t.Fatal(err)
		}
		stores[name] = st
	}
	e.marker.Shards, e.cleaner.Shards = stores, stores
	return w
}

// onShard creates tenant id's schema (eligible: gated, inactive for 200
// days, with documents, or with lastQuery days of inactivity) on shard, and
// its public and control-plane rows on the catalog, placed by
// public.tenant_shard on placement ("" for no row).
func (w *shardWorld) onShard(t *testing.T, id, shard, placement string, inactiveDays int) {
	t.Helper()
	tn := testenv.Tenant{ID: id, Pairs: 2, DocsPerPair: 10, LastQuery: testenv.DaysAgo(inactiveDays)}
	if shard == "default" {
		tn.Status = tenant.StatusGatedAccess
		w.DBs.CreateTenant(t, tn)
	} else {
		w.shards[shard].CreateTenant(t, tn) // the schema (its public rows there are not the catalog's)
		tn.Status, tn.NoSchema = tenant.StatusGatedAccess, true
		w.DBs.CreateTenant(t, tn) // public and control-plane rows
	}
	if placement != "" {
		w.DBs.ExecData(t, `INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ($1, $2)`, id, placement)
	}
}

// copyTo adds a copy of the tenant's schema on shard (a move under way).
func (w *shardWorld) copyTo(t *testing.T, id, shard string, inactiveDays int) {
	t.Helper()
	w.shards[shard].CreateTenant(t, testenv.Tenant{ID: id, Pairs: 1, DocsPerPair: 5, LastQuery: testenv.DaysAgo(inactiveDays)})
}

// twoCopiesMarkedAndDrained creates tenant id's schema on shard home (placed
// on placement, inactive for 200 days) and a copy on shard other (inactive
// for otherDays), marks it and drains both copies.
func (w *shardWorld) twoCopiesMarkedAndDrained(t *testing.T, id, home, placement, other string, otherDays int) {
	t.Helper()
	w.onShard(t, id, home, placement, 200)
	w.copyTo(t, id, other, otherDays)
	if err := w.mark(t, id); err != nil {
		t.Fatal(err)
	}
	w.drainOn(t, id, home)
	w.drainOn(t, id, other)
}

// drainOn drains the tenant's copy on shard.
func (w *shardWorld) drainOn(t *testing.T, id, shard string) {
	t.Helper()
	dbs := w.DBs
	if shard != "default" {
		dbs = w.shards[shard]
	}
	for range 20 {
		if dbs.DrainStep(t, id, 1000) == 0 && dbs.CountData(t, `SELECT count(*) FROM "`+id+`".connector_credential_pair`) == 0 {
			return
		}
	}
	t.Fatalf("%s did not drain on %s", id, shard)
}

func (w *shardWorld) schemaOn(t *testing.T, id, shard string) bool {
	t.Helper()
	if shard == "default" {
		return w.DBs.SchemaExists(t, id)
	}
	return w.shards[shard].SchemaExists(t, id)
}

func (w *shardWorld) ledger(t *testing.T, id string) controlplane.LedgerEntry {
	t.Helper()
	entry, found, err := w.cleaner.Control.LedgerEntry(context.Background(), tenant.ID(id))
	if err != nil || !found {
		t.Fatalf("ledger row of %s: found %v, %v", id, found, err)
	}
	return entry
}

// TestTenantOnAnotherShardOnly: a tenant whose schema lives on shard b
// only (placed there) is marked, drained and dropped there; its public rows,
// its tenant_shard row included, are deleted on the catalog; the ledger
// counts what was dropped on b.
func TestTenantOnAnotherShardOnly(t *testing.T) {
	w := setupShards(t, []string{"b"})
	w.onShard(t, idA, "b", "b", 200)
	w.eligible(t, idB) // on the default shard, untouched
	otherBefore := w.State(idB)
	if err := w.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	if n := w.shards["b"].CountData(t, `SELECT count(*) FROM "`+idA+`".connector_credential_pair WHERE status <> 'DELETING'`); n != 0 {
		t.Fatalf("%d pairs not DELETING on shard b", n)
	}
	// Not drained yet: the drain check reads shard b.
	if err := w.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	w.waitOutcome(t, idA, tenant.OutcomeDraining)
	w.drainOn(t, idA, "b")
	if err := w.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	w.waitOutcome(t, idA, tenant.OutcomeCleaned)
	if w.schemaOn(t, idA, "b") {
		t.Fatal("the schema is still on shard b")
	}
	if n := w.DBs.PublicRows(t, idA); n != 0 {
		t.Fatalf("%d public rows left on the catalog", n)
	}
	if n := w.DBs.CountData(t, `SELECT count(*) FROM public.tenant_shard WHERE tenant_id = $1`, idA); n != 0 {
		t.Fatal("the tenant_shard row is left")
	}
	if n := w.DBs.CountControl(t, `SELECT count(*) FROM tenant WHERE tenant_id = $1`, idA); n != 0 {
		t.Fatal("the control-plane row is left")
	}
	entry := w.ledger(t, idA)
	if !entry.SchemaExisted || entry.RelationsDropped == 0 || entry.PublicRowsDeleted == 0 || entry.DocumentsAtMarking == 0 {
		t.Fatalf("ledger %+v; want the schema dropped on b, its public rows and its documents at marking", entry)
	}
	if w.State(idB) != otherBefore {
		t.Fatal("the tenant of the default shard was changed")
	}
}

// TestTenantBeingMovedIsCleanedOnBothShards: a tenant with a copy on two
// shards (a move under way) is marked on both, drained on both, judged on
// the latest activity of both, and dropped on both.
func TestTenantBeingMovedIsCleanedOnBothShards(t *testing.T) {
	w := setupShards(t, []string{"b"})
	w.onShard(t, idA, "default", "b", 200)
	w.copyTo(t, idA, "b", 150)
	if err := w.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	for _, sh := range []string{"default", "b"} {
		dbs := w.DBs
		if sh == "b" {
			dbs = w.shards["b"]
		}
		if n := dbs.CountData(t, `SELECT count(*) FROM "`+idA+`".connector_credential_pair WHERE status <> 'DELETING'`); n != 0 {
			t.Fatalf("%d pairs not DELETING on shard %s", n, sh)
		}
	}
	// One copy drained is not enough.
	w.drainOn(t, idA, "default")
	if err := w.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	w.waitOutcome(t, idA, tenant.OutcomeDraining)
	if !w.schemaOn(t, idA, "default") || !w.schemaOn(t, idA, "b") {
		t.Fatal("a copy was dropped before every copy was drained")
	}
	w.drainOn(t, idA, "b")
	if err := w.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	w.waitOutcome(t, idA, tenant.OutcomeCleaned)
	if w.schemaOn(t, idA, "default") || w.schemaOn(t, idA, "b") {
		t.Fatal("a copy is left")
	}
	if n := w.DBs.PublicRows(t, idA); n != 0 {
		t.Fatalf("%d public rows left", n)
	}
	entry := w.ledger(t, idA)
	if want := testenv.DaysAgo(150); entry.LastActivityAt.Before(want.AddDate(0, 0, -1)) {
		t.Fatalf("ledger last activity %s; want the latest of both copies (about %s)", entry.LastActivityAt, want)
	}
}

// TestActiveCopyOnAnotherShardKeepsTheTenant: the activity of every copy
// counts; a copy used recently on another shard makes the tenant active,
// and nothing is marked on either shard.
func TestActiveCopyOnAnotherShardKeepsTheTenant(t *testing.T) {
	w := setupShards(t, []string{"b"})
	w.onShard(t, idA, "default", "", 200)
	w.copyTo(t, idA, "b", 3)
	before, beforeB := w.DBs.Fingerprint(t, idA), w.shards["b"].Fingerprint(t, idA)
	err := w.mark(t, idA)
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "active") {
		t.Fatalf("mark: %v; want refused as active", err)
	}
	if w.DBs.Fingerprint(t, idA) != before || w.shards["b"].Fingerprint(t, idA) != beforeB {
		t.Fatal("a copy of an active tenant was changed")
	}
}

// TestPlacementOnUnconfiguredShardIsRefused: a tenant placed on a shard
// this pipeline is not configured for, with no schema on any configured
// shard, is refused, even with an operator's confirmation: never completed
// as an interrupted cleanup. Nothing is deleted anywhere.
func TestPlacementOnUnconfiguredShardIsRefused(t *testing.T) {
	w := setupShards(t, []string{"b"})
	w.DBs.CreateTenant(t, testenv.Tenant{ID: idA, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200), NoSchema: true})
	w.DBs.ExecData(t, `INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ($1, 'c')`, idA)
	if err := w.marker.Data.ConfirmCompletion(context.Background(), idA, "operator"); err != nil {
		t.Fatal(err)
	}
	public, control := w.DBs.PublicRows(t, idA), w.DBs.ControlRows(t, idA)
	for _, deliver := range []func() error{
		func() error { return w.mark(t, idA) },
		func() error { return w.check(t, tenant.DrainCheck{ID: idA}) },
	} {
		err := deliver()
		if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), `shard "c"`) {
			t.Fatalf("%v; want refused naming shard c", err)
		}
	}
	if w.DBs.PublicRows(t, idA) != public || w.DBs.ControlRows(t, idA) != control {
		t.Fatal("rows of a tenant placed on an unconfigured shard were deleted")
	}
	if _, found, _ := w.cleaner.Control.LedgerEntry(context.Background(), idA); found {
		t.Fatal("a ledger row was written")
	}
}

// TestShardDownDelaysOnlyItsTenants: with shard b unreachable, the tenant
// placed on b waits ("later", nothing changed) while a tenant of the default
// shard is cleaned; once b is back, the waiting tenant completes.
func TestShardDownDelaysOnlyItsTenants(t *testing.T) {
	w := setupShards(t, []string{"b"}, "b")
	w.onShard(t, idA, "b", "b", 200)
	w.markedAndDrained(t, idB) // on the default shard
	if err := w.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	w.drainOn(t, idA, "b")
	w.proxies["b"].Cut()
	err := w.check(t, tenant.DrainCheck{ID: idA})
	if !errors.Is(err, tenant.ErrLater) && !errors.Is(err, tenant.ErrUnavailable) {
		t.Fatalf("drain check with its shard down: %v; want later", err)
	}
	if n := w.DBs.PublicRows(t, idA); n == 0 {
		t.Fatal("public rows deleted while its shard was down")
	}
	if err := w.check(t, tenant.DrainCheck{ID: idB}); err != nil {
		t.Fatalf("tenant of the default shard while b is down: %v", err)
	}
	w.waitOutcome(t, idB, tenant.OutcomeCleaned)
	if !strings.Contains(w.lastEvent(t, idB).Reason, "not reachable, not checked for a copy: b") {
		t.Errorf("cleaned event %q does not say shard b was not checked", w.lastEvent(t, idB).Reason)
	}
	w.proxies["b"].Restore()
	testenv.Eventually(t, 30*time.Second, func() bool { return w.check(t, tenant.DrainCheck{ID: idA}) == nil },
		"the tenant of shard b completes once b is back")
	w.waitOutcome(t, idA, tenant.OutcomeCleaned)
	if w.schemaOn(t, idA, "b") {
		t.Fatal("schema left on b")
	}
}

// TestStrayCopyIsDroppedWithTheTenant: a copy on a shard other than the
// placement is found and dropped too.
func TestStrayCopyIsDroppedWithTheTenant(t *testing.T) {
	w := setupShards(t, []string{"b", "c"})
	w.twoCopiesMarkedAndDrained(t, idA, "b", "b", "c", 300)
	if err := w.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	w.waitOutcome(t, idA, tenant.OutcomeCleaned)
	if w.schemaOn(t, idA, "b") || w.schemaOn(t, idA, "c") {
		t.Fatal("a copy is left")
	}
}

func (w *shardWorld) lastEvent(t *testing.T, id string) tenant.Event {
	t.Helper()
	var last tenant.Event
	for _, ev := range w.EventsWith(tenant.OutcomeCleaned) {
		if string(ev.TenantID) == id {
			last = ev
		}
	}
	return last
}

// TestShardOnAnotherServer: a shard on a PostgreSQL server of its own
// (started by the test, with a small lock table) gets the limits of that
// server: its store's lock budget comes from its own
// max_locks_per_transaction and max_connections, and a tenant there that
// exceeds it is dropped in batches, while the same tenant on the catalog
// goes in one transaction. Stopping that server makes only its tenants
// wait; once it is back they complete.
func TestShardOnAnotherServer(t *testing.T) {
	e := setup(t)
	server := testenv.StartPostgres(t, "max_locks_per_transaction=16", "max_connections=25")
	dbs := testenv.NewDatabasesOn(t, server.AdminURL)
	st, err := dataplane.New(context.Background(), dbs.Data, dataplane.Options{Shard: "far", NotCatalog: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Ensure(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	e.marker.Shards = map[string]*dataplane.Store{"far": st}
	e.cleaner.Shards = e.marker.Shards
	w := &shardWorld{env: e, shards: map[string]*testenv.Databases{"far": dbs}}
	if far, near := st.LockBudget(), e.cleaner.Data.LockBudget(); far != 200 || near <= far {
		t.Fatalf("lock budgets: far shard %d (want 200: its own lock table of 16 × 25 entries, at least 200), catalog %d", far, near)
	}
	// Alike tenants, one per server, each larger than the far lock budget.
	big := func(id string) testenv.Tenant {
		return testenv.Tenant{ID: id, Filler: 30, Pairs: 1, DocsPerPair: 2, LastQuery: testenv.DaysAgo(200)}
	}
	tn := big(idA)
	dbs.CreateTenant(t, tn)
	tn.Status, tn.NoSchema = tenant.StatusGatedAccess, true
	w.DBs.CreateTenant(t, tn)
	w.DBs.ExecData(t, `INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ($1, 'far')`, idA)
	tnB := big(idB)
	tnB.Status = tenant.StatusGatedAccess
	w.DBs.CreateTenant(t, tnB)
	for _, id := range []string{idA, idB} {
		if err := w.mark(t, id); err != nil {
			t.Fatal(err)
		}
	}
	w.drainOn(t, idA, "far")
	w.drainOn(t, idB, "default")

	// The far server stops: its tenant waits, the catalog's is cleaned.
	server.Stop()
	if err := w.check(t, tenant.DrainCheck{ID: idA}); !errors.Is(err, tenant.ErrLater) && !errors.Is(err, tenant.ErrUnavailable) {
		t.Fatalf("drain check with its server down: %v; want later", err)
	}
	if w.DBs.PublicRows(t, idA) == 0 || w.DBs.CountControl(t, `SELECT count(*) FROM tenant WHERE tenant_id = $1`, idA) != 1 {
		t.Fatal("rows of the waiting tenant were deleted")
	}
	if err := w.check(t, tenant.DrainCheck{ID: idB}); err != nil {
		t.Fatal(err)
	}
	w.waitOutcome(t, idB, tenant.OutcomeCleaned)
	if reason := w.lastEvent(t, idB).Reason; !strings.Contains(reason, " 1 transactions") {
		t.Errorf("catalog tenant: %q; want one drop transaction", reason)
	}

	// Back: the far tenant completes, dropped in batches within its
	// server's budget.
	server.Start()
	dbs.Data.Reset() // the test's own connections died with the server
	testenv.Eventually(t, 30*time.Second, func() bool { return w.check(t, tenant.DrainCheck{ID: idA}) == nil },
		"the far shard's tenant completes once its server is back")
	w.waitOutcome(t, idA, tenant.OutcomeCleaned)
	reason := w.lastEvent(t, idA).Reason
	if strings.Contains(reason, " 1 transactions") || !strings.Contains(reason, "transactions") {
		t.Errorf("far tenant: %q; want several drop transactions (its server's lock budget)", reason)
	}
	if dbs.SchemaExists(t, idA) || w.DBs.PublicRows(t, idA) != 0 {
		t.Fatal("the far tenant is not gone")
	}
}

// TestShardStepsAreTimedPerShard: a sharded cleaner times its per-tenant
// steps with the shard they ran on, and only configured shard names.
func TestShardStepsAreTimedPerShard(t *testing.T) {
	w := setupShards(t, []string{"b"})
	var mu sync.Mutex
	seen := map[string]bool{}
	w.cleaner.ObserveShardStep = func(step, shard string, _ time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		seen[step+"@"+shard] = true
	}
	w.onShard(t, idA, "b", "b", 200)
	if err := w.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	w.drainOn(t, idA, "b")
	if err := w.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"drop_schema@b", "drop_schema@default", "unlink_large_objects@b"} {
		if !seen[want] {
			t.Errorf("no %s timing; got %v", want, seen)
		}
	}
	for k := range seen {
		if shard := k[strings.Index(k, "@")+1:]; shard != "b" && shard != "default" {
			t.Errorf("timed on shard %q, not a configured shard", shard)
		}
	}
}

// TestLostWorkOnAnotherShardIsReconciled: the lost-work scan reads the
// records of every shard (a tenant's record is on the shard of its schema).
func TestLostWorkOnAnotherShardIsReconciled(t *testing.T) {
	w := setupShards(t, []string{"b"})
	w.onShard(t, idA, "b", "b", 200)
	w.shards["b"].ExecData(t, "INSERT INTO tenant_cleanup.progress (tenant_id, marked_at, last_marked_at) VALUES ($1, now(), now())", idA)
	r := &Reconciler{Stores: w.cleaner.Stores, Bus: w.Bus, Now: time.Now, Log: slog.New(slog.DiscardHandler)}
	if n, err := r.Reconcile(context.Background()); err != nil || n != 1 {
		t.Fatalf("lost-work scan scheduled %d, %v; want the tenant marked on shard b", n, err)
	}
	if !pendingChecks(t, w.env, idA) {
		t.Fatal("no drain check scheduled")
	}
}
