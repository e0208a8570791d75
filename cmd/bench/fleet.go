package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

func ident(s string) string     { return pgx.Identifier{s}.Sanitize() }
func throughputID(i int) string { return fmt.Sprintf("tenant_b0000000-0000-4000-8000-%012x", i+1) }
func smallID(i int) string      { return fmt.Sprintf("tenant_d0000000-0000-4000-8000-%012x", i+1) }
func shardID(i int) string      { return fmt.Sprintf("tenant_e0000000-0000-4000-8000-%012x", i+1) }

// tenantIDs are the ids id(i) of the first n tenants of a fleet.
func tenantIDs(id func(int) string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = id(i)
	}
	return ids
}

func dbName(u string) string { p := must(url.Parse(u)); return strings.TrimPrefix(p.Path, "/") }

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// execSQL runs sql on db (a session or a pool).
func execSQL(ctx context.Context, db execer, sql string, args ...any) {
	_, err := db.Exec(ctx, sql, args...)
	check(err, strings.Join(strings.Fields(sql[:min(len(sql), 80)]), " "))
}

// clone copies the throughput fleet into databases of t's scope
// (testenv.CopyDatabase: a file copy) and settles the copy, untimed.
func (b *bench) clone(ctx context.Context, t *testenv.Outside) *testenv.Databases {
	var urls []string
	for _, from := range []string{dbName(b.tpl.DataURL), dbName(b.tpl.ControlURL)} {
		until(ctx, 30*time.Second, "the template's sessions gone", func() bool {
			var n int
			check(b.admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", from).Scan(&n))
			return n == 0
		})
		urls = append(urls, testenv.CopyDatabase(t, from))
	}
	settle(ctx, b.admin)
	return &testenv.Databases{DataURL: urls[0], ControlURL: urls[1], Data: testenv.Pool(t, urls[0]), Control: testenv.Pool(t, urls[1])}
}

// settle writes the servers' dirty pages (a checkpoint through a session of
// each) and the kernel's (sync(2)): no writeback of a setup in a measured run.
func settle(ctx context.Context, servers ...execer) {
	for _, db := range servers {
		execSQL(ctx, db, "CHECKPOINT")
	}
	syscall.Sync()
}

// connect opens a session on u for t's scope, its configuration adjusted.
func connect(ctx context.Context, t *testenv.Outside, u string, adjust func(*pgx.ConnConfig)) *pgx.Conn {
	cfg := must(pgx.ParseConfig(u))
	adjust(cfg)
	conn := must(pgx.ConnectConfig(ctx, cfg))
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// parallel calls fn(w, i) for every i in [0, n) on workers goroutines (w is
// the worker's number); it fails as the first call that failed.
func parallel(workers, n int, fn func(w, i int)) {
	var next atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			if errs[w] = testenv.Try(func() {
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					fn(w, i)
				}
			}); errs[w] != nil {
				next.Store(int64(n)) // the others stop too
			}
		})
	}
	wg.Wait()
	check(errors.Join(errs...))
}

// addTenants creates tenants [from, to) of d, batch per transaction, two at
// a time: gated, created 400 days ago, last query 200 days ago, every tenth
// with a Craft build_session used 150 days ago, each with what more(id)
// adds on the data plane. Fresh sessions per batch (synchronous_commit off):
// one that created thousands of relations pays for every invalidation the
// other's DDL sends. Then it analyzes the catalogs (autovacuum may be off).
func addTenants(ctx context.Context, d *testenv.Databases, id func(int) string, from, to, batch int, more func(id string) string) {
	syncOff := func(c *pgx.ConnConfig) { c.RuntimeParams["synchronous_commit"] = "off" }
	parallel(2, (to-from+batch-1)/batch, func(_, j int) {
		var sql strings.Builder
		var ids []string
		for i := from + j*batch; i < min(from+(j+1)*batch, to); i++ {
			craft := map[bool]string{true: "now() - interval '150 days'", false: "NULL"}[i%10 == 9]
			ids = append(ids, id(i))
			fmt.Fprintf(&sql, "SELECT fixture.create_tenant('%[1]s', 0); SELECT fixture.seed_tenant('%[1]s', 2, 1, 5, now() - interval '200 days', %[2]s);%[3]s",
				id(i), craft, more(id(i)))
		}
		testenv.Scope(func(t *testenv.Outside) {
			execSQL(ctx, connect(ctx, t, d.DataURL, syncOff), sql.String())
			execSQL(ctx, connect(ctx, t, d.ControlURL, syncOff),
				"SELECT fixture_control_tenant(id, 'GATED_ACCESS', now() - interval '400 days') FROM unnest($1::text[]) id", ids)
		})
	})
	execSQL(ctx, d.Data, `ANALYZE pg_catalog.pg_class, pg_catalog.pg_attribute, pg_catalog.pg_depend,
		pg_catalog.pg_type, pg_catalog.pg_constraint, pg_catalog.pg_index, pg_catalog.pg_namespace, public.user_tenant_mapping`)
}

