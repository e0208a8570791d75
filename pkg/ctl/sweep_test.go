package ctl

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// tenantctl verify reports what ledgered tenants left in S3 and Redis, with
// the next step; tenantctl sweep lists it (a dry run removes nothing),
// refuses a live tenant of the CSV, and with --apply removes the rest; then
// verify is consistent and a second sweep has nothing to do.
func TestVerifyAndSweepStores(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	stores := w.withStores()
	s3, client, bucket := stores.S3, stores.Client, testworld.Bucket
	w.ensureLedger()
	seed := func(id string, n int) {
		for i := range n {
			s3.Put(bucket, fmt.Sprintf("onyx-files/%s/f%d", id, i), []byte("x"))
			client.Set(ctx, fmt.Sprintf("%s:k%d", id, i), "x", 0)
		}
		client.SAdd(ctx, rediskeys.GatedTenants, id)
	}
	left := func(id string) int {
		return len(s3.Keys(bucket, "onyx-files/"+id+"/")) + len(client.Keys(ctx, id+":*").Val())
	}
	w.dbs.ExecControl(t, "INSERT INTO tenant_cleanup.ledger (tenant_id, cleaned_at) VALUES ($1, now())", idA)
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idB, Status: "ACTIVE"}) // paying, and in the old CSV
	seed(idA, 12)
	seed(idB, 5)
	seed(idC, 3) // cleaned by the original scripts: only in the CSV
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "cleaned_tenants.csv")
	if err := os.WriteFile(csvPath, []byte("tenant_id,cleaned_at\n"+idB+",2026-01-01T00:00:00\n"+idC+",2026-01-01T00:00:00\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	stdout, _ := mustRun(t, 1, "verify")
	contains(t, "verify", stdout, "(e) in the ledger, yet something is left in a store: 1", "tenantctl sweep --apply removes it")
	if l := lineWith(stdout, idA, "sweep"); !strings.Contains(l, " 12 ") || !strings.Contains(l, " 13 ") {
		t.Errorf("verify's line of %s: %q", idA, l)
	}

	stdout, _ = mustRun(t, 0, "sweep", "--csv", csvPath)
	contains(t, "sweep (dry run)", stdout, "Sweep (dry run)", "S3 bucket "+bucket+" under onyx-files/", "Redis 127.0.0.1:",
		"1 tenant in the ledger, 2 more only in", "dry run: nothing was removed; tenantctl sweep --apply --csv "+csvPath+" removes what 2 tenants left")
	contains(t, "sweep (dry run)", lineWith(stdout, idB), "csv", "refused: its schema exists on the data plane: a live tenant")
	contains(t, "sweep (dry run)", lineWith(stdout, idA), "ledger", "remove")
	if left(idA) != 24 || left(idC) != 6 {
		t.Fatal("a dry run removed something")
	}

	_, stderr := mustRun(t, 2, "sweep", "--csv", csvPath, "--apply") // no terminal to ask on, no --yes
	contains(t, "sweep --apply without --yes", stderr, "--force (or --yes)", "nothing was removed")
	if left(idA) != 24 || left(idC) != 6 {
		t.Fatal("an unconfirmed sweep removed something")
	}
	stdout, _ = mustRun(t, 0, "sweep", "--csv", csvPath, "-o", "json")
	contains(t, "sweep -o json", stdout, `"tenant_id": "`+idA+`"`, `"s3_objects": 12`, `"redis_keys": 13`, `"refused": "its schema exists`)

	// On a terminal: one status line redrawn, the refused tenant named above it.
	var term, termErr bytes.Buffer
	yes := true
	code := (&CLI{Stdout: &term, Stderr: &termErr, terminal: &yes, width: 200}).Run(ctx, []string{"sweep", "--csv", csvPath, "--apply", "--yes"})
	if code != exitOK {
		t.Fatalf("sweep --apply on a terminal: exit %d\n%s%s", code, term.String(), termErr.String())
	}
	contains(t, "sweep --apply on a terminal", term.String(),
		eraseLine+"[########----------------] 1/3 tenants (1 swept) | 12 objects, 12 keys removed | ",
		eraseLine+"[2/3] "+idB+" refused: its schema exists on the data plane: a live tenant\n",
		eraseLine+"[########################] 3/3 tenants (2 swept, 1 refused) | 15 objects, 15 keys removed | ",
		"3 tenants: 2 swept, 1 refused; removed S3 15 objects (15 bytes), Redis 15 keys and 2 memberships, 0 large objects; logged in tenant_cleanup.sweep_log")
	if left(idA) != 0 || left(idC) != 0 || left(idB) != 10 || !client.SIsMember(ctx, rediskeys.GatedTenants, idB).Val() {
		t.Fatalf("after the sweep: %d, %d, %d left", left(idA), left(idC), left(idB))
	}

	// Without a terminal: a line per tenant.
	w.dbs.ExecControl(t, "INSERT INTO tenant_cleanup.ledger (tenant_id, cleaned_at) VALUES ($1, now())", idE)
	seed(idE, 2)
	stdout, _ = mustRun(t, 0, "sweep", "--csv", csvPath, "--apply", "--yes")
	contains(t, "sweep --apply", stdout, "[1/2] "+idB+" refused: its schema exists", "[2/2] "+idE+" swept: S3 2 objects (2 bytes), Redis 2 keys and 1 membership",
		"2 tenants: 1 swept, 1 refused", "tenant_cleanup.sweep_log")

	stdout, _ = mustRun(t, 0, "verify")
	contains(t, "verify after the sweep", stdout, "Stores: nothing left of the ledger's tenants", "consistent")
	stdout, _ = mustRun(t, 0, "sweep", "--csv", csvPath, "--apply", "--yes")
	contains(t, "second sweep", stdout, "1 with something left, 1 refused") // the live tenant, again
}

// An invalid id anywhere in the CSV refuses the whole sweep: nothing is
// read from a store, nothing removed, the values are shown quoted.
func TestSweepRefusesABadCSV(t *testing.T) {
	newWorld(t)
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "cleaned_tenants.csv")
	if err := os.WriteFile(csvPath, []byte("tenant_id\n"+idA+"\ntenant_*\n\"tenant_i-0ab1\x1b[2J\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr := mustRun(t, 2, "sweep", "--csv", csvPath, "--apply", "--yes")
	contains(t, "sweep with a bad CSV", stderr, "2 values that are not tenant ids; nothing was done", `line 3`, `"tenant_*"`, `"tenant_i-0ab1\x1b[2J"`)
	if stdout != "" || strings.Contains(stderr, "\x1b") {
		t.Fatalf("stdout %q, stderr %q", stdout, stderr)
	}
	mustRun(t, 2, "sweep", "--csv", filepath.Join(dir, "missing.csv"))
	mustRun(t, 2, "sweep", idA)
	stdout, _ = mustRun(t, 0, "sweep", "-h")
	contains(t, "sweep -h", stdout, "--apply", "--yes", "-o, --output", "cleaned_tenants.csv", "tenant_cleanup.sweep_log", "S3_FILE_STORE_BUCKET_NAME", "REDIS_HOST", "never touches a tenant that still lives")
}

// tenantctl sweep reads every shard of ONYX_DB_SHARDS: the large objects
// the cleaner listed on shard b are found and unlinked there.
func TestSweepEveryShard(t *testing.T) {
	w := newWorld(t)
	w.ensureLedger()
	b := w.shardB()
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idB, Status: "ACTIVE"}) // a fleet, not an empty data plane
	w.dbs.ExecControl(t, "INSERT INTO tenant_cleanup.ledger (tenant_id, cleaned_at) VALUES ($1, now())", idA)
	var listed int64
	if err := b.Data.QueryRow(context.Background(), "SELECT lo_from_bytea(0, 'a file of A')::bigint").Scan(&listed); err != nil {
		t.Fatal(err)
	}
	b.ExecData(t, "INSERT INTO tenant_cleanup.large_objects (tenant_id, lobj_oid) VALUES ($1, $2)", idA, listed)

	stdout, _ := mustRun(t, 0, "sweep", "-o", "json")
	contains(t, "sweep -o json", stdout, `"tenant_id": "`+idA+`"`, `"large_objects": 1`, "every shard: the catalog, b")
	stdout, _ = mustRun(t, 0, "sweep", "--apply", "--yes")
	contains(t, "sweep --apply", stdout, idA+" swept", "1 large object")
	if n := b.CountData(t, "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $1::oid", listed); n != 0 {
		t.Fatal("the large object listed on shard b is still there")
	}
}
