package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

const bucket = "onyx-file-store-bucket"

// stores: the cost per tenant of files and keys. The cleaner is configured
// with S3 (gofakes3 served over HTTP by testenv.StartS3) and Redis
// (testenv.StartRedis) as Onyx configures them, PACE=off. It cleans
// -store-tenants tenants without files or keys, then as many with -files
// objects in S3 (recorded in file_record), -files large objects and -keys
// Redis keys each, plus both memberships; the difference per tenant is the
// cost of the files and keys.
func (b *bench) stores(ctx context.Context) error {
	k := b.o.storeTenants
	plain, loaded := b.ids[:k], b.ids[k:2*k]
	step("stores: %d tenants without, %d with %d S3 files + %d large objects + %d Redis keys each", k, k, b.o.files, b.o.files, b.o.keys)
	f := b.clone(ctx, fleet{b.tplData, b.tplControl})
	defer f.drop()
	s3 := testenv.StartS3(b.t, bucket)
	rs := testenv.StartRedis(b.t)
	client := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer client.Close()
	start := time.Now()
	conn, err := pgx.Connect(ctx, dbURL(f.data))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, id := range loaded {
		rows, err := conn.Query(ctx, "SELECT fixture.add_files($1, $2, 's3', $3)", id, b.o.files, bucket)
		if err != nil {
			return err
		}
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, key := range keys {
			s3.Put(bucket, key, make([]byte, 1024))
		}
		if _, err := conn.Exec(ctx, "SELECT count(*) FROM fixture.add_files($1, $2, 'postgres')", id, b.o.files); err != nil {
			return err
		}
		pipe := client.Pipeline()
		for i := range b.o.keys {
			pipe.Set(ctx, id+":cache:"+strconv.Itoa(i), "x", 0)
		}
		pipe.SAdd(ctx, rediskeys.GatedTenants, id)
		pipe.ZAdd(ctx, rediskeys.ActiveTenants, redis.Z{Score: 1, Member: id})
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	b.res.setup = append(b.res.setup, fmt.Sprintf("stores: files, large objects and keys of %d tenants in %.0f s", k, time.Since(start).Seconds()))
	settings := []string{"PACE=off", "S3_FILE_STORE_BUCKET_NAME=" + bucket, "S3_ENDPOINT_URL=" + s3.URL, "AWS_REGION_NAME=us-east-1",
		"S3_AWS_ACCESS_KEY_ID=" + testenv.S3AccessKey, "S3_AWS_SECRET_ACCESS_KEY=" + testenv.S3SecretKey,
		"REDIS_HOST=127.0.0.1", "REDIS_PORT=" + strconv.Itoa(rs.Port)}
	without, err := b.runPipeline(ctx, f, plain, settings...)
	if err != nil {
		return fmt.Errorf("without files: %w", err)
	}
	with, err := b.runPipeline(ctx, f, loaded, settings...)
	if err != nil {
		return fmt.Errorf("with files: %w", err)
	}
	var los int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_largeobject_metadata").Scan(&los); err != nil {
		return err
	}
	dbsize, err := client.DBSize(ctx).Result()
	if err != nil {
		return err
	}
	if left := len(s3.Keys(bucket, "")); left+int(los)+int(dbsize) != 0 {
		return fmt.Errorf("left behind: %d S3 objects, %d large objects, %d Redis keys", left, los, dbsize)
	}
	storeSteps := []string{"drop_schema", "unlink_large_objects", "remove_s3_files", "remove_redis_keys"}
	s := b.res.section(fmt.Sprintf("FILES AND KEYS: cleaner with S3 (gofakes3 over HTTP) and Redis configured, PACE=off; %d tenants × %d tables per run; "+
		"ms per tenant, wall and per step of the cleaner (its step_duration metrics)", k, 13+b.o.filler),
		fmt.Sprintf("  %-22s %7s %12s %21s %16s %18s", "tenants", "wall", "drop_schema", "unlink_large_objects", "remove_s3_files", "remove_redis_keys"))
	for _, r := range []struct {
		name string
		run  pipelineRun
	}{{"without files or keys", without}, {"with files and keys", with}} {
		line := fmt.Sprintf("  %-22s %7.0f", r.name, ms1(r.run.took)/float64(k))
		for i, st := range storeSteps {
			line += fmt.Sprintf(" %*.1f", []int{12, 21, 16, 18}[i], r.run.steps[st]*1000/float64(k))
		}
		s.add("%s", line)
	}
	cost := 0.0
	for _, st := range storeSteps[1:] {
		cost += (with.steps[st] - without.steps[st]) * 1000 / float64(k)
	}
	s.add("  %d S3 files + %d large objects + %d Redis keys cost %.0f ms per tenant in the cleaner's store steps; every one removed, none left",
		b.o.files, b.o.files, b.o.keys, cost)
	return nil
}