// buildThroughputFleet builds the template of the throughput, load, profile
// and stores phases: tenants of 13+filler tables, drained.
func (b *bench) buildThroughputFleet(ctx context.Context) {
	n, start := max(b.o.tenants, 2*b.o.storeTenants), time.Now()
	step("building the throughput fleet: %d drained tenants × %d tables", n, 13+b.o.filler)
	b.ids, b.tpl = tenantIDs(throughputID, n), testenv.NewDatabases(b.t)
	addTenants(ctx, b.tpl, throughputID, 0, n, 1, b.drained)
	b.tpl.Data.Close() // no session may be left on a template
	b.tpl.Control.Close()
	var size int64
	_ = b.admin.QueryRow(ctx, "SELECT pg_database_size($1)", dbName(b.tpl.DataURL)).Scan(&size)
	b.res.setupLine("throughput fleet: %d tenants × %d tables in %.0f s, data plane %.2f GiB", n, 13+b.o.filler,
		time.Since(start).Seconds(), float64(size)/(1<<30))
}

// drained is the SQL that gives tenant id its filler tables and leaves it
// marked and drained as Onyx's background deletion leaves a tenant, with 3
// stray documents (the cleaner tolerates DRAIN_MAX_LEFTOVER_DOCS=5).
func (b *bench) drained(id string) string {
	var sql strings.Builder
	for from := 1; from <= b.o.filler; from += 65 { // at most about 1,200 locks per transaction
		fmt.Fprintf(&sql, "SELECT fixture.filler_table('%s', g) FROM generate_series(%d, %d) g;", id, from, min(from+64, b.o.filler))
	}
	fmt.Fprintf(&sql, `UPDATE %[1]s.index_attempt SET cancellation_requested = true WHERE status = 'IN_PROGRESS';
		UPDATE %[1]s.index_attempt SET status = 'CANCELED' WHERE status = 'NOT_STARTED';
		UPDATE %[1]s.connector_credential_pair SET status = 'DELETING';
		DO $$ BEGIN WHILE fixture.drain_step('%[2]s', 1000) + (SELECT count(*) FROM %[1]s.connector_credential_pair) > 0 LOOP END LOOP; END $$;
		INSERT INTO %[1]s.document (id, semantic_id, link, chunk_count)
		SELECT 'stray-' || g, 'stray doc', 'https://example.com/stray-' || g, 1 FROM generate_series(1, 3) g;`, ident(id), id)
	return sql.String()
}

// analyzerFleet builds the analyzer and memory fleet of 13-table tenants, not
// drained (pairs and documents left): half, an analyzer pass, then the rest.
func (b *bench) analyzerFleet(ctx context.Context) {
	n := b.o.analyzerTenants
	b.small = testenv.NewDatabases(b.t)
	for _, half := range [][2]int{{0, n / 2}, {n / 2, n}} {
		if half[0] > 0 {
			b.halfTook, _, b.analyzerRSS[0] = b.analyzerPass(ctx)
		}
		start := time.Now()
		addTenants(ctx, b.small, smallID, half[0], half[1], 10, func(string) string { return "" })
		b.res.setupLine("analyzer fleet: +%d tenants × 13 tables in %.0f s", half[1]-half[0], time.Since(start).Seconds())
	}
}

