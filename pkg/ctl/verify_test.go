package ctl

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

func TestVerify(t *testing.T) {
	w := newWorld(t)
	w.ensureLedger()
	gated := tenant.StatusGatedAccess
	old := testenv.DaysAgo(200)
	// A consistent fleet: live tenants, a tenant cleaned completely (ledger
	// row only), a live tenant placed on a shard, and a schema that is not a tenant.
	w.gated(idA, 1, 3)
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idB, Status: "ACTIVE", LastQuery: old, Pairs: 1, DocsPerPair: 2})
	w.dbs.ExecControl(t, "INSERT INTO tenant_cleanup.ledger (tenant_id, cleaned_at) VALUES ($1, now() - interval '1 day')", idG)
	w.dbs.ExecData(t, "INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ($1, 'shard-1')", idA)
	w.dbs.ExecData(t, `CREATE SCHEMA tenant_notes`)

	stdout, _ := mustRun(t, 0, "verify")
	contains(t, "verify of a consistent fleet", stdout,
		"Verified 2 tenant schemas, 2 tenants with public rows, 2 control-plane tenants, 1 ledger rows (DATA_PLANE_SHARD_NAME not set)",
		"Schemas named like tenants that are not tenant ids (never touched): 1\n  \"tenant_notes\"",
		"consistent: no cleanup left anything behind")

	// Each kind of inconsistency.
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idC, Status: gated, LastQuery: old, NoSchema: true}) // (a), repairable
	w.dropRecorded(idC)
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idH, Status: gated, LastQuery: old, NoSchema: true}) // (a), no evidence
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idD, Status: "ACTIVE", LastQuery: old, NoSchema: true})
	// (d): marked by the pipeline, but its drain check was lost.
	const lost = "tenant_i-0ab2"
	w.gated(lost, 1, 3)
	w.dbs.ExecData(t, "INSERT INTO tenant_cleanup.progress (tenant_id, marked_at, last_marked_at) VALUES ($1, now(), now())", lost)
	w.dbs.ExecControl(t, "INSERT INTO tenant_cleanup.ledger (tenant_id, cleaned_at) VALUES ($1, now() - interval '2 days')", idB) // (b)
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idE, LastQuery: old, NoSchema: true})                                                // (c)
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idF, Status: gated, LastQuery: old, NoSchema: true})                                 // on another shard?
	w.dbs.ExecData(t, "INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ($1, 'shard-2')", idF)
	w.dbs.ExecData(t, `INSERT INTO public.tenant_invite_counter VALUES ('Tenant_X"; DROP TABLE x; --', 1)`) // invalid id

	stdout, _ = mustRun(t, 1, "verify")
	contains(t, "verify", stdout,
		"(a) schema gone but rows left, no ledger row (half-done cleanups): 3",
		"(b) in the ledger but rows left: 1",
		"(c) public rows with neither schema nor control-plane row (orphans): 1",
		"(d) marked, not cleaned, and no drain check scheduled (lost work): 1",
		"Invalid tenant ids in tenant tables (never used in a statement; need a human): 1",
		`"Tenant_X\"; DROP TABLE x; --"  tenant_invite_counter 1`,
		"On another shard? 1 tenants have a tenant_shard row but no schema here",
		"inconsistent: 6 tenants (a 3, b 1, c 1, d 1), 1 invalid tenant id",
		"tenantctl verify --repair requests the cleanup of 2 tenants the pipeline can complete",
		"needs a human: 5 (see NEXT STEP)")
	for _, want := range [][]string{
		{idC, "gone", "user_tenant_mapping 2, user_tenant_mapping_oauth_account 1, tenant_anonymous_user_path 1, tenant_invite_counter 1",
			"tenant 1, subscription 1, tenant_config 1, tenant_notification 1", "GATED_ACCESS", "tenantctl verify --repair requests it"},
		{idD, "gone", "ACTIVE", `needs a human: control-plane status is "ACTIVE", not GATED_ACCESS`},
		{idH, "gone", "GATED_ACCESS", "needs a human: nothing shows that a cleanup of it began", "tenantctl cleanup " + idH},
		{lost, "tenant 1", "GATED_ACCESS", "tenantctl verify --repair requests it (the marker schedules its drain check again)"},
		{idB, "present", "user_tenant_mapping 2", "tenant 1, subscription 1", "needs a human: the ledger says it was cleaned"},
		{idE, "user_tenant_mapping 2", "needs a human: no control-plane row"},
		{idF, "shard-2", "user_tenant_mapping 2", "tenant 1"},
	} {
		if lineWith(stdout, want...) == "" {
			t.Errorf("verify has no line with %q:\n%s", want, stdout)
		}
	}
	for _, id := range []string{idA, idG} {
		if strings.Contains(stdout, id) {
			t.Errorf("verify lists the consistent %s:\n%s", id, stdout)
		}
	}

	// With DATA_PLANE_SHARD_NAME set, a tenant placed on another shard is
	// only counted; one placed on this shard without a schema is a problem.
	t.Setenv("DATA_PLANE_SHARD_NAME", "shard-1")
	stdout, _ = mustRun(t, 1, "verify")
	contains(t, "verify on shard-1", stdout, "(DATA_PLANE_SHARD_NAME=shard-1)", "1 tenants live on other shards (public.tenant_shard); not checked here")
	if strings.Contains(stdout, idF) || strings.Contains(stdout, "On another shard?") {
		t.Errorf("verify on shard-1 lists the tenant on shard-2:\n%s", stdout)
	}
	t.Setenv("DATA_PLANE_SHARD_NAME", "")

	// --repair requests the repairable ones (before the services run: a
	// cleaner finds lost work by itself); the pipeline completes them.
	seq := w.streamLastSeq()
	stdout, _ = mustRun(t, 1, "verify", "--repair", "--force")
	contains(t, "verify --repair", stdout,
		`published 2 cleanup requests (requested_by "tenantctl verify --repair"): `,
		"run tenantctl verify again once they are cleaned", "needs a human: 5")
	if lineWith(stdout, idC, "requested: the pipeline completes it") == "" {
		t.Errorf("verify --repair:\n%s", stdout)
	}
	if got := w.streamLastSeq() - seq; got != 2 {
		t.Errorf("verify --repair published %d messages; want 2", got)
	}
	w.startServices()
	testenv.Eventually(t, 30*time.Second, func() bool { return w.inLedger(idC) }, "%s cleaned after verify --repair", idC)
	testenv.Eventually(t, 30*time.Second, func() bool {
		return w.dbs.CountData(t, `SELECT count(*) FROM "`+lost+`".connector_credential_pair WHERE status <> 'DELETING'`) == 0 &&
			w.dbs.CountData(t, "SELECT count(*) FROM tenant_cleanup.progress WHERE tenant_id = $1 AND last_marked_at > now() - interval '1 minute'", lost) == 1
	}, "%s marked again after verify --repair", lost)
	if n := w.dbs.PublicRows(t, idC); n != 0 {
		t.Errorf("%s: %d public rows left after the repair", idC, n)
	}

	// What needs a human, done by hand; then verify is happy.
	w.dbs.ExecControl(t, "DELETE FROM tenant_cleanup.ledger WHERE tenant_id = $1", idB)
	w.dbs.ExecData(t, "DELETE FROM public.user_tenant_mapping_oauth_account WHERE tenant_id = ANY($1)", []string{idD, idE, idH})
	for _, table := range []string{"user_tenant_mapping", "tenant_anonymous_user_path", "tenant_invite_counter"} {
		w.dbs.ExecData(t, "DELETE FROM public."+table+" WHERE tenant_id = ANY($1)", []string{idD, idE, idH})
	}
	for _, table := range []string{"tenant_notification", "tenant_config", "subscription", "tenant"} {
		w.dbs.ExecControl(t, "DELETE FROM "+table+" WHERE tenant_id = ANY($1)", []string{idD, idH})
	}
	w.dbs.ExecData(t, "DELETE FROM public.tenant_invite_counter WHERE tenant_id LIKE 'Tenant_X%'")
	stdout, _ = mustRun(t, 0, "verify")
	contains(t, "verify after the repair", stdout, "consistent: no cleanup left anything behind", "On another shard? 1")
	stdout, _ = mustRun(t, 0, "verify", "--repair", "--force")
	contains(t, "verify --repair when consistent", stdout, "consistent")
	mustRun(t, 2, "verify", "extra")
}

