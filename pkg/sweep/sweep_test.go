package sweep_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/sweep"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

const bucket = testworld.Bucket

// Tenant ids of the tests. paying shares its first characters with gone.
const (
	gone    = "tenant_i-ab"
	paying  = "tenant_i-abc"
	idA     = "tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745"
	idB     = "tenant_1bcd62e7-9fbf-4bb6-8894-f1441fca6745"
	idC     = "tenant_2cde62e7-9fbf-4bb6-8894-f1441fca6745"
	idLive  = "tenant_3def62e7-9fbf-4bb6-8894-f1441fca6745"
	idGated = "tenant_4ef062e7-9fbf-4bb6-8894-f1441fca6745"
	// bystander is a live tenant every test has: a fleet without any is
	// refused (ErrEmptyFleet).
	bystander = "tenant_i-0b57a4de"
)

type env struct {
	dbs *testenv.Databases
	*testworld.OtherStores
	sw *sweep.Sweeper
}

// setup gives a test its own data and control planes (with this
// pipeline's tables), an S3 server, a redis-server and a Sweeper of them.
func setup(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	ctx := context.Background()
	e := &env{dbs: testenv.NewDatabases(t), OtherStores: testworld.StartOtherStores(t)}
	data, err := dataplane.New(ctx, e.dbs.Data, dataplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(data.Close)
	if _, err := data.Ensure(ctx, false); err != nil {
		t.Fatal(err)
	}
	control := controlplane.New(e.dbs.Control)
	if err := control.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	e.sw = &sweep.Sweeper{Data: data, Control: control, Files: e.Files(t, bucket), Keys: e.Keys(t), By: "test"}
	e.dbs.CreateTenant(t, testenv.Tenant{ID: bystander, Status: "ACTIVE"})
	return e
}

// ledger gives id a ledger row, as a cleanup by this pipeline does.
func (e *env) ledger(t *testing.T, id string) {
	t.Helper()
	e.dbs.ExecControl(t, "INSERT INTO tenant_cleanup.ledger (tenant_id, cleaned_at) VALUES ($1, now() - interval '30 days')", id)
}

// seed puts files objects under id's prefix and keys keys TENANT_ID:…,
// and makes it a member of Onyx's two tenant sets.
func (e *env) seed(t *testing.T, id string, files, keys int) {
	t.Helper()
	ctx := context.Background()
	for i := range files {
		e.S3.Put(bucket, fmt.Sprintf("onyx-files/%s/file-%05d", id, i), []byte("contents"))
	}
	pipe := e.Client.Pipeline()
	for i := range keys {
		pipe.Set(ctx, fmt.Sprintf("%s:cache:%d", id, i), "x", 0)
		if (i+1)%1000 == 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	pipe.SAdd(ctx, rediskeys.GatedTenants, id)
	pipe.ZAdd(ctx, rediskeys.ActiveTenants, redis.Z{Score: 1, Member: id})
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
}

// left counts id's objects, keys and memberships, read directly.
func (e *env) left(t *testing.T, id string) (objects, keys int, member bool) {
	t.Helper()
	ctx := context.Background()
	objects = len(e.S3.Keys(bucket, "onyx-files/"+id+"/"))
	var cursor uint64
	for {
		page, next, err := e.Client.Scan(ctx, cursor, id+":*", 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		keys += len(page)
		if cursor = next; cursor == 0 {
			break
		}
	}
	member = e.Client.SIsMember(ctx, rediskeys.GatedTenants, id).Val() ||
		e.Client.ZScore(ctx, rediskeys.ActiveTenants, id).Err() == nil
	return objects, keys, member
}

func (e *env) mustBeIntact(t *testing.T, id string, files, keys int) {
	t.Helper()
	if o, k, m := e.left(t, id); o != files || k != keys || !m {
		t.Fatalf("%s: %d of %d objects, %d of %d keys, member %v: it must keep everything", id, o, files, k, keys, m)
	}
}

func (e *env) mustBeClean(t *testing.T, id string) {
	t.Helper()
	if o, k, m := e.left(t, id); o != 0 || k != 0 || m {
		t.Fatalf("%s: %d objects, %d keys, member %v left", id, o, k, m)
	}
}

func (e *env) plan(t *testing.T, csv ...tenant.ID) *sweep.Plan {
	t.Helper()
	p, err := e.sw.Plan(context.Background(), csv)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) apply(t *testing.T, p *sweep.Plan) []sweep.Result {
	t.Helper()
	res, err := e.sw.Apply(context.Background(), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func item(p *sweep.Plan, id string) (sweep.Item, bool) {
	for _, it := range p.Items {
		if string(it.ID) == id {
			return it, true
		}
	}
	return sweep.Item{}, false
}

// The plan finds the leftovers of ledgered tenants and removes nothing;
// Apply removes them and logs it; a second sweep finds nothing. A paying
// tenant whose id starts with a swept tenant's keeps all of its objects,
// keys and memberships.
func TestSweepLedgeredTenants(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.dbs.CreateTenant(t, testenv.Tenant{ID: paying, Status: "ACTIVE"})
	e.ledger(t, gone)
	e.ledger(t, idA)
	e.ledger(t, idB) // nothing left of it
	e.seed(t, gone, 30, 40)
	e.seed(t, idA, 3, 0)
	e.seed(t, paying, 7, 9)
	e.S3.Put(bucket, "onyx-files/"+gone, []byte("an object named like the folder, outside it"))
	e.Client.Set(ctx, gone+"x:1", "not a key of "+gone, 0)

	p := e.plan(t)
	if p.Ledger != 3 || p.CSV != 0 || len(p.Items) != 2 || p.Refused() != 0 {
		t.Fatalf("plan: %+v", p)
	}
	if it, _ := item(p, gone); it.S3Objects != 30 || it.RedisKeys != 42 || it.Source != sweep.FromLedger || it.CleanedAt.IsZero() {
		t.Fatalf("plan of %s: %+v", gone, it)
	}
	if it, _ := item(p, idA); it.S3Objects != 3 || it.RedisKeys != 2 {
		t.Fatalf("plan of %s: %+v", idA, it)
	}
	e.mustBeIntact(t, gone, 30, 40) // a plan removes nothing

	res := e.apply(t, p)
	for _, r := range res {
		if r.Outcome != sweep.Swept {
			t.Fatalf("%s: %s %s %v", r.ID, r.Outcome, r.Reason, r.Err)
		}
	}
	e.mustBeClean(t, gone)
	e.mustBeClean(t, idA)
	e.mustBeIntact(t, paying, 7, 9)
	if !slices.Contains(e.S3.Keys(bucket, "onyx-files/"+gone), "onyx-files/"+gone) || e.Client.Exists(ctx, gone+"x:1").Val() != 1 {
		t.Fatal("an object or key merely starting with the swept id was removed")
	}
	log, err := e.sw.Control.SweepLog(ctx, gone)
	if err != nil || len(log) != 1 || !log[0].Complete || log[0].Source != "ledger" || log[0].SweptBy != "test" ||
		log[0].Removed["s3_objects"] != 30 || log[0].Removed["redis_keys"] != 40 || log[0].Removed["redis_memberships"] != 2 {
		t.Fatalf("sweep log of %s: %+v, %v", gone, log, err)
	}

	// Idempotent: nothing left to plan, and nothing more logged.
	if p := e.plan(t); len(p.Items) != 0 {
		t.Fatalf("second plan: %+v", p.Items)
	}
	if log, _ := e.sw.Control.SweepLog(ctx, gone); len(log) != 1 {
		t.Fatalf("second sweep logged: %+v", log)
	}
}

// A tenant of an old cleaned_tenants.csv that still lives (its schema, a
// control-plane row, public rows) is refused and keeps everything; one that
// comes alive between the plan and the sweep is refused by the check made
// right before the removal; a tenant only in the CSV and gone everywhere is
// swept.
func TestLiveTenantInCSVIsRefused(t *testing.T) {
	e := setup(t)
	e.dbs.CreateTenant(t, testenv.Tenant{ID: idLive, Status: "ACTIVE"})
	e.dbs.CreateTenant(t, testenv.Tenant{ID: idGated, Status: "GATED_ACCESS", NoSchema: true}) // half-done: rows left
	e.dbs.ExecData(t, "DELETE FROM public.user_tenant_mapping WHERE tenant_id = $1", idGated)
	e.dbs.ExecData(t, "DELETE FROM public.tenant_anonymous_user_path WHERE tenant_id = $1", idGated)
	e.dbs.ExecData(t, "DELETE FROM public.tenant_invite_counter WHERE tenant_id = $1", idGated)
	e.dbs.ExecData(t, "DELETE FROM public.tenant_sso_domain WHERE tenant_id = $1", idGated)
	e.dbs.ExecData(t, "INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ($1, 'other')", idB) // on another shard
	for _, id := range []string{idLive, idGated, idA, idB, idC} {
		e.seed(t, id, 4, 5)
	}

	p := e.plan(t, idLive, idGated, idA, idB, idC)
	if p.CSV != 5 || len(p.Items) != 5 || p.Refused() != 3 {
		t.Fatalf("plan: %+v", p)
	}
	for id, why := range map[string]string{idLive: "its schema exists", idGated: "control-plane tenant row", idB: "public tables"} {
		if it, _ := item(p, id); it.Refused == "" || !strings.Contains(it.Refused, why) {
			t.Fatalf("%s: refused %q, want %q", id, it.Refused, why)
		}
	}
	// idC comes alive (a control-plane row, e.g. restored) after the plan.
	e.dbs.ExecControl(t, "SELECT fixture_control_tenant($1, 'ACTIVE', now())", idC)

	res := e.apply(t, p)
	outcomes := map[tenant.ID]sweep.Outcome{}
	for _, r := range res {
		outcomes[r.ID] = r.Outcome
	}
	want := map[tenant.ID]sweep.Outcome{idLive: sweep.Refused, idGated: sweep.Refused, idB: sweep.Refused, idC: sweep.Refused, idA: sweep.Swept}
	if fmt.Sprint(outcomes) != fmt.Sprint(want) {
		t.Fatalf("outcomes %v, want %v", outcomes, want)
	}
	e.mustBeClean(t, idA)
	for _, id := range []string{idLive, idGated, idB, idC} {
		e.mustBeIntact(t, id, 4, 5)
	}
	if log, _ := e.sw.Control.SweepLog(context.Background(), idA); len(log) != 1 || log[0].Source != "csv" {
		t.Fatalf("sweep log of %s: %+v", idA, log)
	}
}

// Thousands of objects and keys of one tenant are swept, a page and a
// batch at a time.
func TestSweepThousands(t *testing.T) {
	e := setup(t)
	e.ledger(t, idA)
	e.seed(t, idA, 2000, 5000)
	e.seed(t, idB, 3, 3) // not in the ledger: kept
	p := e.plan(t)
	if it, ok := item(p, idA); !ok || it.S3Objects != 2000 || it.RedisKeys != 5002 {
		t.Fatalf("plan: %+v", p.Items)
	}
	res := e.apply(t, p)
	if len(res) != 1 || res[0].Outcome != sweep.Swept || res[0].Removed.S3Objects != 2000 || res[0].Removed.RedisKeys != 5000 ||
		res[0].Removed.S3Bytes != 2000*int64(len("contents")) {
		t.Fatalf("result: %+v", res)
	}
	e.mustBeClean(t, idA)
	e.mustBeIntact(t, idB, 3, 3)
}

// A store that goes away in the middle of a sweep stops it: the tenant
// being swept fails, those after it are not attempted, nothing is counted
// twice; once the store is back, running the sweep again completes it.
func TestStoreDownMidSweep(t *testing.T) {
	for _, store := range []string{"s3", "redis"} {
		t.Run(store, func(t *testing.T) {
			e := setup(t)
			for _, id := range []string{idA, idB, idC} {
				e.ledger(t, id)
				e.seed(t, id, 5, 5)
			}
			p := e.plan(t)
			down := func(done int, r sweep.Result) {
				if done == 1 {
					if store == "s3" {
						e.S3.Stop()
					} else {
						e.Redis.Pause()
					}
				}
			}
			res, err := e.sw.Apply(context.Background(), p, down)
			if !errors.Is(err, sweep.ErrStopped) || !errors.Is(err, tenant.ErrUnavailable) {
				t.Fatalf("apply with %s down: %v", store, err)
			}
			if len(res) != 3 || res[0].Outcome != sweep.Swept || res[1].Outcome != sweep.Failed || res[2].Outcome != sweep.Skipped {
				t.Fatalf("results: %+v", res)
			}
			if store == "s3" {
				e.S3.Start()
			} else {
				e.Redis.Resume()
			}
			e.mustBeClean(t, idA)
			p = e.plan(t)
			if len(p.Items) != 2 {
				t.Fatalf("plan after the store is back: %+v", p.Items)
			}
			e.apply(t, p)
			for _, id := range []string{idA, idB, idC} {
				e.mustBeClean(t, id)
			}
			log, _ := e.sw.Control.SweepLog(context.Background(), idB)
			if len(log) != 2 || log[0].Complete || log[0].Error == "" || !log[1].Complete {
				t.Fatalf("sweep log of %s: %+v", idB, log)
			}
			if p := e.plan(t); len(p.Items) != 0 {
				t.Fatalf("third plan: %+v", p.Items)
			}
		})
	}
}

// Large objects the cleaner listed and did not unlink are attributed to
// their tenant and unlinked; those nobody names are only counted, and the
// large objects of a live tenant's files are neither.
func TestSweepLargeObjects(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.sw.LargeObjects = true
	e.dbs.CreateTenant(t, testenv.Tenant{ID: idLive, Status: "ACTIVE"})
	e.dbs.ExecData(t, "SELECT fixture.add_files($1, 3, 'postgres')", idLive)
	e.ledger(t, idA)
	var listed, orphan int64
	if err := e.dbs.Data.QueryRow(ctx, "SELECT lo_from_bytea(0, 'a file of A')::bigint").Scan(&listed); err != nil {
		t.Fatal(err)
	}
	if err := e.dbs.Data.QueryRow(ctx, "SELECT lo_from_bytea(0, 'whose?')::bigint").Scan(&orphan); err != nil {
		t.Fatal(err)
	}
	e.dbs.ExecData(t, "INSERT INTO tenant_cleanup.large_objects (tenant_id, lobj_oid) VALUES ($1, $2)", idA, listed)

	p := e.plan(t)
	if it, ok := item(p, idA); !ok || it.LargeObjects != 1 || p.UnattributedLargeObjects != 1 {
		t.Fatalf("plan: %+v (unattributed %d)", p.Items, p.UnattributedLargeObjects)
	}
	res := e.apply(t, p)
	if len(res) != 1 || res[0].Outcome != sweep.Swept || res[0].Removed.LargeObjects != 1 {
		t.Fatalf("result: %+v", res)
	}
	exists := func(oid int64) bool {
		return e.dbs.CountData(t, "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $1::oid", oid) == 1
	}
	if exists(listed) || !exists(orphan) {
		t.Fatal("the listed large object must be unlinked, the unattributed one kept")
	}
	if n := e.dbs.CountData(t, "SELECT count(*) FROM pg_largeobject_metadata m WHERE m.oid IN (SELECT lobj_oid::oid FROM \""+idLive+"\".file_content)"); n != 3 {
		t.Fatalf("the live tenant has %d of its 3 large objects", n)
	}
}

// A listed large object that a schema's file_content still names (another
// tenant's file) is not unlinked, nor any other of that tenant's list; its
// files and keys are swept all the same.
func TestSweepKeepsLargeObjectsStillNamed(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.ledger(t, idA)
	e.seed(t, idA, 2, 2)
	var shared, own int64
	if err := e.dbs.Data.QueryRow(ctx, "SELECT fixture.add_files($1, 1, 'postgres')::bigint", bystander).Scan(&shared); err != nil {
		t.Fatal(err)
	}
	if err := e.dbs.Data.QueryRow(ctx, "SELECT lo_from_bytea(0, 'a file of A')::bigint").Scan(&own); err != nil {
		t.Fatal(err)
	}
	e.dbs.ExecData(t, "INSERT INTO tenant_cleanup.large_objects (tenant_id, lobj_oid) VALUES ($1, $2), ($1, $3)", idA, shared, own)
	res := e.apply(t, e.plan(t))
	if len(res) != 1 || res[0].Outcome != sweep.Refused || !strings.Contains(res[0].Reason, "named by a schema's file_content") ||
		res[0].Removed.S3Objects != 2 || res[0].Removed.RedisKeys != 2 || res[0].Removed.LargeObjects != 0 {
		t.Fatalf("result: %+v", res)
	}
	if n := e.dbs.CountData(t, "SELECT count(*) FROM pg_largeobject_metadata WHERE oid IN ($1::oid, $2::oid)", shared, own); n != 2 {
		t.Fatalf("%d of the 2 large objects left", n)
	}
	e.mustBeClean(t, idA)
}

// Against a data plane or a control plane without any tenant (a wrong URL,
// a fresh restore), where every tenant looks gone, Apply refuses to start.
func TestSweepRefusesAnEmptyFleet(t *testing.T) {
	e := setup(t)
	e.ledger(t, idA)
	e.seed(t, idA, 2, 2)
	p := e.plan(t, idB)
	e.dbs.ExecData(t, `DROP SCHEMA "`+bystander+`" CASCADE`)
	if _, err := e.sw.Apply(context.Background(), p, nil); !errors.Is(err, sweep.ErrEmptyFleet) {
		t.Fatalf("apply against a data plane without tenants: %v", err)
	}
	e.dbs.CreateTenant(t, testenv.Tenant{ID: idLive})
	e.dbs.ExecControl(t, "DELETE FROM tenant_notification; DELETE FROM tenant_config; DELETE FROM subscription; DELETE FROM tenant")
	if _, err := e.sw.Apply(context.Background(), p, nil); !errors.Is(err, sweep.ErrEmptyFleet) {
		t.Fatalf("apply against a control plane without tenants: %v", err)
	}
	e.mustBeIntact(t, idA, 2, 2)
}

// TestSweepEveryShard: with two shard databases, the sweep reads and
// sweeps both. A ledgered tenant whose schema is left on the second shard
// (a stray copy) still lives there and is refused; the large objects the
// cleaner listed on the second shard are counted and unlinked there, and
// the unattributed ones of both shards counted; a data plane whose tenant
// schemas are all on the second shard is the fleet's, not an empty one.
func TestSweepEveryShard(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := testenv.NewDatabases(t)
	shardB, err := dataplane.New(ctx, b.Data, dataplane.Options{Shard: "b", NotCatalog: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(shardB.Close)
	if _, err := shardB.Ensure(ctx, false); err != nil {
		t.Fatal(err)
	}
	e.sw.Shards = map[string]*dataplane.Store{"b": shardB}
	e.sw.LargeObjects = true
	e.dbs.ExecData(t, `DROP SCHEMA "`+bystander+`" CASCADE`) // the catalog holds no tenant schema
	b.CreateTenant(t, testenv.Tenant{ID: bystander, Status: "ACTIVE"})

	// idA: cleaned, a copy of its schema left on b. idB: cleaned, a large
	// object listed on b.
	e.ledger(t, idA)
	e.seed(t, idA, 2, 2)
	b.CreateTenant(t, testenv.Tenant{ID: idA})
	e.ledger(t, idB)
	var listed, orphan int64
	if err := b.Data.QueryRow(ctx, "SELECT lo_from_bytea(0, 'a file of B')::bigint").Scan(&listed); err != nil {
		t.Fatal(err)
	}
	if err := b.Data.QueryRow(ctx, "SELECT lo_from_bytea(0, 'whose?')::bigint").Scan(&orphan); err != nil {
		t.Fatal(err)
	}
	b.ExecData(t, "INSERT INTO tenant_cleanup.large_objects (tenant_id, lobj_oid) VALUES ($1, $2)", idB, listed)

	p := e.plan(t)
	a, okA := item(p, idA)
	itB, okB := item(p, idB)
	if !okA || a.Refused != "its schema exists on shard b: a live tenant" {
		t.Errorf("%s, whose schema is on shard b: %+v (found %v); want refused", idA, a, okA)
	}
	if !okB || itB.LargeObjects != 1 || itB.Refused != "" || p.UnattributedLargeObjects != 1 {
		t.Errorf("%s: %+v (found %v), unattributed %d; want 1 large object listed on b, 1 unattributed", idB, itB, okB,
			p.UnattributedLargeObjects)
	}
	if last := p.Stores[len(p.Stores)-1]; !strings.Contains(last, "every shard: the catalog, b") {
		t.Errorf("stores: %q", last)
	}
	res, err := e.sw.Apply(ctx, p, nil)
	if err != nil {
		t.Fatal(err) // not ErrEmptyFleet: the fleet's schemas are on b
	}
	outcomes := map[tenant.ID]sweep.Outcome{}
	for _, r := range res {
		outcomes[r.ID] = r.Outcome
	}
	if outcomes[idA] != sweep.Refused || outcomes[idB] != sweep.Swept {
		t.Fatalf("outcomes %v; want %s refused, %s swept", outcomes, idA, idB)
	}
	e.mustBeIntact(t, idA, 2, 2)
	exists := func(oid int64) bool {
		return b.CountData(t, "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $1::oid", oid) == 1
	}
	if exists(listed) || !exists(orphan) || b.CountData(t, "SELECT count(*) FROM tenant_cleanup.large_objects") != 0 {
		t.Fatal("on shard b, the listed large object must be unlinked (and its listing gone), the unattributed one kept")
	}
}
