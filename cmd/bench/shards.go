package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

func shardID(i int) string { return fmt.Sprintf("tenant_e0000000-0000-4000-8000-%012x", i+1) }

// shards: the same fleet of drained tenants cleaned by bin/marker and
// bin/cleaner (PACE=off: the pacer samples the catalog shard only), first on
// one shard, then split over two PostgreSQL servers: every other tenant's
// schema on a second server the bench starts (initdb in a temporary
// directory, the first server's settings, another loopback port), placed
// there the Onyx way (a public.tenant_shard row on the catalog shard, the
// shard in ONYX_DB_SHARDS). Each fleet is built fresh and settled untimed.
func (b *bench) shards(ctx context.Context) {
	n := b.o.shardTenants
	ids, far := make([]string, n), map[string]bool{}
	for i := range ids {
		ids[i], far[shardID(i)] = shardID(i), i%2 == 1 // alternating: the requests reach both shards
	}
	step("shards: %d drained tenants × %d tables on one shard, then split over two servers", n, 13+b.o.filler)
	var took [2]time.Duration
	scope(func(t *tb) {
		start, d := time.Now(), testenv.NewDatabases(t)
		addTenants(ctx, d, shardID, 0, n, 1, b.drained)
		b.res.setupLine("shards, one shard: %d tenants × %d tables in %.0f s", n, 13+b.o.filler, time.Since(start).Seconds())
		settle(ctx, b.admin)
		took[0] = b.runPipeline(ctx, d, ids, "PACE=off").took
		info("one shard:  %d tenants in %5.1f s: %4.0f tenants/min", n, took[0].Seconds(), perMin(n, took[0]))
	})
	scope(func(t *tb) {
		start := time.Now()
		rows, _ := b.admin.Query(ctx, "SELECT name || '=' || setting FROM pg_settings WHERE name = ANY($1)", serverSettings)
		server := testenv.StartPostgres(t, must(pgx.CollectRows(rows, pgx.RowTo[string]))...)
		d, other := testenv.NewDatabases(t), testenv.NewDatabasesOn(t, server.AdminURL)
		addTenants(ctx, d, shardID, 0, n, 1, func(id string) string {
			if far[id] { // its public and control-plane rows here, its schema there
				return fmt.Sprintf("DROP SCHEMA %s CASCADE; INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ('%s', 'far');", ident(id), id)
			}
			return b.drained(id)
		})
		addTenants(ctx, other, func(i int) string { return shardID(2*i + 1) }, 0, n/2, 1, b.drained)
		b.res.setupLine("shards, split: a second server on port %d, %d + %d tenants in %.0f s", server.Port, n-n/2, n/2, time.Since(start).Seconds())
		settle(ctx, b.admin, other.Data)
		took[1] = b.runPipeline(ctx, d, ids, "PACE=off", fmt.Sprintf(`ONYX_DB_SHARDS={"far": {"host": "127.0.0.1", "port": %d, "db": %q, "user": "postgres"}}`,
			server.Port, dbName(other.DataURL))).took
		if left := other.CountData(t, "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)", ids); left != 0 {
			check(fmt.Errorf("%d tenant schemas left on the second server", left))
		}
		info("two servers: %d tenants in %5.1f s: %4.0f tenants/min", n, took[1].Seconds(), perMin(n, took[1]))
	})
	s := b.res.section("SHARDS: %d drained tenants × %d tables, bin/marker + bin/cleaner (PACE=off), on one shard, then every other tenant on a second PostgreSQL server",
		n, 13+b.o.filler).table("  %-36s %12.0f %8.2f", "run", "tenants/min", "× one")
	s.row("one shard (one server)", perMin(n, took[0]), 1.0)
	s.row("two shards on two servers", perMin(n, took[1]), ratio(took[0], took[1]))
	s.add("  on this %d-CPU machine both servers, the services and the bench share the CPU: the ratio is bounded by it, not by what a second server adds", runtime.NumCPU())
}