func TestVerifyWithoutLedgerTable(t *testing.T) {
	w := newWorld(t)
	w.gated(idA, 1, 1)
	w.dbs.CreateTenant(t, testenv.Tenant{ID: idB, Status: tenant.StatusGatedAccess, NoSchema: true})
	w.dbs.ExecControl(t, "DROP SCHEMA IF EXISTS tenant_cleanup CASCADE")
	stdout, _ := mustRun(t, 1, "verify")
	contains(t, "verify without a ledger table", stdout, "0 ledger rows", "(a) schema gone but rows left")
	if lineWith(stdout, idB, "gone") == "" || strings.Contains(stdout, idA) {
		t.Errorf("verify:\n%s", stdout)
	}
	if n := w.dbs.CountControl(t, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_cleanup'"); n != 0 {
		t.Errorf("verify created the ledger schema")
	}
}

func TestReconcileEdgeCases(t *testing.T) {
	dropped := dataplane.Record{Found: true, DropStartedAt: time.Now()}
	underway := dataplane.Record{Found: true, DropStartedAt: time.Now(), DropToken: "aaa"}
	data := &dataplane.Inventory{
		Schemas:     map[string]bool{idA: true, idB: false, "tenant_Bad": false},
		Quarantines: map[string]bool{dataplane.QuarantinePrefix + "aaa": true, dataplane.QuarantinePrefix + "bbb": true},
		Records:     map[string]dataplane.Record{idA: dropped, idC: underway, idE: dropped},
		PublicRows: map[string]map[string]int64{
			idA: {"user_tenant_mapping": 1},
			idD: {"tenant_shard": 1},
			idE: {"tenant_shard": 1},
		},
		Shards: map[string]string{idD: "other", idE: "here"},
	}
	control := &controlplane.Inventory{
		Rows: map[string]map[string]int64{
			idA: {"tenant": 1}, idB: {"tenant": 1}, idC: {"tenant": 1, "subscription": 2}, idE: {"tenant": 1},
			"TENANT_Y": {"tenant": 1},
		},
		Status: map[string]string{idA: "GATED_ACCESS", idB: "ACTIVE", idC: "GATED_ACCESS", idE: "GATED_ACCESS", "TENANT_Y": "ACTIVE"},
		Ledger: map[string]time.Time{idF: time.Now(), "tenant_BAD2": time.Now()},
	}
	r := reconcile(data, control, "here", nil, time.Now())
	got := map[string]string{}
	for _, p := range r.problems {
		got[string(p.id)] = fmt.Sprintf("%s %s repairable=%v", p.category, p.schema, p.repairable)
	}
	want := map[string]string{
		idA: "a partly dropped repairable=true",                              // its drop began: completed by the pipeline
		idC: "a being dropped (tenant_cleanup_dropping_aaa) repairable=true", // its drop under way
		idE: "a gone repairable=true",                                        // placed on this shard, schema gone
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("problems = %v; want %v", got, want)
	}
	if r.elsewhere != 1 || len(r.maybeElsewhere) != 0 {
		t.Errorf("elsewhere = %d, maybe %v; want idD counted on another shard", r.elsewhere, r.maybeElsewhere)
	}
	var invalid []string
	for _, inv := range r.invalid {
		invalid = append(invalid, inv.raw+":"+counts(nil, inv.rows))
	}
	if fmt.Sprint(invalid) != "[TENANT_Y:control-plane tenant 1 tenant_BAD2:tenant_cleanup.ledger 1]" ||
		fmt.Sprint(r.oddSchemas) != "[tenant_Bad]" {
		t.Errorf("invalid = %v, odd schemas = %v", invalid, r.oddSchemas)
	}
	if fmt.Sprint(r.lostDrops) != "[tenant_cleanup_dropping_bbb]" {
		t.Errorf("lost drops = %v; want the quarantine no record claims", r.lostDrops)
	}
	if !r.inconsistent() || r.schemas != 2 || r.inControl != 4 {
		t.Errorf("reconciliation = %+v", r)
	}
}

