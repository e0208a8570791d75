package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// fleet creates n eligible tenants and returns their ids.
func (w *world) fleet(n, filler int, prefix string) []string {
	w.t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("tenant_%s%07x-0000-4000-8000-000000000000", prefix, i)
		w.DBs.CreateTenant(w.t, testenv.Tenant{ID: id, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200),
			Filler: filler, Pairs: 1, DocsPerPair: 3})
		ids = append(ids, id)
	}
	return ids
}

// bystanders creates tenants the pipeline must never touch, even when asked,
// and returns their state.
func (w *world) bystanders() map[string]testworld.State {
	w.t.Helper()
	out := map[string]testworld.State{}
	for i, status := range []string{"ACTIVE", "GRACE_PERIOD", tenant.StatusGatedAccess} {
		id := fmt.Sprintf("tenant_ffffffff-0000-4000-8000-%012d", i)
		tn := testenv.Tenant{ID: id, Status: status, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 3}
		if status == tenant.StatusGatedAccess {
			tn.LastQuery = testenv.DaysAgo(2)
		}
		w.DBs.CreateTenant(w.t, tn)
		out[id] = w.State(id)
	}
	return out
}

func (w *world) request(ids ...string) {
	w.t.Helper()
	for _, id := range ids {
		if err := w.Bus.PublishRequest(context.Background(), tenant.Request{ID: tenant.ID(id), RequestedBy: "test"}); err != nil {
			w.t.Fatal(err)
		}
	}
}

func (w *world) assertUntouched(before map[string]testworld.State) {
	w.t.Helper()
	for id, s := range before {
		if w.State(id) != s {
			w.t.Errorf("%s was changed", id)
		}
	}
}

// ledgerByCleaner counts ledger rows per cleaned_by.
func (w *world) ledgerByCleaner() map[string]int {
	w.t.Helper()
	rows, err := w.DBs.Control.Query(context.Background(), "SELECT cleaned_by, count(*) FROM tenant_cleanup.ledger GROUP BY 1")
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var by string
		var n int
		if err := rows.Scan(&by, &n); err != nil {
			w.t.Fatal(err)
		}
		out[by] = n
	}
	return out
}

func allCleaned(w *world, ids []string) bool {
	for _, id := range ids {
		if !w.Has(id, tenant.OutcomeCleaned) {
			return false
		}
	}
	return true
}