// addBystanders gives d tenants from..to (smallID) that every pass of the
// analyzer lists but need not read, as most of a real fleet: an empty schema
// and an ACTIVE control-plane row each.
func addBystanders(ctx context.Context, d *testenv.Databases, from, to int) {
	execSQL(ctx, d.Data, `DO $$ DECLARE i int; BEGIN
		FOR i IN `+fmt.Sprint(from)+`..`+fmt.Sprint(to-1)+` LOOP
			EXECUTE format('CREATE SCHEMA %I', 'tenant_d0000000-0000-4000-8000-' || lpad(to_hex(i + 1), 12, '0'));
		END LOOP; END $$`)
	execSQL(ctx, d.Control, `SELECT count(fixture_control_tenant('tenant_d0000000-0000-4000-8000-' || lpad(to_hex(i + 1), 12, '0'),
		'ACTIVE', now() - interval '400 days')) FROM generate_series($1::int, $2::int - 1) i`, from, to)
	execSQL(ctx, d.Data, "ANALYZE pg_catalog.pg_namespace")
}

// The raw statements of one cleanup, in the fewest round trips that still do
// every piece of work of a cleanup: 2 on the control plane, 5 on the data
// plane (6 for a tenant with Craft), each its own implicit transaction.
// %[1]s is the quoted schema.
const (
	floorLedger = `CREATE TABLE IF NOT EXISTS public.bench_floor_ledger (tenant_id text PRIMARY KEY,
    cleaned_at timestamptz NOT NULL DEFAULT now(), documents bigint, users bigint, last_activity_at timestamptz,
    tenant_created_at timestamptz, application_status text, stripe_customer_id text, public_rows_deleted bigint,
    control_rows_deleted jsonb)`
	floorStatus   = `SELECT application_status, created_at FROM public.tenant WHERE tenant_id = $1`
	floorActivity = `SELECT (SELECT max(time_sent) FROM %[1]s.chat_message WHERE message_type = 'USER'),
       (SELECT count(*) FROM %[1]s.document), (SELECT count(*) FROM %[1]s."user"), to_regclass($1) IS NOT NULL`
	floorCraft = `SELECT max(last_activity_at) FROM %[1]s.build_session`
	floorMark  = `WITH canceled AS (
    UPDATE %[1]s.index_attempt SET status = 'CANCELED', time_updated = now() WHERE status = 'NOT_STARTED' RETURNING 1
), stopping AS (
    UPDATE %[1]s.index_attempt SET cancellation_requested = true, time_updated = now()
    WHERE status = 'IN_PROGRESS' AND cancellation_requested IS NOT TRUE RETURNING 1
), deleting AS (
    UPDATE %[1]s.connector_credential_pair SET status = 'DELETING' WHERE status <> 'DELETING' RETURNING 1
) SELECT (SELECT count(*) FROM canceled) + (SELECT count(*) FROM stopping) + (SELECT count(*) FROM deleting)`
	floorDrain = `SELECT (SELECT count(*) FROM %[1]s.connector_credential_pair),
       (SELECT count(*) FROM (SELECT 1 FROM %[1]s.document LIMIT 6) d)`
	floorDrop    = `DROP SCHEMA %[1]s CASCADE`
	floorControl = `WITH n AS (DELETE FROM public.tenant_notification WHERE tenant_id = $1 RETURNING 1),
     c AS (DELETE FROM public.tenant_config WHERE tenant_id = $1 RETURNING 1),
     s AS (DELETE FROM public.subscription WHERE tenant_id = $1 RETURNING 1),
     t AS (DELETE FROM public.tenant WHERE tenant_id = $1 RETURNING created_at, application_status, stripe_customer_id)
INSERT INTO public.bench_floor_ledger (tenant_id, documents, users, last_activity_at, tenant_created_at,
    application_status, stripe_customer_id, public_rows_deleted, control_rows_deleted)
SELECT $1, $2, $3, $4, t.created_at, t.application_status, t.stripe_customer_id, $5, jsonb_build_object(
    'tenant_notification', (SELECT count(*) FROM n), 'tenant_config', (SELECT count(*) FROM c),
    'subscription', (SELECT count(*) FROM s), 'tenant', 1) FROM t`
)

