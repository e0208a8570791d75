package pipeline

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

const bucket = testworld.Bucket

// withStores gives the cleaner a real S3 file store and a real Redis, and
// returns them with a client to seed Redis.
func (e *env) withStores(t *testing.T) (*testenv.S3, *testenv.Redis, *redis.Client) {
	t.Helper()
	stores := testworld.StartOtherStores(t)
	e.cleaner.Files, e.cleaner.Keys = stores.Files(t, bucket), stores.Keys(t)
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

// A configured store that can never succeed (a bucket name with a typo) is
// found out BEFORE the irreversible drop: the tenant waits, "unavailable"
// (never dead-lettered), its schema and everything else in place, instead
// of each drained tenant in turn losing its schema and being left
// half-done until someone fixes the configuration. Redis down likewise.
func TestBrokenStoreStopsTheCleanupBeforeTheDrop(t *testing.T) {
	e := setup(t)
	e.withStores(t)
	e.cleaner.Files = e.stores.Files(t, bucket+"-typo")
	dropped := 0
	for _, id := range []string{idA, idB} {
		e.eligible(t, id)
		e.seedStores(t, id, 2)
		if err := e.mark(t, id); err != nil {
			t.Fatal(err)
		}
		e.drain(t, id)
		err := e.check(t, tenant.DrainCheck{ID: tenant.ID(id)})
		if err == nil {
			t.Fatalf("%s cleaned with a bucket that does not exist", id)
		}
		if !errors.Is(err, tenant.ErrUnavailable) {
			t.Errorf("%s: %v; want an unavailable store (retried, never dead-lettered)", id, err)
		}
		if !e.DBs.SchemaExists(t, id) {
			dropped++
		}
	}
	if dropped > 0 {
		t.Fatalf("%d of 2 tenants had their schema dropped although the S3 file store could never be cleaned (bucket not found)", dropped)
	}
}

// Redis down: the same, before the drop.
func TestRedisDownStopsTheCleanupBeforeTheDrop(t *testing.T) {
	e := setup(t)
	e.withStores(t)
	e.eligible(t, idA)
	if err := e.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	e.drain(t, idA)
	e.stores.Redis.Stop()
	err := e.check(t, tenant.DrainCheck{ID: tenant.ID(idA)})
	if !errors.Is(err, tenant.ErrUnavailable) {
		t.Fatalf("cleaning with Redis down: %v; want an unavailable store", err)
	}
	if !e.DBs.SchemaExists(t, idA) {
		t.Fatal("the schema was dropped although Redis was down")
	}
	e.stores.Redis.Start()
	if err := e.check(t, tenant.DrainCheck{ID: tenant.ID(idA)}); err != nil {
		t.Fatalf("once Redis is back: %v", err)
	}
	if e.DBs.SchemaExists(t, idA) {
		t.Fatal("not cleaned once Redis was back")
	}
}

// A live tenant (idB) whose file_content references the same large
// object as the dead tenant (a cloned/restored tenant copies lobj_oid values;
// large objects are database-wide, not per schema). Cleaning idA must not
// unlink a large object that another tenant still references.
func TestSharedLargeObjectOfLiveTenantSurvives(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.eligible(t, idA)
	e.eligible(t, idB)
	e.DBs.ExecData(t, "SELECT count(*) FROM fixture.add_files($1, 2, 'postgres')", idA)
	e.DBs.ExecData(t, "SELECT count(*) FROM fixture.add_files($1, 1, 'postgres')", idB) // creates B's tables
	// B (live) gets a file whose content is A's first large object (cloned tenant).
	b := pgx.Identifier{idB}.Sanitize()
	a := pgx.Identifier{idA}.Sanitize()
	e.DBs.ExecData(t, "INSERT INTO "+b+".file_record (file_id, bucket_name, object_key) VALUES ('shared', 'x', 'onyx-files/"+idB+"/shared')")
	e.DBs.ExecData(t, "INSERT INTO "+b+".file_content (file_id, lobj_oid) SELECT 'shared', min(lobj_oid) FROM "+a+".file_content")
	var shared int64
	if err := e.DBs.Data.QueryRow(ctx, "SELECT lobj_oid FROM "+b+".file_content WHERE file_id = 'shared'").Scan(&shared); err != nil {
		t.Fatal(err)
	}
	e.markDrainAndClean(t, idA)
	if n := e.DBs.CountData(t, "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $1::oid", shared); n != 1 {
		t.Fatalf("large object %d, still referenced by live tenant %s's file_content, was unlinked by cleaning %s", shared, idB, idA)
	}
}
