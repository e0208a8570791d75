// Command demo runs the whole pipeline on this machine, on a demo fleet:
// it starts an embedded JetStream server (nats-server v2.15), creates an
// Onyx-like data plane and control plane from the fixture, seeds tenants of
// every kind, starts bin/marker and bin/cleaner as processes, runs
// bin/analyzer --once, sends manual requests with bin/tenantctl and a raw
// `nats pub`-style message, simulates Onyx's background deletion, and prints
// what happened to each tenant. Run it with `make demo`.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tenantcleanup/tenant-cleanup/fixtures/onyx"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

type demoTenant struct {
	id, kind string
	status   string // control-plane status; "" = no row
	created  int    // days ago
	query    int    // days since last USER query; 0 = never
	craft    int    // days since last Craft session; 0 = none
	filler   int
	noSchema bool // schema dropped by an interrupted cleanup (its drop on record)
	renamed  bool // schema renamed for maintenance: gone, without evidence
	// shard places the tenant (public.tenant_shard) on the demo's second
	// shard, where its schema is; moving: a copy stays on the default shard.
	shard  string
	moving bool
	expect tenant.Outcome
}

// shardB is the demo's second shard (ONYX_DB_SHARDS), a database of its own.
const shardB = "shard-b"

var fleet = []demoTenant{
	{id: "tenant_d0000001-0000-4000-8000-000000000001", kind: "gated, last query 200 days ago", status: "GATED_ACCESS", created: 400, query: 200, filler: 130, expect: tenant.OutcomeCleaned},
	{id: "tenant_d0000001-0000-4000-8000-000000000002", kind: "gated, never queried", status: "GATED_ACCESS", created: 300, filler: 130, expect: tenant.OutcomeCleaned},
	{id: "tenant_d0000001-0000-4000-8000-000000000003", kind: "gated, Craft 120 days ago", status: "GATED_ACCESS", created: 500, query: 300, craft: 120, filler: 130, expect: tenant.OutcomeCleaned},
	{id: "tenant_d0000001-0000-4000-8000-000000000004", kind: "gated, cleanup interrupted (schema gone)", status: "GATED_ACCESS", created: 400, query: 200, noSchema: true, expect: tenant.OutcomeCleaned},
	{id: "tenant_i-d00000000005", kind: "gated, tenant_i- id, never queried", status: "GATED_ACCESS", created: 400, filler: 20, expect: tenant.OutcomeCleaned},
	{id: "tenant_d0000002-0000-4000-8000-000000000001", kind: "paying (ACTIVE)", status: "ACTIVE", created: 400, query: 200, filler: 20, expect: tenant.OutcomeRefused},
	{id: "tenant_d0000002-0000-4000-8000-000000000002", kind: "grace period", status: "GRACE_PERIOD", created: 400, query: 200, filler: 20},
	{id: "tenant_d0000002-0000-4000-8000-000000000003", kind: "gated, queried 10 days ago", status: "GATED_ACCESS", created: 400, query: 10, filler: 20},
	{id: "tenant_d0000002-0000-4000-8000-000000000004", kind: "gated, Craft 3 days ago", status: "GATED_ACCESS", created: 400, query: 200, craft: 3, filler: 20},
	{id: "tenant_d0000002-0000-4000-8000-000000000005", kind: "gated, created 20 days ago", status: "GATED_ACCESS", created: 20, filler: 20},
	{id: "tenant_d0000002-0000-4000-8000-000000000006", kind: "no control-plane row", created: 400, query: 200, filler: 20},
	{id: "tenant_d0000002-0000-4000-8000-000000000007", kind: "gated, a public view depends on it", status: "GATED_ACCESS", created: 400, query: 200, filler: 20, expect: tenant.OutcomeRefused},
	{id: "tenant_d0000002-0000-4000-8000-000000000008", kind: "gated, schema renamed for maintenance", status: "GATED_ACCESS", created: 400, query: 5, filler: 20, renamed: true},
	{id: "tenant_d0000004-0000-4000-8000-000000000001", kind: "gated, on " + shardB, status: "GATED_ACCESS", created: 400, query: 200, filler: 20, shard: shardB, expect: tenant.OutcomeCleaned},
	{id: "tenant_d0000004-0000-4000-8000-000000000002", kind: "gated, being moved to " + shardB, status: "GATED_ACCESS", created: 400, query: 150, filler: 20, shard: shardB, moving: true, expect: tenant.OutcomeCleaned},
	{id: "tenant_d0000004-0000-4000-8000-000000000003", kind: "gated, on " + shardB + ", queried 5 days ago", status: "GATED_ACCESS", created: 400, query: 5, filler: 20, shard: shardB},
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	binDir := flag.String("bin", "bin", "directory holding analyzer, marker, cleaner and tenantctl")
	keep := flag.Bool("keep", false, "keep the demo databases and JetStream store afterwards")
	flag.Parse()
	admin := os.Getenv("DEMO_DATABASE_URL")
	if admin == "" {
		admin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	ctx, stop := signalContext()
	defer stop()
	start := time.Now()

	step("starting an embedded JetStream server (nats-server v2.15)")
	storeDir, err := os.MkdirTemp("", "tenant-cleanup-demo-js-")
	if err != nil {
		return err
	}
	ns, natsURL, err := startNATS(storeDir)
	if err != nil {
		return err
	}
	defer func() {
		ns.Shutdown()
		if !*keep {
			os.RemoveAll(storeDir)
		}
	}()
	fmt.Printf("    %s (store %s)\n", natsURL, storeDir)

	step("creating the data plane and control plane from fixtures/onyx")
	// Names of this run only: the demo never drops a database it did not
	// create in this run (a shared server may hold others' databases).
	run := uniqueSuffix()
	dataName, controlName := "tenant_cleanup_demo_"+run+"_data", "tenant_cleanup_demo_"+run+"_control"
	var created []string
	if !*keep {
		defer func() { dropDatabases(admin, created...) }()
	}
	dataURL, err := freshDatabase(ctx, admin, dataName, onyx.DataPlaneSQL, &created)
	if err != nil {
		return err
	}
	controlURL, err := freshDatabase(ctx, admin, controlName, onyx.ControlPlaneSQL, &created)
	if err != nil {
		return err
	}
	shardName := "tenant_cleanup_demo_" + run + "_shard_b"
	shardURL, err := freshDatabase(ctx, admin, shardName, onyx.DataPlaneSQL, &created)
	if err != nil {
		return err
	}
	fmt.Printf("    second shard %s: database %s (ONYX_DB_SHARDS)\n", shardB, shardName)
	fmt.Printf("    databases %s and %s (dropped at the end unless -keep)\n", dataName, controlName)
	data, err := pgxpool.New(ctx, dataURL)
	if err != nil {
		return err
	}
	defer data.Close()
	control, err := pgxpool.New(ctx, controlURL)
	if err != nil {
		return err
	}
	defer control.Close()
	shard, err := pgxpool.New(ctx, shardURL)
	if err != nil {
		return err
	}
	defer shard.Close()
	if err := seed(ctx, data, control, shard); err != nil {
		return err
	}
	fmt.Printf("    %d tenants, plus a schema named tenant_notes that is not a tenant\n", len(fleet))

	reportDir, err := os.MkdirTemp("", "tenant-cleanup-demo-report-")
	if err != nil {
		return err
	}
	env := append(os.Environ(), "DATA_PLANE_DATABASE_URL="+dataURL, "CONTROL_PLANE_DATABASE_URL="+controlURL,
		"NATS_URL="+natsURL, "DRAIN_CHECK_DELAY=2s", "DRAIN_CHECK_MAX_DELAY=4s", "ANALYZER_REPORT_DIR="+reportDir,
		"LOG_LEVEL=warn", "HTTP_ADDR=", // the demo serves no metrics: nothing to collide with on this machine
		`ONYX_DB_SHARDS={"`+shardB+`": {"db": "`+shardName+`"}}`)

	step("starting the stores outside PostgreSQL: an S3 file store and Redis (stores.go)")
	stores, err := startStores(ctx)
	if err != nil {
		return err
	}
	defer stores.close()
	env = append(env, stores.Env...)

	nc, err := nats.Connect(natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	events := &eventLog{last: map[string]tenant.Event{}}

	step("starting bin/marker and bin/cleaner (logs: JSON on their stderr, warnings and errors only here)")
	var services []*exec.Cmd
	for _, name := range []string{"marker", "cleaner"} {
		cmd := exec.Command(filepath.Join(*binDir, name))
		cmd.Env, cmd.Stdout, cmd.Stderr = env, os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s (run `make build` first): %w", name, err)
		}
		services = append(services, cmd)
	}
	defer func() {
		for _, cmd := range services {
			_ = cmd.Process.Kill()
		}
	}()
	// The services create the streams; follow the events once they exist.
	if err := waitFor(ctx, 30*time.Second, func() bool { return events.subscribe(nc) == nil }); err != nil {
		return fmt.Errorf("the services did not create the event stream: %w", err)
	}

	step("simulating Onyx's background deletion (fixture.drain_step, 3 documents per pair every 500ms)")
	go simulateDeletion(ctx, data)
	go simulateDeletion(ctx, shard)

	step("bin/analyzer --once")
	if err := runCmd(*binDir, env, "analyzer", "--once"); err != nil {
		return err
	}
	step("bin/tenantctl cleanup " + fleet[5].id + "   (a manual request for a paying tenant)")
	if err := runCmd(*binDir, env, "tenantctl", "cleanup", fleet[5].id); err != nil {
		return err
	}
	step("bin/tenantctl cleanup public   (refused before anything is published)")
	if err := runCmd(*binDir, env, "tenantctl", "cleanup", "public"); err == nil {
		return fmt.Errorf("tenantctl accepted public")
	}
	step(`nats pub tenant.cleanup.candidate 'x"; DROP SCHEMA public CASCADE; --'   (refused by the marker)`)
	if err := nc.Publish("tenant.cleanup.candidate", []byte(`x"; DROP SCHEMA public CASCADE; --`)); err != nil {
		return err
	}

	step("waiting for every tenant to reach its outcome")
	err = waitFor(ctx, 3*time.Minute, func() bool {
		for _, t := range fleet {
			if t.expect != "" && events.outcome(t.id) != t.expect {
				return false
			}
		}
		return events.invalidRefusals() > 0
	})
	if err != nil {
		return fmt.Errorf("not every tenant reached its outcome: %w", err)
	}

	step("stopping the services with SIGTERM")
	for i, cmd := range services {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("%s did not stop cleanly: %w", []string{"marker", "cleaner"}[i], err)
		}
	}
	services = nil

	if err := stores.sweepPast(*binDir, env, reportDir); err != nil {
		return err
	}
	if err := summary(ctx, data, control, shard, events, time.Since(start)); err != nil {
		return err
	}
	return stores.summary(ctx)
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }

func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signalNotify(ch)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func startNATS(storeDir string) (*server.Server, string, error) {
	ns, err := server.NewServer(&server.Options{ServerName: "demo", Host: "127.0.0.1", Port: -1,
		JetStream: true, StoreDir: storeDir, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, "", err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		return nil, "", fmt.Errorf("nats-server did not start")
	}
	return ns, fmt.Sprintf("nats://127.0.0.1:%d", ns.Addr().(*net.TCPAddr).Port), nil
}

func databaseURL(admin, name string) (string, error) {
	u, err := url.Parse(admin)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// uniqueSuffix names this run's databases: 8 random hex digits.
func uniqueSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freshDatabase creates the database name (which must not exist: it is
// never dropped first), appends it to created, and loads fixture into it.
func freshDatabase(ctx context.Context, admin, name, fixture string, created *[]string) (string, error) {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", fmt.Errorf("connect to PostgreSQL (set DEMO_DATABASE_URL): %w", err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", fmt.Errorf("create %s: %w", name, err)
	}
	*created = append(*created, name)
	dbURL, err := databaseURL(admin, name)
	if err != nil {
		return "", err
	}
	db, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return "", err
	}
	defer db.Close(ctx)
	if _, err := db.Exec(ctx, fixture); err != nil {
		return "", fmt.Errorf("load fixture into %s: %w", name, err)
	}
	return dbURL, nil
}

// dropDatabases drops the databases this run created (names), with the
// connections of this run's services.
func dropDatabases(admin string, names ...string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	for _, n := range names {
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n}.Sanitize()+" WITH (FORCE)")
	}
}

