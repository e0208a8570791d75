package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

func ident(s string) string     { return pgx.Identifier{s}.Sanitize() }
func throughputID(i int) string { return fmt.Sprintf("tenant_b0000000-0000-4000-8000-%012x", i+1) }
func smallID(i int) string      { return fmt.Sprintf("tenant_d0000000-0000-4000-8000-%012x", i+1) }

func dbName(u string) string { p := must(url.Parse(u)); return strings.TrimPrefix(p.Path, "/") }

func (b *bench) exec(ctx context.Context, sql string, args ...any) {
	_, err := b.admin.Exec(ctx, sql, args...)
	check(err, sql)
}

var databases atomic.Int64

// newDatabase names a database of t's scope as testenv names its own
// (tc_<pid>_<n>), so that the next test run drops those of a bench that
// died.
func (b *bench) newDatabase(t *tb) string {
	name := fmt.Sprintf("tc_%d_%d", os.Getpid(), 1_000_000+databases.Add(1))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, _ = b.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)")
	})
	return name
}

// clone copies the throughput fleet into databases of t's scope with
// STRATEGY FILE_COPY (much faster than WAL_LOG for 100,000 relations), then
// settles the copy untimed (a checkpoint and sync(2)) so that the kernel
// does not write its dirty pages back during the measured run.
func (b *bench) clone(ctx context.Context, t *tb) *testenv.Databases {
	var urls []string
	for _, from := range []string{dbName(b.tpl.DataURL), dbName(b.tpl.ControlURL)} {
		until(ctx, 30*time.Second, "the template's sessions gone", func() bool {
			var n int
			check(b.admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", from).Scan(&n))
			return n == 0
		})
		name := b.newDatabase(t)
		b.exec(ctx, "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(from)+" STRATEGY FILE_COPY")
		urls = append(urls, testenv.DatabaseURL(name))
	}
	b.exec(ctx, "CHECKPOINT")
	syscall.Sync()
	return &testenv.Databases{DataURL: urls[0], ControlURL: urls[1], Data: testenv.Pool(t, urls[0]), Control: testenv.Pool(t, urls[1])}
}

// connect opens a session on u for t's scope, its configuration adjusted.
func connect(ctx context.Context, t *tb, u string, adjust func(*pgx.ConnConfig)) *pgx.Conn {
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
			if errs[w] = try(func() {
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

// craft gives every tenth tenant a Craft build_session (last used 150 days
// ago), so that the "build_session if present" paths run too.
func craft(i int) string {
	if i%10 == 9 {
		return "now() - interval '150 days'"
	}
	return "NULL"
}

// buildThroughputFleet builds the template of the throughput, load, profile
// and stores phases: eligible tenants of 13+filler tables (gated, created
// 400 days ago, last query 200 days ago), marked and drained as Onyx's
// background deletion leaves them, with 3 stray documents (the cleaner
// tolerates DRAIN_MAX_LEFTOVER_DOCS=5).
func (b *bench) buildThroughputFleet(ctx context.Context) {
	n, start := max(b.o.tenants, 2*b.o.storeTenants), time.Now()
	step("building the throughput fleet: %d drained tenants × %d tables", n, 13+b.o.filler)
	for i := range n {
		b.ids = append(b.ids, throughputID(i))
	}
	b.tpl = testenv.NewDatabases(b.t)
	b.build(ctx, b.tpl, n, func(data, control *pgx.Conn, i int) {
		id, s := b.ids[i], ident(b.ids[i])
		sql := fmt.Sprintf("SELECT fixture.create_tenant('%[1]s', 0); SELECT fixture.seed_tenant('%[1]s', 2, 1, 5, now() - interval '200 days', %[2]s);", id, craft(i))
		for from := 1; from <= b.o.filler; from += 65 { // at most about 1,200 locks per transaction
			sql += fmt.Sprintf("SELECT fixture.filler_table('%s', g) FROM generate_series(%d, %d) g;", id, from, min(from+64, b.o.filler))
		}
		sql += fmt.Sprintf(`UPDATE %[1]s.index_attempt SET cancellation_requested = true WHERE status = 'IN_PROGRESS';
			UPDATE %[1]s.index_attempt SET status = 'CANCELED' WHERE status = 'NOT_STARTED';
			UPDATE %[1]s.connector_credential_pair SET status = 'DELETING';`, s)
		_, err := data.Exec(ctx, sql)
		check(err, "create "+id)
		for left := int64(1); left > 0; {
			check(data.QueryRow(ctx, "SELECT fixture.drain_step($1, 1000) + (SELECT count(*) FROM "+s+".connector_credential_pair)", id).Scan(&left), "drain "+id)
		}
		_, err = data.Exec(ctx, "INSERT INTO "+s+".document (id, semantic_id, link, chunk_count) "+
			"SELECT 'stray-' || g, 'stray doc', 'https://example.com/stray-' || g, 1 FROM generate_series(1, 3) g")
		check(err)
		_, err = control.Exec(ctx, "SELECT fixture_control_tenant($1, 'GATED_ACCESS', now() - interval '400 days')", id)
		check(err)
	})
	b.tpl.Data.Close() // no session may be left on a template
	b.tpl.Control.Close()
	var size int64
	_ = b.admin.QueryRow(ctx, "SELECT pg_database_size($1)", dbName(b.tpl.DataURL)).Scan(&size)
	b.res.setupLine("throughput fleet: %d tenants × %d tables in %.0f s, data plane %.2f GiB", n, 13+b.o.filler,
		time.Since(start).Seconds(), float64(size)/(1<<30))
}

// growSmallFleet adds tenants [from, to) of the fixture's 13 tables to the
// analyzer fleet: eligible and not drained (pairs and documents left).
func (b *bench) growSmallFleet(ctx context.Context, from, to int) {
	if b.small == nil {
		b.small = testenv.NewDatabases(b.t)
	}
	const batch = 10
	start := time.Now()
	b.build(ctx, b.small, (to-from+batch-1)/batch, func(data, control *pgx.Conn, j int) {
		var sql strings.Builder
		var ids []string
		for i := from + j*batch; i < min(from+(j+1)*batch, to); i++ {
			ids = append(ids, smallID(i))
			fmt.Fprintf(&sql, "SELECT fixture.create_tenant('%[1]s', 0); SELECT fixture.seed_tenant('%[1]s', 2, 1, 5, now() - interval '200 days', %[2]s);", smallID(i), craft(i))
		}
		_, err := data.Exec(ctx, sql.String())
		check(err)
		_, err = control.Exec(ctx, "SELECT fixture_control_tenant(id, 'GATED_ACCESS', now() - interval '400 days') FROM unnest($1::text[]) id", ids)
		check(err)
	})
	b.res.setupLine("analyzer fleet: +%d tenants × 13 tables in %.0f s", to-from, time.Since(start).Seconds())
}

// build runs fn(0..n-1) two at a time, each call on fresh sessions
// (synchronous_commit off: nothing here must survive a crash): a session
// that created thousands of relations pays for every invalidation the
// other's DDL sends. Then it analyzes the catalogs (autovacuum may be off).
func (b *bench) build(ctx context.Context, d *testenv.Databases, n int, fn func(data, control *pgx.Conn, i int)) {
	syncOff := func(c *pgx.ConnConfig) { c.RuntimeParams["synchronous_commit"] = "off" }
	parallel(2, n, func(_, i int) {
		scope(func(t *tb) { fn(connect(ctx, t, d.DataURL, syncOff), connect(ctx, t, d.ControlURL, syncOff), i) })
	})
	_, err := d.Data.Exec(ctx, `ANALYZE pg_catalog.pg_class, pg_catalog.pg_attribute, pg_catalog.pg_depend,
		pg_catalog.pg_type, pg_catalog.pg_constraint, pg_catalog.pg_index, pg_catalog.pg_namespace, public.user_tenant_mapping`)
	check(err)
}
