package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// failOnce is Redis failing its first removal (after the S3 file store is
// done with the tenant), then working.
type failOnce struct {
	KeyStore
	failed bool
}

func (f *failOnce) RemoveTenant(ctx context.Context, id tenant.ID) (rediskeys.Removed, error) {
	if !f.failed {
		f.failed = true
		return rediskeys.Removed{}, tenant.Unavailable(errors.New("redis: connection reset"))
	}
	return f.KeyStore.RemoveTenant(ctx, id)
}

// A file_record key outside the tenant's prefix (here in another tenant's
// folder) is never deleted, and is reported "left for review" in the
// cleaned event and counted in the ledger, also when the attempt that saw
// it first failed after the S3 file store was done.
func TestOutsideKeyStaysReportedAfterARetry(t *testing.T) {
	for _, retried := range []bool{false, true} {
		t.Run(map[bool]string{false: "one attempt", true: "redis fails once after S3"}[retried], func(t *testing.T) {
			e := setup(t)
			ctx := context.Background()
			s3, _, _ := e.withStores(t)
			e.eligible(t, idA)
			e.eligible(t, idB)
			e.seedStores(t, idA, 3)
			e.seedStores(t, idB, 1)
			foreign := "onyx-files/" + idB + "/secret"
			s3.Put(bucket, foreign, []byte("B's file"))
			a := pgx.Identifier{idA}.Sanitize()
			e.DBs.ExecData(t, "INSERT INTO "+a+".file_record (file_id, bucket_name, object_key) VALUES ('x', $1, $2)", bucket, foreign)
			if err := e.mark(t, idA); err != nil {
				t.Fatal(err)
			}
			e.drain(t, idA)
			if retried {
				e.cleaner.Keys = &failOnce{KeyStore: e.cleaner.Keys}
				if err := e.check(t, tenant.DrainCheck{ID: idA}); !errors.Is(err, tenant.ErrUnavailable) {
					t.Fatalf("first attempt: %v; want redis unavailable", err)
				}
			}
			if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
				t.Fatal(err)
			}
			e.AssertCleaned(idA)
			if len(s3.Keys(bucket, foreign)) != 1 {
				t.Fatal("another tenant's object named by the dead tenant's file_record was deleted")
			}
			var reason string
			for _, ev := range e.EventsWith(tenant.OutcomeCleaned) {
				if string(ev.TenantID) == idA {
					reason = ev.Reason
				}
			}
			if !strings.Contains(reason, "1 object keys of its file records lie outside its prefix") {
				t.Errorf("cleaned event does not report the key outside the prefix: %q", reason)
			}
			entry, _, err := e.cleaner.Control.LedgerEntry(ctx, idA)
			if err != nil || entry.StoresRemoved["s3_record_keys_outside_prefix_left"] != 1 || entry.StoresRemoved["s3_objects"] != 3 {
				t.Errorf("ledger stores_removed %v, %v; want 3 objects and 1 key outside the prefix left", entry.StoresRemoved, err)
			}
		})
	}
}