func daysAgo(n int) any {
	if n == 0 {
		return nil
	}
	return time.Now().Add(-time.Duration(n) * 24 * time.Hour)
}

func seed(ctx context.Context, data, control, shard *pgxpool.Pool) error {
	store, err := dataplane.New(ctx, data, dataplane.Options{})
	if err == nil {
		_, err = store.Ensure(ctx, false)
	}
	if err != nil {
		return err
	}
	for _, t := range fleet {
		if _, err := data.Exec(ctx, "SELECT fixture.create_tenant($1, $2)", t.id, t.filler); err != nil {
			return err
		}
		if _, err := data.Exec(ctx, "SELECT fixture.seed_tenant($1, 3, 2, 25, $2, $3)", t.id, daysAgo(t.query), daysAgo(t.craft)); err != nil {
			return err
		}
		if t.noSchema { // dropped by this pipeline, which crashed before deleting the rest
			if _, err := data.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{t.id}.Sanitize()+" CASCADE"); err != nil {
				return err
			}
			if _, err := data.Exec(ctx, `INSERT INTO tenant_cleanup.progress (tenant_id, requested_by, marked_at, last_marked_at,
				drop_started_at, drop_finished_at, relations_dropped) VALUES ($1, 'analyzer', now(), now(), now(), now(), 143)`, t.id); err != nil {
				return err
			}
		}
		if t.shard != "" { // its schema on the other shard; its public rows on the catalog
			if _, err := shard.Exec(ctx, "SELECT fixture.create_tenant($1, $2)", t.id, t.filler); err != nil {
				return err
			}
			if _, err := shard.Exec(ctx, "SELECT fixture.seed_tenant($1, 3, 2, 25, $2, $3)", t.id, daysAgo(t.query), daysAgo(t.craft)); err != nil {
				return err
			}
			if !t.moving {
				if _, err := data.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{t.id}.Sanitize()+" CASCADE"); err != nil {
					return err
				}
			}
			if _, err := data.Exec(ctx, "INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ($1, $2)", t.id, t.shard); err != nil {
				return err
			}
		}
		if t.renamed {
			if _, err := data.Exec(ctx, "ALTER SCHEMA "+pgx.Identifier{t.id}.Sanitize()+" RENAME TO maintenance_copy"); err != nil {
				return err
			}
		}
		if t.status != "" {
			if _, err := control.Exec(ctx, "SELECT fixture_control_tenant($1, $2, $3)", t.id, t.status, daysAgo(t.created)); err != nil {
				return err
			}
		}
	}
	_, err = data.Exec(ctx, `CREATE VIEW public.one_tenants_documents AS SELECT id FROM `+pgx.Identifier{fleet[11].id}.Sanitize()+`.document;
		CREATE SCHEMA tenant_notes; CREATE TABLE tenant_notes.notes (note text); INSERT INTO tenant_notes.notes VALUES ('not a tenant')`)
	return err
}

