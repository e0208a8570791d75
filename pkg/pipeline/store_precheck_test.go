package pipeline

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/filestore"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// A configured store that can never succeed (a bucket name with a typo) is
// found out BEFORE the irreversible drop: the tenant waits, "unavailable"
// (never dead-lettered), its schema and everything else in place, instead
// of each drained tenant in turn losing its schema and being left
// half-done until someone fixes the configuration. Redis down likewise.
func TestBrokenStoreStopsTheCleanupBeforeTheDrop(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.withStores(t)
	files, err := filestore.Open(ctx, filestore.Config{Bucket: "onyx-file-store-bucket-typo", Prefix: "onyx-files",
		EndpointURL: e.stores.S3.URL, AccessKeyID: testenv.S3AccessKey, SecretAccessKey: testenv.S3SecretKey,
		Region: "us-east-1", Timeout: 5 * time.Second, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	e.cleaner.Files = files
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