// floorPublic deletes the tenant's rows of public in one statement.
const floorPublic = `WITH d0 AS (DELETE FROM public.user_tenant_mapping_oauth_account WHERE tenant_id = $1 RETURNING 1),
     d1 AS (DELETE FROM public.user_tenant_mapping WHERE tenant_id = $1 RETURNING 1),
     d2 AS (DELETE FROM public.tenant_shard WHERE tenant_id = $1 RETURNING 1),
     d3 AS (DELETE FROM public.tenant_anonymous_user_path WHERE tenant_id = $1 RETURNING 1),
     d4 AS (DELETE FROM public.tenant_invite_counter WHERE tenant_id = $1 RETURNING 1),
     d5 AS (DELETE FROM public.tenant_sso_domain WHERE tenant_id = $1 RETURNING 1)
SELECT (SELECT count(*) FROM d0) + (SELECT count(*) FROM d1) + (SELECT count(*) FROM d2) + (SELECT count(*) FROM d3) +
    (SELECT count(*) FROM d4) + (SELECT count(*) FROM d5)`

// runFloor cleans ids from d with the raw SQL of a cleanup on two sessions
// (a data-plane and a control-plane connection each) taking tenants from a
// shared queue: when it started and how long it took.
func runFloor(ctx context.Context, t *testenv.Outside, d *testenv.Databases, ids []string) (time.Time, time.Duration) {
	execSQL(ctx, d.Control, floorLedger)
	oneTrip := func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeExec } // the statements differ per tenant
	var conns [2][2]*pgx.Conn
	for i := range conns {
		conns[i] = [2]*pgx.Conn{connect(ctx, t, d.DataURL, oneTrip), connect(ctx, t, d.ControlURL, oneTrip)}
	}
	start := time.Now()
	parallel(len(conns), len(ids), func(w, i int) { floorCleanup(ctx, conns[w][0], conns[w][1], ids[i]) })
	took := time.Since(start)
	verifyGone(t, d, "public.bench_floor_ledger", ids)
	return start, took
}

// floorCleanup cleans id; it fails (check) on an error or a tenant that is
// not eligible or not drained.
func floorCleanup(ctx context.Context, data, control *pgx.Conn, id string) {
	s := ident(id)
	var (
		status          string
		created         time.Time
		last, lastCraft *time.Time
		docs, users     int64
		hasCraft        bool
		changed, pairs  int64
		left, public    int64
	)
	check(control.QueryRow(ctx, floorStatus, id).Scan(&status, &created), id)
	check(data.QueryRow(ctx, fmt.Sprintf(floorActivity, s), s+".build_session").Scan(&last, &docs, &users, &hasCraft), id)
	if hasCraft {
		check(data.QueryRow(ctx, fmt.Sprintf(floorCraft, s)).Scan(&lastCraft), id)
		if lastCraft != nil && (last == nil || lastCraft.After(*last)) {
			last = lastCraft
		}
	}
	cutoff := time.Now().Add(-90 * 24 * time.Hour)
	if status != "GATED_ACCESS" || !created.Before(cutoff) || (last != nil && !last.Before(cutoff)) {
		check(fmt.Errorf("not eligible (status %s, created %s, last activity %v)", status, created, last), id)
	}
	check(data.QueryRow(ctx, fmt.Sprintf(floorMark, s)).Scan(&changed), id)
	check(data.QueryRow(ctx, fmt.Sprintf(floorDrain, s)).Scan(&pairs, &left), id)
	if pairs > 0 || left > 5 {
		check(fmt.Errorf("not drained: %d pairs, %d documents", pairs, left), id)
	}
	_, err := data.Exec(ctx, fmt.Sprintf(floorDrop, s))
	// Out of shared memory: the lock table is shared with whatever else
	// runs on the server (other engineers' tests): try again.
	var pgErr *pgconn.PgError
	for attempt := 0; errors.As(err, &pgErr) && pgErr.Code == "53200" && attempt < 20; attempt++ {
		_, err = data.Exec(ctx, fmt.Sprintf(floorDrop, s))
	}
	check(err, id)
	check(data.QueryRow(ctx, floorPublic, id).Scan(&public), id)
	_, err = control.Exec(ctx, floorControl, id, docs, users, last, public)
	check(err, id)
}

// verifyGone checks that d has neither the schema, nor public or
// control-plane rows of any of ids left, and one ledger row for each.
func verifyGone(t *testenv.Outside, d *testenv.Databases, ledger string, ids []string) {
	for _, id := range ids {
		if d.SchemaExists(t, id) || d.PublicRows(t, id) != 0 || d.ControlRows(t, id) != "----" ||
			d.CountControl(t, "SELECT count(*) FROM "+ledger+" WHERE tenant_id = $1", id) != 1 {
			t.Fatalf("%s is not cleaned", id)
		}
	}
}
