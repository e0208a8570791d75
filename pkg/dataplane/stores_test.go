package dataplane

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// largeObjectsOf counts the large objects a tenant's file_content points at
// that still exist (oids listed in want when its schema is gone).
func largeObjectsOf(t *testing.T, dbs *testenv.Databases, oids []string) int64 {
	t.Helper()
	return dbs.CountData(t, "SELECT count(*) FROM pg_largeobject_metadata WHERE oid::text = ANY ($1)", oids)
}

// addFiles gives tenant id n files in the PostgreSQL file store and returns
// their large objects' oids.
func addFiles(t *testing.T, dbs *testenv.Databases, id string, n int) []string {
	t.Helper()
	rows, err := dbs.Data.Query(context.Background(), "SELECT fixture.add_files($1, $2, 'postgres')", id, n)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var oids []string
	for rows.Next() {
		var oid string
		if err := rows.Scan(&oid); err != nil {
			t.Fatal(err)
		}
		oids = append(oids, oid)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return oids
}

// A cleaned tenant's large objects are unlinked after its drop, from the
// list its look transaction made, a batch per transaction within the lock
// budget; another tenant's stay. One already gone is only taken off the
// list; a second run does nothing.
func TestLargeObjectsAreUnlinked(t *testing.T) {
	for _, c := range []struct {
		name          string
		filler, files int
	}{{"one drop transaction", 0, 5}, {"batched drop, many files", 20, 300}} {
		t.Run(c.name, func(t *testing.T) {
			dbs, s := setup(t, Options{LockBudget: 60})
			ctx := context.Background()
			dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: c.filler})
			dbs.CreateTenant(t, testenv.Tenant{ID: idB})
			mine, theirs := addFiles(t, dbs, idA, c.files), addFiles(t, dbs, idB, 3)
			dbs.ExecData(t, "SELECT lo_unlink($1::oid)", mine[0]) // gone already
			tt := lock(t, s, idA)
			defer tt.Release()
			if _, err := tt.Drop(ctx, DropChecks{Look: noCheck}); err != nil {
				t.Fatal(err)
			}
			if n := largeObjectsOf(t, dbs, mine); n != int64(c.files-1) {
				t.Fatalf("%d large objects after the drop; want all %d left until they are unlinked", n, c.files-1)
			}
			n, err := tt.UnlinkLargeObjects(ctx)
			if err != nil || n != int64(c.files) {
				t.Fatalf("unlinked %d, %v; want %d taken off the list", n, err, c.files)
			}
			if left := largeObjectsOf(t, dbs, mine); left != 0 {
				t.Fatalf("%d of the tenant's large objects left", left)
			}
			if left := largeObjectsOf(t, dbs, theirs); left != 3 {
				t.Fatalf("%d of the other tenant's 3 large objects left", left)
			}
			rec, err := tt.Record(ctx)
			if err != nil || rec.LargeObjectsFound != int64(c.files) || rec.LargeObjectsUnlinked != int64(c.files-1) {
				t.Fatalf("record %+v, %v; want %d found, %d unlinked", rec, err, c.files, c.files-1)
			}
			if n, err := tt.UnlinkLargeObjects(ctx); err != nil || n != 0 {
				t.Fatalf("second run: %d, %v; want nothing to do", n, err)
			}
		})
	}
}

// A drop interrupted after its look transaction still has the list: the
// large objects are unlinked once the drop completes, by another process.
func TestLargeObjectsSurviveAnInterruptedDrop(t *testing.T) {
	dbs, s := setup(t, Options{LockBudget: 60})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 20})
	mine := addFiles(t, dbs, idA, 50)
	crash := errors.New("crash")
	s.afterDropTx = func(n int) error {
		if n == 1 {
			return crash
		}
		return nil
	}
	if _, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) }); !errors.Is(err, crash) {
		t.Fatalf("interrupted drop: %v", err)
	}
	s.afterDropTx = nil
	other, err := New(ctx, dbs.Data, Options{LockBudget: 60})
	if err != nil {
		t.Fatal(err)
	}
	n, err := locked(t, other, tenant.ID(idA), func(tt *TenantSession) (int64, error) {
		if _, err := tt.Drop(ctx, DropChecks{Look: noCheck}); err != nil {
			return 0, err
		}
		return tt.UnlinkLargeObjects(ctx)
	})
	if err != nil || n != 50 || largeObjectsOf(t, dbs, mine) != 0 {
		t.Fatalf("after the resumed drop: %d unlinked, %v, %d left", n, err, largeObjectsOf(t, dbs, mine))
	}
}

// The object keys a tenant's file records name are kept from the look until
// the S3 file store is done, and what was removed is added to the record.
func TestFileKeysAreKeptUntilRemoved(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA})
	rows, err := dbs.Data.Query(ctx, "SELECT fixture.add_files($1, 3, 's3')", idA)
	if err != nil {
		t.Fatal(err)
	}
	want, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	tt := lock(t, s, idA)
	defer tt.Release()
	if _, err := tt.Drop(ctx, DropChecks{Look: noCheck}); err != nil {
		t.Fatal(err)
	}
	got, err := tt.FileKeys(ctx)
	slices.Sort(want)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("file keys after the drop: %v, %v; want %v", got, err, want)
	}
	for range 2 {
		if err := tt.RecordRemoved(ctx, Removed{S3Objects: 3, S3Bytes: 3072, RedisKeys: 7, RedisMemberships: 1}, "onyx-files/"+idA+"/"); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := tt.Record(ctx)
	if err != nil || rec.Removed != (Removed{S3Objects: 6, S3Bytes: 6144, RedisKeys: 14, RedisMemberships: 2}) {
		t.Fatalf("record %+v, %v; want both removals added", rec.Removed, err)
	}
	if got, err := tt.FileKeys(ctx); err != nil || len(got) != 0 {
		t.Fatalf("file keys once the S3 file store is done: %v, %v", got, err)
	}
}
