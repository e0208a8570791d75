package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/ctl"
	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

const bucket = testworld.Bucket

// seedFiles gives tenant id n files in S3 (recorded in its file_record
// rows), n large objects (files of the PostgreSQL backend), n Redis keys
// and both memberships.
func seedFiles(t *testing.T, w *world, stores *testworld.OtherStores, id string, n int) {
	t.Helper()
	stores.Seed(t, w.DBs, id, n)
	w.DBs.ExecData(t, fmt.Sprintf("SELECT count(*) FROM fixture.add_files('%s', %d, 'postgres')", id, n))
}

// largeObjects counts the large objects the tenant's file_content rows
// reference that still exist (0 once its schema is gone).
func largeObjects(t *testing.T, w *world, id string) int64 {
	t.Helper()
	if !w.DBs.SchemaExists(t, id) {
		return 0
	}
	var n int64
	q := fmt.Sprintf(`SELECT count(*) FROM %q.file_content f JOIN pg_largeobject_metadata m ON m.oid = f.lobj_oid`, id)
	if err := w.DBs.Data.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The cleaner configured as Onyx configures its stores (S3_*, REDIS_*) and
// with pacing on (the default): a cleaned tenant's S3 objects, large
// objects, Redis keys and memberships are gone and counted in its ledger
// row; a paying tenant's are all there; tenantctl status shows the pace.
func TestCleanerRemovesEveryStore(t *testing.T) {
	w := newWorld(t)
	stores := testworld.StartOtherStores(t)
	stores.Configure(&w.Cleaner.OtherStores)
	w.setenv() // for tenantctl status below
	s3, client := stores.S3, stores.Client
	ctx := context.Background()

	w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleOld, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 3})
	w.DBs.CreateTenant(t, testenv.Tenant{ID: active, Status: "ACTIVE", LastQuery: testenv.DaysAgo(1), Pairs: 1, DocsPerPair: 3})
	const n = 40
	seedFiles(t, w, stores, eligibleOld, n)
	seedFiles(t, w, stores, active, n)
	if got := largeObjects(t, w, eligibleOld); got != n {
		t.Fatalf("seeded %d large objects, want %d", got, n)
	}
	var allLO int64
	if err := w.DBs.Data.QueryRow(ctx, "SELECT count(*) FROM pg_largeobject_metadata").Scan(&allLO); err != nil {
		t.Fatal(err)
	}

	w.DrainTenants(true, eligibleOld)
	w.startServices()
	w.analyze()
	w.WaitFor(eligibleOld, tenant.OutcomeCleaned, 90*time.Second)
	w.AssertCleaned(eligibleOld)

	if keys := s3.Keys(bucket, "onyx-files/"+eligibleOld+"/"); len(keys) != 0 {
		t.Errorf("%d S3 objects of the cleaned tenant left: %v", len(keys), keys[:min(3, len(keys))])
	}
	if keys := s3.Keys(bucket, "onyx-files/"+active+"/"); len(keys) != n {
		t.Errorf("the paying tenant has %d S3 objects, want %d", len(keys), n)
	}
	var lo int64
	if err := w.DBs.Data.QueryRow(ctx, "SELECT count(*) FROM pg_largeobject_metadata").Scan(&lo); err != nil {
		t.Fatal(err)
	}
	if lo != allLO-n {
		t.Errorf("%d large objects left in the database, want %d (the paying tenant's)", lo, allLO-n)
	}
	if got := largeObjects(t, w, active); got != n {
		t.Errorf("the paying tenant's large objects: %d, want %d", got, n)
	}
	for id, want := range map[string]int{eligibleOld: 0, active: n} {
		keys, err := client.Keys(ctx, id+":*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != want {
			t.Errorf("%s: %d Redis keys, want %d", id, len(keys), want)
		}
		member := want > 0
		if got := client.SIsMember(ctx, rediskeys.GatedTenants, id).Val(); got != member {
			t.Errorf("%s in %s: %v, want %v", id, rediskeys.GatedTenants, got, member)
		}
		_, err = client.ZScore(ctx, rediskeys.ActiveTenants, id).Result()
		if (err == nil) != member {
			t.Errorf("%s in %s: %v, want %v", id, rediskeys.ActiveTenants, err == nil, member)
		}
	}
	var removed string
	if err := w.DBs.Control.QueryRow(ctx, "SELECT stores_removed::text FROM tenant_cleanup.ledger WHERE tenant_id = $1", eligibleOld).Scan(&removed); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"s3_objects": 40`, `"redis_keys": 40`, `"large_objects": 40`, `"redis_memberships": 2`} {
		if !strings.Contains(removed, want) {
			t.Errorf("ledger stores_removed %s lacks %s", removed, want)
		}
	}

	var stdout, stderr bytes.Buffer
	if code := ctl.Main([]string{"status"}, &stdout, &stderr); code != 0 {
		t.Fatalf("tenantctl status: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "Pace of the drops: 1 cleaner replica reporting") || !strings.Contains(stdout.String(), "of 2") {
		t.Errorf("tenantctl status does not show the cleaner's pace:\n%s", stdout.String())
	}
}
