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

// fleet is a data-plane and control-plane pair of databases, by name.
type fleet struct{ data, control string }

func dbURL(name string) string  { return testenv.DatabaseURL(name) }
func ident(s string) string     { return pgx.Identifier{s}.Sanitize() }
func throughputID(i int) string { return fmt.Sprintf("tenant_b0000000-0000-4000-8000-%012x", i+1) }
func smallID(i int) string      { return fmt.Sprintf("tenant_d0000000-0000-4000-8000-%012x", i+1) }

var databases atomic.Int64

// newDatabase names a database of this run as testenv names its own
// (tc_<pid>_<n>), so that the next test run drops those of a bench that
// died; it is dropped when the bench ends.
func (b *bench) newDatabase() string {
	name := fmt.Sprintf("tc_%d_%d", os.Getpid(), 1_000_000+databases.Add(1))
	b.t.Cleanup(func() { dropDB(name) })
	return name
}

func dropDB(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_ = execOn(ctx, testenv.AdminURL(), "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)")
}

func (f fleet) drop() { dropDB(f.data); dropDB(f.control) }

func execOn(ctx context.Context, u, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

func queryRow(ctx context.Context, u, sql string, args []any, dest ...any) error {
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}

// newFleet is a pair of databases loaded with the fixture (testenv's
// templates), with no session left open on them, so that it can be cloned.
func (b *bench) newFleet() fleet {
	d := testenv.NewDatabases(b.t)
	d.Data.Close()
	d.Control.Close()
	name := func(u string) string { p, _ := url.Parse(u); return strings.TrimPrefix(p.Path, "/") }
	return fleet{name(d.DataURL), name(d.ControlURL)}
}

// clone copies the pair with STRATEGY FILE_COPY (much faster than WAL_LOG
// for 100,000 relations), then settles it untimed, a checkpoint and
// sync(2): otherwise the kernel writes the copy's gigabyte of dirty pages
// back during the measured run.
func (b *bench) clone(ctx context.Context, f fleet) fleet {
	out := fleet{b.newDatabase(), b.newDatabase()}
	for _, c := range [][2]string{{f.data, out.data}, {f.control, out.control}} {
		err := poll(ctx, 30*time.Second, func() (bool, error) { // the template's last sessions exiting
			var n int
			err := queryRow(ctx, testenv.AdminURL(), "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", []any{c[0]}, &n)
			return n == 0, err
		})
		if err == nil {
			err = execOn(ctx, testenv.AdminURL(), "CREATE DATABASE "+ident(c[1])+" TEMPLATE "+ident(c[0])+" STRATEGY FILE_COPY")
		}
		if err != nil {
			b.t.Fatalf("clone %s: %v", c[0], err)
		}
	}
	if err := execOn(ctx, testenv.AdminURL(), "CHECKPOINT"); err != nil {
		b.t.Fatal(err)
	}
	syscall.Sync()
	return out
}

// poll calls cond every 20 ms until it is true or fails, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok, err := cond(); ok || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
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
	f := b.newFleet()
	for i := range n {
		b.ids = append(b.ids, throughputID(i))
	}
	b.build(ctx, f, n, func(ctx context.Context, data, control *pgx.Conn, i int) error {
		id, s := b.ids[i], ident(b.ids[i])
		sql := fmt.Sprintf("SELECT fixture.create_tenant('%[1]s', 0); SELECT fixture.seed_tenant('%[1]s', 2, 1, 5, now() - interval '200 days', %[2]s);", id, craft(i))
		for from := 1; from <= b.o.filler; from += 65 { // at most about 1,200 locks per transaction
			sql += fmt.Sprintf("SELECT fixture.filler_table('%s', g) FROM generate_series(%d, %d) g;", id, from, min(from+64, b.o.filler))
		}
		sql += fmt.Sprintf(`UPDATE %[1]s.index_attempt SET cancellation_requested = true WHERE status = 'IN_PROGRESS';
			UPDATE %[1]s.index_attempt SET status = 'CANCELED' WHERE status = 'NOT_STARTED';
			UPDATE %[1]s.connector_credential_pair SET status = 'DELETING';`, s)
		if _, err := data.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create %s: %w", id, err)
		}
		for left := int64(1); left > 0; {
			if err := data.QueryRow(ctx, "SELECT fixture.drain_step($1, 1000) + (SELECT count(*) FROM "+s+".connector_credential_pair)", id).Scan(&left); err != nil {
				return fmt.Errorf("drain %s: %w", id, err)
			}
		}
		if _, err := data.Exec(ctx, "INSERT INTO "+s+".document (id, semantic_id, link, chunk_count) "+
			"SELECT 'stray-' || g, 'stray doc', 'https://example.com/stray-' || g, 1 FROM generate_series(1, 3) g"); err != nil {
			return err
		}
		_, err := control.Exec(ctx, "SELECT fixture_control_tenant($1, 'GATED_ACCESS', now() - interval '400 days')", id)
		return err
	})
	b.tplData, b.tplControl = f.data, f.control
	var size int64
	_ = queryRow(ctx, testenv.AdminURL(), "SELECT pg_database_size($1)", []any{f.data}, &size)
	b.res.setupLine("throughput fleet: %d tenants × %d tables in %.0f s, data plane %.2f GiB", n, 13+b.o.filler,
		time.Since(start).Seconds(), float64(size)/(1<<30))
}

