package main

import (
	"context"
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

// fleet is a data plane and control plane pair of databases, by name.
type fleet struct{ data, control string }

func dbURL(name string) string { return testenv.DatabaseURL(name) }

func dbName(u string) string {
	p, _ := url.Parse(u)
	return strings.TrimPrefix(p.Path, "/")
}

var clones atomic.Int64

// admin runs sql on the maintenance database.
func admin(ctx context.Context, sql string, args ...any) error {
	return execOn(ctx, testenv.AdminURL(), sql, args...)
}

func execOn(ctx context.Context, u, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// newFleet is a fresh pair of databases loaded with the fixture (testenv's
// templates), with no connection left open, so that it can be a template.
func (b *bench) newFleet(ctx context.Context) fleet {
	d := testenv.NewDatabases(b.t)
	d.Data.Close()
	d.Control.Close()
	return fleet{dbName(d.DataURL), dbName(d.ControlURL)}
}

// clone copies the pair with STRATEGY FILE_COPY (much faster than WAL_LOG
// for a catalog of 100,000 relations), then settles: a checkpoint and
// sync(2), so that the copy's dirty pages are not written back during the
// measured run. Names follow testenv's tc_<pid>_<n>, so that an interrupted
// run's clones are dropped by the next test run; drop them with f.drop.
func (b *bench) clone(ctx context.Context, f fleet) fleet {
	var out fleet
	for i, tpl := range []string{f.data, f.control} {
		if err := waitIdle(ctx, tpl); err != nil {
			b.t.Fatal(err)
		}
		name := fmt.Sprintf("tc_%d_%d", os.Getpid(), 1_000_000+clones.Add(1))
		if err := admin(ctx, "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(tpl)+" STRATEGY FILE_COPY"); err != nil {
			b.t.Fatalf("clone %s: %v", tpl, err)
		}
		b.t.Cleanup(func() { dropDB(name) })
		if i == 0 {
			out.data = name
		} else {
			out.control = name
		}
	}
	if err := admin(ctx, "CHECKPOINT"); err != nil {
		b.t.Fatal(err)
	}
	syscall.Sync()
	return out
}

func (f fleet) drop() { dropDB(f.data); dropDB(f.control) }

func dropDB(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_ = admin(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)")
}

// waitIdle waits until no session is connected to the database (the
// backends of closed pools exit a moment after their clients).
func waitIdle(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, testenv.AdminURL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return poll(ctx, 30*time.Second, func() (bool, error) {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name).Scan(&n)
		return n == 0, err
	})
}

// poll calls cond every 20 ms until it is true, fails, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if ok || err != nil {
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

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func throughputID(i int) string { return fmt.Sprintf("tenant_b0000000-0000-4000-8000-%012x", i+1) }
func smallID(i int) string      { return fmt.Sprintf("tenant_d0000000-0000-4000-8000-%012x", i+1) }

// craft gives every tenth tenant a Craft build_session (last used 150 days
// ago), so that the "build_session if present" paths run too.
func craft(i int) string {
	if i%10 == 9 {
		return "now() - interval '150 days'"
	}
	return "NULL"
}

// buildThroughputFleet builds the template of the throughput, load, profile
// and stores phases: -tenants eligible tenants of 13+filler tables (gated,
// created 400 days ago, last query 200 days ago), marked and drained as
// Onyx's background deletion would leave them, with 3 stray documents
// (DRAIN_MAX_LEFTOVER_DOCS is 5). The catalogs are analyzed (autovacuum may
// be off).
func (b *bench) buildThroughputFleet(ctx context.Context) {
	n := max(b.o.tenants, 2*b.o.storeTenants)
	step("building the throughput fleet: %d drained tenants × %d tables", n, 13+b.o.filler)
	start := time.Now()
	f := b.newFleet(ctx)
	for i := range n {
		b.ids = append(b.ids, throughputID(i))
	}
	err := parallel(ctx, f, n, func(ctx context.Context, data, control *pgx.Conn, i int) error {
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
	if err != nil {
		b.t.Fatal(err)
	}
	analyzeCatalogs(ctx, b.t, f)
	b.tplData, b.tplControl = f.data, f.control
	var size int64
	_ = pgxQueryRow(ctx, testenv.AdminURL(), "SELECT pg_database_size($1)", []any{f.data}, &size)
	b.res.setup = append(b.res.setup, fmt.Sprintf("throughput fleet: %d tenants × %d tables in %.0f s, data plane %.2f GiB",
		n, 13+b.o.filler, time.Since(start).Seconds(), float64(size)/(1<<30)))
	info("%s", b.res.setup[len(b.res.setup)-1])
}

// growSmallFleet adds tenants [from, to) of the fixture's 13 tables to the
// analyzer fleet: eligible and not drained (pairs and documents left).
func (b *bench) growSmallFleet(ctx context.Context, from, to int) {
	if b.small.data == "" {
		b.small = b.newFleet(ctx)
	}
	start := time.Now()
	const batch = 5
	err := parallel(ctx, b.small, (to-from+batch-1)/batch, func(ctx context.Context, data, control *pgx.Conn, j int) error {
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
	if err != nil {
		b.t.Fatal(err)
	}
	analyzeCatalogs(ctx, b.t, b.small)
	b.res.setup = append(b.res.setup, fmt.Sprintf("analyzer fleet: +%d tenants × 13 tables in %.0f s", to-from, time.Since(start).Seconds()))
	info("%s", b.res.setup[len(b.res.setup)-1])
}

func analyzeCatalogs(ctx context.Context, t *tb, f fleet) {
	if err := execOn(ctx, dbURL(f.data), `ANALYZE pg_catalog.pg_class, pg_catalog.pg_attribute, pg_catalog.pg_depend,
		pg_catalog.pg_type, pg_catalog.pg_constraint, pg_catalog.pg_index, pg_catalog.pg_namespace, public.user_tenant_mapping`); err != nil {
		t.Fatal(err)
	}
}

func pgxQueryRow(ctx context.Context, u, sql string, args []any, dest ...any) error {
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}

// parallel runs fn(0..n-1) on two sessions per plane (synchronous_commit
// off: nothing here must survive a crash). Each session is replaced every
// 20 calls: a session that created thousands of relations pays more for
// every invalidation the other sessions' DDL sends.
func parallel(ctx context.Context, f fleet, n int, fn func(ctx context.Context, data, control *pgx.Conn, i int) error) error {
	var (
		next, done atomic.Int64
		wg         sync.WaitGroup
		errs       = make([]error, 2)
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	connect := func(name string) (*pgx.Conn, error) {
		c, err := pgx.Connect(ctx, dbURL(name))
		if err == nil {
			_, err = c.Exec(ctx, "SET synchronous_commit = off")
		}
		return c, err
	}
	for w := range errs {
		wg.Go(func() {
			var data, control *pgx.Conn
			defer func() {
				for _, c := range []*pgx.Conn{data, control} {
					if c != nil {
						c.Close(context.Background())
					}
				}
			}()
			for calls := 0; ctx.Err() == nil; calls++ {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if calls%20 == 0 {
					if data != nil {
						data.Close(ctx)
						control.Close(ctx)
					}
					if data, errs[w] = connect(f.data); errs[w] != nil {
						cancel()
						return
					}
					if control, errs[w] = connect(f.control); errs[w] != nil {
						cancel()
						return
					}
				}
				if errs[w] = fn(ctx, data, control, i); errs[w] != nil {
					cancel()
					return
				}
				if d := done.Add(1); d%100 == 0 {
					info("%d/%d", d, n)
				}
			}
		})
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		return fmt.Errorf("%w", errorsJoin(errs))
	}
	return ctx.Err()
}

func errorsJoin(errs []error) error {
	for _, e := range errs {
		if e != nil && e != context.Canceled {
			return e
		}
	}
	return errs[0]
}