// Who requested comes from --as, $TENANTCTL_AS or the OS user and host:
// sanitised and bounded before it reaches a request, a database or a
// terminal.
func TestRequesterIsSanitised(t *testing.T) {
	t.Setenv(asEnv, "\x1b]8;;http://evil\x07ops\x1b[2J"+strings.Repeat("x", 5000))
	got, err := (&CLI{}).requester()
	if err != nil || strings.ContainsAny(got, "\x1b\x07") || len(got) > 200 || !strings.HasPrefix(got, "tenantctl:]8;;http://evilops[2Jxxx") {
		t.Fatalf("requester() = %q (%d bytes), %v", got, len(got), err)
	}
	got, _ = (&CLI{as: "alice"}).requester()
	if got != "tenantctl:alice" {
		t.Errorf("--as alice: %q", got)
	}
	t.Setenv(asEnv, "")
	got, err = (&CLI{}).requester()
	if err != nil || got == "tenantctl:unknown" || !strings.Contains(got, "@") {
		t.Errorf("the OS user: %q, %v", got, err)
	}
}

// A shard name is read from public.tenant_shard, which others write: in
// verify -o csv it cannot start a formula in a spreadsheet.
func TestVerifyCSVShardIsSpreadsheetSafe(t *testing.T) {
	rows := verifyCSV(&reconciliation{problems: []leftover{{id: idA, category: "(a) schema gone", schema: "gone",
		shard: `=HYPERLINK("https://example.com")`}}})
	if len(rows) != 1 || rows[0][len(rows[0])-1] != `'=HYPERLINK("https://example.com")` {
		t.Errorf("verify -o csv rows %q; want the shard cell prefixed with '", rows)
	}
}