// growSmallFleet adds tenants [from, to) of the fixture's 13 tables to the
// analyzer fleet: eligible and not drained (pairs and documents left).
func (b *bench) growSmallFleet(ctx context.Context, from, to int) {
	if b.small.data == "" {
		b.small = b.newFleet()
	}
	const batch = 10
	start := time.Now()
	b.build(ctx, b.small, (to-from+batch-1)/batch, func(ctx context.Context, data, control *pgx.Conn, j int) error {
		var sql strings.Builder
		var ids []string
		for i := from + j*batch; i < min(from+(j+1)*batch, to); i++ {
			ids = append(ids, smallID(i))
			fmt.Fprintf(&sql, "SELECT fixture.create_tenant('%[1]s', 0); SELECT fixture.seed_tenant('%[1]s', 2, 1, 5, now() - interval '200 days', %[2]s);", smallID(i), craft(i))
		}
		if _, err := data.Exec(ctx, sql.String()); err != nil {
			return err
		}
		_, err := control.Exec(ctx, "SELECT fixture_control_tenant(id, 'GATED_ACCESS', now() - interval '400 days') FROM unnest($1::text[]) id", ids)
		return err
	})
	b.res.setupLine("analyzer fleet: +%d tenants × 13 tables in %.0f s", to-from, time.Since(start).Seconds())
}

// build runs fn(0..n-1) two at a time, each call on fresh sessions
// (synchronous_commit off: nothing here must survive a crash): a session
// that created thousands of relations pays for every invalidation the
// other's DDL sends. Then it analyzes the catalogs (autovacuum may be off).
func (b *bench) build(ctx context.Context, f fleet, n int, fn func(ctx context.Context, data, control *pgx.Conn, i int) error) {
	var (
		next   atomic.Int64
		failed atomic.Bool
		wg     sync.WaitGroup
		errs   = make([]error, 2)
	)
	call := func(i int) error {
		var conns [2]*pgx.Conn
		for j, name := range []string{f.data, f.control} {
			cfg, err := pgx.ParseConfig(dbURL(name))
			if err != nil {
				return err
			}
			cfg.RuntimeParams["synchronous_commit"] = "off"
			if conns[j], err = pgx.ConnectConfig(ctx, cfg); err != nil {
				return err
			}
			defer conns[j].Close(context.Background())
		}
		return fn(ctx, conns[0], conns[1], i)
	}
	for w := range errs {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && !failed.Load(); i = int(next.Add(1) - 1) {
				if errs[w] = call(i); errs[w] != nil {
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.t.Fatal(err)
	}
	if err := execOn(ctx, dbURL(f.data), `ANALYZE pg_catalog.pg_class, pg_catalog.pg_attribute, pg_catalog.pg_depend,
		pg_catalog.pg_type, pg_catalog.pg_constraint, pg_catalog.pg_index, pg_catalog.pg_namespace, public.user_tenant_mapping`); err != nil {
		b.t.Fatal(err)
	}
}
