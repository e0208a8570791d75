package pipeline

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/filestore"
	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

const bucket = testworld.Bucket

// withStores gives the cleaner a real S3 file store and a real Redis, and
// returns them with a client to seed Redis.
func (e *env) withStores(t *testing.T) (*testenv.S3, *testenv.Redis, *redis.Client) {
	t.Helper()
	ctx := context.Background()
	stores := testworld.StartOtherStores(t)
	files, err := filestore.Open(ctx, filestore.Config{Bucket: bucket, Prefix: "onyx-files", EndpointURL: stores.S3.URL,
		AccessKeyID: testenv.S3AccessKey, SecretAccessKey: testenv.S3SecretKey, Region: "us-east-1",
		Timeout: 5 * time.Second, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := rediskeys.Open(ctx, rediskeys.Config{Host: "127.0.0.1", Port: stores.Redis.Port, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = keys.Close() })
	e.cleaner.Files, e.cleaner.Keys = files, keys
	e.stores = stores
	return stores.S3, stores.Redis, stores.Client
}

// seedStores gives tenant id n files (recorded in its schema, uploaded to
// S3) and n Redis keys, and makes it a member of Onyx's two tenant sets.
func (e *env) seedStores(t *testing.T, id string, n int) {
	t.Helper()
	e.stores.Seed(t, e.DBs, id, n)
}

// A cleaned tenant's S3 objects, Redis keys and memberships are gone,
// counted in its ledger row; a tenant whose id starts with the cleaned one's
// keeps all of its own.
func TestCleanupRemovesFilesAndKeys(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	s3, _, client := e.withStores(t)
	const neighbour = idA + "0" // not a valid id for the data plane, but a prefix match for careless code
	e.eligible(t, idA)
	e.eligible(t, idB)
	e.seedStores(t, idA, 30)
	e.seedStores(t, idB, 5)
	s3.Put(bucket, "onyx-files/"+neighbour+"/kept", []byte("x"))
	client.Set(ctx, neighbour+":kept", "x", 0)
	e.markDrainAndClean(t, idA)
	if left := s3.Keys(bucket, "onyx-files/"+idA+"/"); len(left) != 0 {
		t.Fatalf("S3 objects left: %v", left)
	}
	if n := len(s3.Keys(bucket, "onyx-files/"+idB+"/")) + len(s3.Keys(bucket, "onyx-files/"+neighbour+"/")); n != 6 {
		t.Fatalf("%d of the other tenants' 6 objects left", n)
	}
	if keys := client.Keys(ctx, idA+":*").Val(); len(keys) != 0 {
		t.Fatalf("Redis keys left: %v", keys)
	}
	if n := len(client.Keys(ctx, idB+":*").Val()) + len(client.Keys(ctx, neighbour+":*").Val()); n != 6 {
		t.Fatalf("%d of the other tenants' 6 Redis keys left", n)
	}
	if client.SIsMember(ctx, rediskeys.GatedTenants, idA).Val() || !client.SIsMember(ctx, rediskeys.GatedTenants, idB).Val() {
		t.Fatal("memberships: the cleaned tenant's must go, the other's stay")
	}
	entry, _, err := e.cleaner.Control.LedgerEntry(ctx, idA)
	if err != nil || entry.StoresRemoved["s3_objects"] != 30 || entry.StoresRemoved["redis_keys"] != 30 ||
		entry.StoresRemoved["redis_memberships"] != 2 || entry.StoresRemoved["s3_bytes"] == 0 {
		t.Fatalf("ledger stores_removed %v, %v", entry.StoresRemoved, err)
	}
}

// A configured store that cannot be reached after the drop keeps the tenant
// from being reported cleaned; once it is back, the redelivery completes
// the cleanup and the ledger counts what each attempt removed.
func TestStoreDownMidCleanup(t *testing.T) {
	for _, down := range []string{"s3", "redis"} {
		t.Run(down, func(t *testing.T) {
			e := setup(t)
			ctx := context.Background()
			s3, r, client := e.withStores(t)
			e.eligible(t, idA)
			e.seedStores(t, idA, 10)
			if err := e.mark(t, idA); err != nil {
				t.Fatal(err)
			}
			e.drain(t, idA)
			// The store goes down right after the drop (before it, the
			// cleanup stops before anything irreversible:
			// TestBrokenStoreStopsTheCleanupBeforeTheDrop).
			e.cleaner.afterStep = func(step string) error {
				if step == "dropped" {
					if down == "s3" {
						s3.Stop()
					} else {
						r.Stop()
					}
				}
				return nil
			}
			err := e.check(t, tenant.DrainCheck{ID: idA})
			e.cleaner.afterStep = nil
			if err == nil || !errors.Is(err, tenant.ErrUnavailable) && !errors.Is(err, tenant.ErrLater) {
				t.Fatalf("drain check with %s down: %v; want unavailable or later", down, err)
			}
			if _, found, _ := e.cleaner.Control.LedgerEntry(ctx, idA); found || e.DBs.SchemaExists(t, idA) {
				t.Fatalf("with %s down: ledger %v, schema %v; want the schema dropped and no ledger row", down, found, e.DBs.SchemaExists(t, idA))
			}
			if down == "s3" {
				s3.Start()
			} else {
				r.Start() // restarts empty: its keys are gone anyway
				testenv.Eventually(t, 10*time.Second, func() bool { return client.Ping(ctx).Err() == nil }, "redis back")
			}
			testenv.Eventually(t, 20*time.Second, func() bool { return e.check(t, tenant.DrainCheck{ID: idA}) == nil },
				"the redelivery completes the cleanup once %s is back", down)
			e.AssertCleaned(idA)
			if left := s3.Keys(bucket, "onyx-files/"+idA+"/"); len(left) != 0 {
				t.Fatalf("S3 objects left: %v", left)
			}
			if entry, _, _ := e.cleaner.Control.LedgerEntry(ctx, idA); entry.StoresRemoved["s3_objects"] != 10 {
				t.Fatalf("ledger stores_removed %v; want the 10 objects counted", entry.StoresRemoved)
			}
		})
	}
}
