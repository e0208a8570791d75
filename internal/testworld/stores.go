package testworld

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/filestore"
	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// Bucket is the S3 bucket of Onyx's file store in tests.
const Bucket = "onyx-file-store-bucket"

// OtherStores are an S3 server and a Redis of the test's own, the stores
// besides the databases where a tenant lives, with a client to seed Redis.
type OtherStores struct {
	S3     *testenv.S3
	Redis  *testenv.Redis
	Client *redis.Client
}

// StartOtherStores starts them for t; they stop when t ends.
func StartOtherStores(t testing.TB) *OtherStores {
	t.Helper()
	o := &OtherStores{S3: testenv.StartS3(t, Bucket), Redis: testenv.StartRedis(t)}
	o.Client = redis.NewClient(&redis.Options{Addr: o.Redis.Addr})
	t.Cleanup(func() { _ = o.Client.Close() })
	return o
}

// Configure points cfg (a cleaner's S3_* and REDIS_* variables) at them.
func (o *OtherStores) Configure(cfg *config.OtherStores) {
	files := &cfg.FileStore.Config
	files.Bucket, files.EndpointURL, files.Region = Bucket, o.S3.URL, "us-east-1"
	files.AccessKeyID, files.SecretAccessKey = testenv.S3AccessKey, testenv.S3SecretKey
	cfg.Redis.Host, cfg.Redis.Port = "127.0.0.1", o.Redis.Port
}

// Files opens a file store on their S3 server's bucket (Bucket, or another
// name: a typo, say), one attempt per request, as the tests want it.
func (o *OtherStores) Files(t testing.TB, bucket string) *filestore.Store {
	t.Helper()
	files, err := filestore.Open(context.Background(), filestore.Config{Bucket: bucket, Prefix: "onyx-files",
		EndpointURL: o.S3.URL, AccessKeyID: testenv.S3AccessKey, SecretAccessKey: testenv.S3SecretKey, Region: "us-east-1",
		Timeout: 5 * time.Second, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// Keys opens a Redis store on their Redis; it closes when t ends.
func (o *OtherStores) Keys(t testing.TB) *rediskeys.Store {
	t.Helper()
	keys, err := rediskeys.Open(context.Background(), rediskeys.Config{Host: "127.0.0.1", Port: o.Redis.Port, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = keys.Close() })
	return keys
}

// Seed gives tenant id n files (recorded in its file_record rows, uploaded
// to S3) and n Redis keys, and makes it a member of Onyx's two tenant sets.
func (o *OtherStores) Seed(t testing.TB, dbs *testenv.Databases, id string, n int) {
	t.Helper()
	ctx := context.Background()
	rows, err := dbs.Data.Query(ctx, "SELECT fixture.add_files($1, $2, 's3', $3)", id, n, Bucket)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			t.Fatal(err)
		}
		o.S3.Put(Bucket, key, []byte("contents of "+key))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		o.Client.Set(ctx, fmt.Sprintf("%s:cache:%d", id, i), "x", 0)
	}
	o.Client.SAdd(ctx, rediskeys.GatedTenants, id)
	o.Client.ZAdd(ctx, rediskeys.ActiveTenants, redis.Z{Score: 1, Member: id})
}
