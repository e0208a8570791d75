package service

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// countingTracer counts the queries it sees.
type countingTracer struct{ queries atomic.Int64 }

func (c *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.queries.Add(1)
	return ctx
}

func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestQueryTracerIsSetOnEveryShard: Open under WithQueryTracer traces the
// statements of the data-plane pool of every shard (each store reads its
// server's lock table size when it opens); without, nothing is traced.
func TestQueryTracerIsSetOnEveryShard(t *testing.T) {
	catalog, other := testenv.NewDatabases(t), testenv.NewDatabases(t)
	var cfg config.Common
	config.Defaults(&cfg)
	cfg.DataPlaneURL = catalog.DataURL
	cfg.ShardsJSON = `{"b": {"db": "` + dbName(t, other.DataURL) + `"}}`
	log := slog.New(slog.DiscardHandler)
	tracer := &countingTracer{}
	var traced int64
	for i, ctx := range []context.Context{WithQueryTracer(context.Background(), tracer), context.Background()} {
		env, err := Open(ctx, "test", &cfg, What{Data: true, ReadOnly: true}, log, false)
		if err != nil {
			t.Fatal(err)
		}
		env.Close()
		n := tracer.queries.Load()
		if i == 0 && n < 2 || i == 1 && n != traced {
			t.Errorf("open %d: %d queries traced so far; want at least one per shard with the tracer, none more without", i, n)
		}
		traced = n
	}
}

func dbName(t *testing.T, url string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Database
}