func dbName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func TestReplicasShareWorkWithinConnectionBudget(t *testing.T) {
	t.Parallel()
	bin := binaries(t)
	w := newWorld(t)
	w.Common(func(c *config.Common) { c.DBMaxConns = 3 })
	w.Cleaner.Concurrency, w.Marker.Concurrency = 1, 2 // a cleaner's pacer has one of its 3 connections
	ids := w.fleet(24, 2, "a")
	others := w.bystanders()
	w.DrainTenants(true, ids...)
	w.SimulateDeletion()
	const markers, cleaners, perReplica = 2, 3, 3
	for range markers {
		start(t, filepath.Join(bin, "marker"), w.Environ())
	}
	for range cleaners {
		start(t, filepath.Join(bin, "cleaner"), w.Environ())
	}
	var (
		mu      sync.Mutex
		maxConn = map[string]int64{}
	)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	go func() { // the most connections the services ever held, per database
		for watchCtx.Err() == nil {
			rows, err := w.DBs.Data.Query(watchCtx, `SELECT datname, count(*) FROM pg_stat_activity
				WHERE application_name LIKE 'tenant-cleanup-%' AND datname IN ($1, $2) GROUP BY 1`,
				dbName(w.DBs.DataURL), dbName(w.DBs.ControlURL))
			if err == nil {
				for rows.Next() {
					var db string
					var n int64
					if rows.Scan(&db, &n) == nil {
						mu.Lock()
						maxConn[db] = max(maxConn[db], n)
						mu.Unlock()
					}
				}
				rows.Close()
			}
			select {
			case <-watchCtx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	w.request(ids...)
	w.request(ids[:5]...) // some twice
	for id := range others {
		w.request(id)
	}
	for _, id := range ids {
		w.WaitFor(id, tenant.OutcomeCleaned, 90*time.Second)
	}
	stopWatch()
	for _, id := range ids {
		w.AssertCleaned(id)
	}
	w.assertUntouched(others)
	if by := w.ledgerByCleaner(); len(by) < 2 {
		t.Errorf("ledger rows by cleaner %v; want the work shared by several replicas", by)
	}
	mu.Lock()
	defer mu.Unlock()
	budget := int64((markers + cleaners) * perReplica)
	for db, n := range maxConn {
		if n > budget {
			t.Errorf("services held %d connections to %s; the budget is %d replicas × DB_MAX_CONNS %d = %d",
				n, db, markers+cleaners, perReplica, budget)
		}
	}
	if len(maxConn) != 2 {
		t.Errorf("connections seen on %v; want both databases watched", maxConn)
	}
}

// TestSIGKILLAnywhere kills analyzer, marker and cleaner processes with
// SIGKILL at random instants, again and again, restarting them each time (a
// restarted analyzer runs a pass at once, so passes are cut at any point,
// publishing included).
func TestSIGKILLAnywhere(t *testing.T) {
	t.Parallel()
	bin := binaries(t)
	w := newWorld(t)
	w.Marker.AckWait, w.Cleaner.AckWait = 2*time.Second, 2*time.Second
	ids := w.fleet(24, 20, "b")
	others := w.bystanders()
	w.DrainTenants(true, ids...)
	w.SimulateDeletion()
	procs := map[string]*proc{}
	names := []string{"analyzer-1", "marker-1", "marker-2", "cleaner-1", "cleaner-2"}
	launch := func(name string) {
		procs[name] = start(t, filepath.Join(bin, strings.Split(name, "-")[0]), w.Environ())
	}
	for _, n := range names {
		launch(n)
	}
	w.request(ids...)
	for id := range others {
		w.request(id)
	}
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("chaos seed %d", seed)
	kills := 0
	for kills < 40 && !allCleaned(w, ids) {
		time.Sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond) // chaos timing, not synchronisation
		name := names[rng.IntN(len(names))]
		_ = procs[name].cmd.Process.Signal(syscall.SIGKILL)
		procs[name].wait(t, 10*time.Second)
		launch(name)
		kills++
	}
	t.Logf("%d processes killed", kills)
	if kills < 6 {
		t.Fatalf("only %d kills before the work was done; the test proved little", kills)
	}
	w.WaitCleaned(90*time.Second, ids...)
	w.assertUntouched(others)
	analyzerRequests := 0
	for _, ev := range w.EventsWith(tenant.OutcomeRequested) {
		if ev.RequestedBy == "analyzer" {
			analyzerRequests++
		}
	}
	if analyzerRequests == 0 {
		t.Error("the analyzer published no candidate: its passes were not part of the chaos")
	}
}

// TestJetStreamKilledKeepsWork kills the JetStream server (a nats-server
// v2.15 process) with SIGKILL mid-run, with requests, schedules and drain
// checks in flight, and starts it again on the same file store.
func TestJetStreamKilledKeepsWork(t *testing.T) {
	t.Parallel()
	bin := binaries(t)
	addr := freeAddr(t)
	store := t.TempDir()
	startNATS := func() *proc { return startNATSServer(t, bin, addr, store) }
	server := startNATS()
	w := newWorldWith(t, testworld.Options{NATSURL: "nats://" + addr})
	w.survivesJetStreamOutage("e", func() {
		if err := server.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		server.wait(t, 10*time.Second)
		startNATS()
	})
}

// TestJetStreamRestartKeepsWork restarts the JetStream server on the same
// file store while requests, schedules and drain checks are in flight.
func TestJetStreamRestartKeepsWork(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.survivesJetStreamOutage("c", func() { w.JS.Restart() })
}

// survivesJetStreamOutage requests the cleanup of 12 tenants (ids starting
// with prefix), runs outage once half of them are marked (their drain checks
// scheduled, the other requests not yet marked), and checks that every
// tenant is still cleaned.
func (w *world) survivesJetStreamOutage(prefix string, outage func()) {
	w.t.Helper()
	w.SetCheckDelay(3 * time.Second)
	ids := w.fleet(12, 2, prefix)
	w.startServices()
	w.request(ids...)
	for _, id := range ids[:6] {
		w.WaitFor(id, tenant.OutcomeMarked, 30*time.Second)
	}
	outage()
	w.DrainTenants(true, ids...)
	w.WaitCleaned(90*time.Second, ids...)
}

// TestJetStreamClusterLosesANode runs on a three-node cluster with streams
// and buckets at three replicas and shuts down the work stream's leader
// mid-run.
func TestJetStreamClusterLosesANode(t *testing.T) {
	t.Parallel()
	cluster := testenv.StartJetStreamCluster(t, 3)
	w := newWorldWith(t, testworld.Options{NATSURL: cluster.URL, NATSReplicas: 3})
	w.SetCheckDelay(2 * time.Second)
	ids := w.fleet(12, 2, "d")
	w.startServices()
	// Every stream, and the streams behind the KV buckets, at replicas 3.
	for _, name := range []string{bus.StreamRequests, bus.StreamWork, bus.StreamEvents, bus.StreamDead,
		"KV_" + bus.BucketState, "KV_TENANT_CLEANUP_FAILURES"} {
		s, err := w.Bus.JetStream().Stream(context.Background(), name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("stream %s has %d replicas; want 3", name, r)
		}
	}
	info, err := w.Bus.JetStream().Stream(context.Background(), bus.StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	w.request(ids...)
	for _, id := range ids[:4] {
		w.WaitFor(id, tenant.OutcomeMarked, 30*time.Second)
	}
	leader := info.CachedInfo().Cluster.Leader
	stopped := false
	for _, s := range cluster.Nodes {
		if s.Name() == leader {
			s.Shutdown()
			stopped = true
			t.Logf("shut down %s, leader of %s", leader, bus.StreamWork)
		}
	}
	if !stopped {
		t.Fatalf("no node is the leader %q of %s", leader, bus.StreamWork)
	}
	w.DrainTenants(true, ids...)
	w.WaitCleaned(120*time.Second, ids...)
}

// TestPostgresRestart restarts the (private) PostgreSQL server while tenants
// are being marked, checked and cleaned.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	w := newWorldWith(t, testworld.Options{PostgresAdmin: pg.AdminURL})
	ids := w.fleet(10, 30, "e")
	w.DrainTenants(true, ids...)
	w.startServices()
	w.request(ids...)
	testenv.Eventually(t, 60*time.Second, func() bool {
		for _, id := range ids {
			if w.Has(id, tenant.OutcomeCleaned) {
				return true
			}
		}
		return false
	}, "a first tenant cleaned")
	pg.Restart()
	w.DBs.Data.Reset()
	w.DBs.Control.Reset()
	w.WaitCleaned(90*time.Second, ids...)
}

// TestControlPlaneOutage cuts the control plane off while drained tenants
// wait: nothing irreversible happens without a fresh read of their status,
// and the work resumes by itself when it comes back.
func TestControlPlaneOutage(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	proxy := testenv.StartProxy(t, "127.0.0.1:5432")
	w.Common(func(c *config.Common) {
		c.ControlPlaneURL = strings.Replace(w.DBs.ControlURL, "127.0.0.1:5432", proxy.Addr, 1)
	})
	ids := w.fleet(6, 2, "f")
	w.DrainTenants(true, ids...)
	w.startServices()
	w.request(ids...)
	for _, id := range ids {
		w.WaitFor(id, tenant.OutcomeMarked, 30*time.Second)
	}
	proxy.Cut()
	retries := func() int { return strings.Count(w.Logs.String(), "a dependency is unavailable") }
	testenv.Eventually(t, 30*time.Second, func() bool { return retries() >= 3 }, "the services retry while the control plane is unreachable")
	// Cleanups in flight at the cut have ended by now; from here on, with the
	// control plane unreachable, nothing may start.
	waiting := map[string]testworld.State{}
	for _, id := range ids {
		if w.DBs.SchemaExists(t, id) {
			waiting[id] = w.State(id)
		}
	}
	if len(waiting) == 0 {
		t.Fatal("every tenant was cleaned before the outage; the test proved nothing")
	}
	seen := retries()
	testenv.Eventually(t, 30*time.Second, func() bool { return retries() >= seen+3 }, "more retries during the outage")
	for id, s := range waiting {
		if w.State(id) != s {
			t.Errorf("%s changed while the control plane was unreachable", id)
		}
	}
	proxy.Restore()
	w.WaitCleaned(90*time.Second, ids...)
}

// TestLockBudget cleans, with two cleaners at once, two tenants whose schemas
// have more relations than PostgreSQL's shared lock table holds in one
// transaction, on a server with default settings.
func TestLockBudget(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	w := newWorldWith(t, testworld.Options{PostgresAdmin: pg.AdminURL})
	big := []string{"tenant_00000b16-0000-4000-8000-000000000001", "tenant_00000b16-0000-4000-8000-000000000002"}
	for _, id := range big {
		w.DBs.CreateTenant(t, testenv.Tenant{ID: id, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 3})
		w.DBs.ExecData(t, "CALL fixture.add_filler_tables($1, 1, 1000)", id)
	}
	small := w.fleet(3, 10, "0")
	// The premise: one DROP SCHEMA ... CASCADE of such a schema runs out of lock space.
	tx, err := w.DBs.Data.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(context.Background(), `DROP SCHEMA "`+big[0]+`" CASCADE`)
	_ = tx.Rollback(context.Background())
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "53200" {
		t.Fatalf("a single DROP SCHEMA of a 1000-table tenant: %v; want out of shared memory (53200)", err)
	}
	all := append(append([]string{}, big...), small...)
	w.DrainTenants(true, all...)
	w.startReplicas(1, 2)
	w.request(all...)
	w.WaitCleaned(180*time.Second, all...)
	for _, ev := range w.EventsWith(tenant.OutcomeCleaned) {
		if ev.TenantID == tenant.ID(big[0]) || ev.TenantID == tenant.ID(big[1]) {
			var relations, txs int
			if _, err := fmt.Sscanf(ev.Reason, "schema dropped (%d relations, %d transactions)", &relations, &txs); err != nil || txs < 4 {
				t.Errorf("%s: %q; want the drop spread over many transactions", ev.TenantID, ev.Reason)
			}
		}
	}
}