func simulateDeletion(ctx context.Context, data *pgxpool.Pool) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, t := range fleet {
			_, _ = data.Exec(ctx, "SELECT fixture.drain_step($1, 3)", t.id)
		}
	}
}

func runCmd(binDir string, env []string, name string, args ...string) error {
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, os.Stdout, os.Stdout
	return cmd.Run()
}

func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// eventLog prints events as they arrive and remembers the last per tenant.
type eventLog struct {
	mu      sync.Mutex
	last    map[string]tenant.Event
	invalid int
	sub     *nats.Subscription
}

func (e *eventLog) subscribe(nc *nats.Conn) error {
	js, err := nc.JetStream()
	if err != nil {
		return err
	}
	e.sub, err = js.Subscribe("tenant.cleanup.event.>", func(m *nats.Msg) {
		var ev tenant.Event
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		who := string(ev.TenantID)
		if who == "" {
			who = "input " + ev.Input
			e.invalid++
		} else if e.last[who].Outcome != tenant.OutcomeCleaned { // final: a later request is refused as "already cleaned"
			e.last[who] = ev
		}
		fmt.Printf("    event %-8s %s: %s\n", ev.Outcome, who, ev.Reason)
	}, nats.OrderedConsumer(), nats.DeliverAll())
	return err
}

func (e *eventLog) outcome(id string) tenant.Outcome {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last[id].Outcome
}

func (e *eventLog) invalidRefusals() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.invalid
}

func summary(ctx context.Context, data, control, shard *pgxpool.Pool, events *eventLog, took time.Duration) error {
	step(fmt.Sprintf("what happened to each tenant (in %s)", took.Round(time.Second)))
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tKIND\tOUTCOME\tSCHEMA\tPUBLIC ROWS\tCONTROL ROW\tLEDGER")
	sorted := append([]demoTenant(nil), fleet...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].expect > sorted[j].expect })
	for _, t := range sorted {
		var schema, controlRow, ledger bool
		var public int64
		if err := data.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),
			(SELECT count(*) FROM public.user_tenant_mapping WHERE tenant_id = $1)`, t.id).Scan(&schema, &public); err != nil {
			return err
		}
		var onShard bool
		if err := shard.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, t.id).Scan(&onShard); err != nil {
			return err
		}
		schema = schema || onShard
		if err := control.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenant WHERE tenant_id = $1),
			EXISTS (SELECT 1 FROM tenant_cleanup.ledger WHERE tenant_id = $1)`, t.id).Scan(&controlRow, &ledger); err != nil {
			return err
		}
		outcome := string(events.outcome(t.id))
		if outcome == "" {
			outcome = "untouched"
		}
		if ev := events.last[t.id]; ev.Outcome == tenant.OutcomeRefused {
			outcome += ": " + shorten(ev.Reason, 60)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", t.id, t.kind, outcome, yes(schema), public, yes(controlRow), yes(ledger))
	}
	tw.Flush()
	var notes int
	if err := data.QueryRow(ctx, "SELECT count(*) FROM tenant_notes.notes").Scan(&notes); err != nil {
		return err
	}
	fmt.Printf("\nnon-tenant schema tenant_notes: %d row(s), untouched; refused invalid inputs: %d\n", notes, events.invalidRefusals())
	return nil
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "-"
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
