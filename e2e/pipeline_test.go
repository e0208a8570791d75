package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/ctl"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// The mixed fleet of the end-to-end test.
const (
	eligibleOld      = "tenant_00000001-0000-4000-8000-000000000001" // queried 200 days ago
	eligibleNever    = "tenant_00000001-0000-4000-8000-000000000002" // never queried
	eligibleCraftOld = "tenant_00000001-0000-4000-8000-000000000003" // Craft 150 days ago
	interrupted      = "tenant_00000001-0000-4000-8000-000000000004" // schema gone (its drop recorded), rows left
	renamed          = "tenant_00000002-0000-4000-8000-000000000008" // gated, active 5 days ago, schema renamed for maintenance
	active           = "tenant_00000002-0000-4000-8000-000000000001" // ACTIVE
	grace            = "tenant_00000002-0000-4000-8000-000000000002" // GRACE_PERIOD
	queriedRecently  = "tenant_00000002-0000-4000-8000-000000000003" // gated, queried 10 days ago
	craftRecently    = "tenant_00000002-0000-4000-8000-000000000004" // gated, Craft 5 days ago
	createdRecently  = "tenant_00000002-0000-4000-8000-000000000005" // gated, created 20 days ago
	noControlRow     = "tenant_00000002-0000-4000-8000-000000000006" // no control-plane row
	withPublicView   = "tenant_00000002-0000-4000-8000-000000000007" // a view in public over its documents
	reactivated      = "tenant_00000003-0000-4000-8000-000000000001" // queries again after marking
	ungated          = "tenant_00000003-0000-4000-8000-000000000002" // ACTIVE again after marking
	notATenant       = "tenant_notes"                                // a schema that is not a tenant
)

func TestMixedFleetEndToEnd(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	old, gated := testenv.DaysAgo(200), tenant.StatusGatedAccess
	fleet := []testenv.Tenant{
		{ID: eligibleOld, Status: gated, LastQuery: old, Pairs: 2, DocsPerPair: 30},
		{ID: eligibleNever, Status: gated, Pairs: 1, DocsPerPair: 5},
		{ID: eligibleCraftOld, Status: gated, LastQuery: old, LastCraft: testenv.DaysAgo(150), Pairs: 1, DocsPerPair: 12},
		{ID: interrupted, Status: gated, LastQuery: old, NoSchema: true},
		{ID: active, Status: "ACTIVE", LastQuery: old, Pairs: 1, DocsPerPair: 3},
		{ID: grace, Status: "GRACE_PERIOD", LastQuery: old, Pairs: 1, DocsPerPair: 3},
		{ID: queriedRecently, Status: gated, LastQuery: testenv.DaysAgo(10), Pairs: 1, DocsPerPair: 3},
		{ID: craftRecently, Status: gated, LastQuery: old, LastCraft: testenv.DaysAgo(5), Pairs: 1, DocsPerPair: 3},
		{ID: createdRecently, Status: gated, Created: testenv.DaysAgo(20), Pairs: 1, DocsPerPair: 3},
		{ID: noControlRow, LastQuery: old, Pairs: 1, DocsPerPair: 3},
		{ID: withPublicView, Status: gated, LastQuery: old, Pairs: 1, DocsPerPair: 3},
		{ID: reactivated, Status: gated, LastQuery: old, Pairs: 1, DocsPerPair: 4},
		{ID: ungated, Status: gated, LastQuery: old, Pairs: 1, DocsPerPair: 4},
		{ID: renamed, Status: gated, LastQuery: testenv.DaysAgo(5), Pairs: 1, DocsPerPair: 3},
	}
	for _, tn := range fleet {
		tn.Filler = 3
		w.DBs.CreateTenant(t, tn)
	}
	w.Prepare()
	w.DBs.RecordDroppedSchema(t, interrupted)
	w.DBs.ExecData(t, `ALTER SCHEMA "`+renamed+`" RENAME TO maintenance_copy`)
	w.DBs.ExecData(t, `CREATE VIEW public.docs_of_one_tenant AS SELECT id FROM "`+withPublicView+`".document`)
	w.DBs.ExecData(t, `CREATE SCHEMA `+notATenant+`; CREATE TABLE `+notATenant+`.notes (x text); INSERT INTO `+notATenant+`.notes VALUES ('keep me')`)

	untouched := []string{active, grace, queriedRecently, craftRecently, createdRecently, noControlRow, withPublicView, renamed}
	before := map[string]testworld.State{}
	for _, id := range untouched {
		before[id] = w.State(id)
	}
	cleaned := []string{eligibleOld, eligibleNever, eligibleCraftOld, interrupted}
	changedMidDrain := []string{reactivated, ungated}
	// Their control-plane rows other than the tenant row (which the test
	// itself changes for one of them) must survive unchanged.
	otherControlRows := func(id string) string {
		var digest string
		if err := w.DBs.Control.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM subscription WHERE tenant_id = $1) || '/' ||
			(SELECT count(*) FROM tenant_config WHERE tenant_id = $1) || '/' ||
			(SELECT count(*) FROM tenant_notification WHERE tenant_id = $1) || '/' ||
			coalesce((SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM subscription x WHERE tenant_id = $1), '-') ||
			coalesce((SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM tenant_config x WHERE tenant_id = $1), '-') ||
			coalesce((SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM tenant_notification x WHERE tenant_id = $1), '-')`,
			id).Scan(&digest); err != nil {
			t.Fatal(err)
		}
		return digest
	}
	controlBefore := map[string]string{}
	for _, id := range changedMidDrain {
		controlBefore[id] = otherControlRows(id)
	}

	// Onyx deletes documents of marked tenants; the two that change mid-drain
	// are held back until they have changed.
	w.DrainTenants(true, eligibleOld, eligibleNever, eligibleCraftOld, withPublicView,
		active, grace, queriedRecently, craftRecently, createdRecently, noControlRow)
	w.startServices()
	out := w.analyze()

	// The report names exactly the tenants the rule makes eligible.
	matches, _ := filepath.Glob(filepath.Join(w.Analyzer.ReportDir, "gated_tenants_no_query_3mo_*.csv"))
	if len(matches) != 1 {
		t.Fatalf("report files %v; want one gated_tenants_no_query_3mo_<timestamp>.csv\n%s", matches, out)
	}
	rows := readCSV(t, matches[0])
	if strings.Join(rows[0], ",") != "tenant_id,num_documents,num_users,last_query_time,days_since_last_query" {
		t.Fatalf("report header %v", rows[0])
	}
	var reported []string
	for _, r := range rows[1:] {
		reported = append(reported, r[0])
	}
	wantReported := []string{eligibleOld, eligibleCraftOld, eligibleNever, reactivated, ungated, withPublicView, interrupted}
	if !sameSet(reported, wantReported) {
		t.Fatalf("report lists %v; want %v", reported, wantReported)
	}
	if rows[1][0] != eligibleOld || rows[1][1] != "60" {
		t.Fatalf("report not sorted by documents, descending: first row %v", rows[1])
	}
	for _, want := range []string{"gated, no activity in 90 days (candidates)", "everyone else", "published 7 candidates"} {
		if !strings.Contains(out, want) {
			t.Fatalf("summary lacks %q:\n%s", want, out)
		}
	}

	// Change two tenants between marking and cleaning, then let them drain.
	w.WaitFor(reactivated, tenant.OutcomeMarked, 20*time.Second)
	w.WaitFor(ungated, tenant.OutcomeMarked, 20*time.Second)
	w.DBs.ExecData(t, `INSERT INTO "`+reactivated+`".chat_message (chat_session_id, message, message_type)
		SELECT id, 'we are back', 'USER' FROM "`+reactivated+`".chat_session LIMIT 1`)
	w.DBs.ExecControl(t, "UPDATE tenant SET application_status = 'ACTIVE' WHERE tenant_id = $1", ungated)
	w.DrainTenants(true, changedMidDrain...)

	for _, id := range cleaned {
		w.WaitFor(id, tenant.OutcomeCleaned, 60*time.Second)
	}
	for _, id := range append([]string{withPublicView}, changedMidDrain...) {
		w.WaitFor(id, tenant.OutcomeRefused, 60*time.Second)
	}
	testenv.Eventually(t, 20*time.Second, w.WorkDone, "all work acknowledged")

	for _, id := range cleaned {
		w.AssertCleaned(id)
	}
	for _, id := range untouched {
		if got := w.State(id); got != before[id] {
			t.Errorf("%s was changed: fingerprint or control-plane rows differ", id)
		}
	}
	for _, id := range changedMidDrain {
		if !w.DBs.SchemaExists(t, id) || w.DBs.PublicRows(t, id) == 0 ||
			w.DBs.CountControl(t, "SELECT count(*) FROM tenant WHERE tenant_id = $1", id) != 1 {
			t.Errorf("%s changed mid-drain but lost its schema, public rows or control-plane row", id)
		}
		if got := otherControlRows(id); got != controlBefore[id] {
			t.Errorf("%s changed mid-drain but its subscription, tenant_config or tenant_notification rows changed: %s, was %s",
				id, got, controlBefore[id])
		}
		if n := w.DBs.CountControl(t, "SELECT count(*) FROM tenant_cleanup.ledger WHERE tenant_id = $1", id); n != 0 {
			t.Errorf("%s has a ledger row", id)
		}
	}
	if n := w.DBs.CountData(t, "SELECT count(*) FROM "+notATenant+".notes"); n != 1 {
		t.Errorf("the non-tenant schema lost its rows")
	}
	if n := w.DBs.CountData(t, "SELECT count(*) FROM pg_views WHERE viewname = 'docs_of_one_tenant'"); n != 1 {
		t.Errorf("the public view is gone")
	}
	for _, ev := range w.EventsWith(tenant.OutcomeRefused) {
		if ev.TenantID == withPublicView && !strings.Contains(ev.Reason, "public.docs_of_one_tenant") {
			t.Errorf("refusal of %s does not name the view: %q", withPublicView, ev.Reason)
		}
	}

	if n := w.DBs.CountData(t, "SELECT count(*) FROM maintenance_copy.document"); n != 3 {
		t.Errorf("the renamed schema lost its rows")
	}
	if !strings.Contains(out, "1 tenants have no schema but rows left, and nothing shows that a cleanup of them began") {
		t.Errorf("the first pass does not report the renamed tenant for review:\n%s", out)
	}

	// A second pass publishes only the refused one again: the cleaned are
	// gone, the changed no longer eligible.
	out = w.analyze()
	if !strings.Contains(out, "published 1 candidates") {
		t.Fatalf("second pass:\n%s", out)
	}
	w.AssertLogsCarryTenant()
}

func TestHostileRequests(t *testing.T) {
	w := newWorld(t)
	w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleOld, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 3})
	w.DBs.ExecData(t, `CREATE SCHEMA customer_data; CREATE TABLE customer_data.t (x int); INSERT INTO customer_data.t VALUES (1)`)
	fpBefore := w.State(eligibleOld)
	w.startServices()

	hostile := []string{
		"public",
		"pg_catalog",
		"customer_data",
		`tenant_00000001-0000-4000-8000-000000000001"; DROP SCHEMA public CASCADE; --`,
		"tenant_x'; DROP SCHEMA public CASCADE; --",
		strings.ToUpper(eligibleOld),
		eligibleOld + " ",
		"",
		strings.Repeat("tenant_", 10<<10/7),
	}
	// tenantctl refuses each with a clear message, exit status 1, and publishes nothing.
	w.setenv() // for tenantctl
	seq := w.StreamLastSeq()
	for _, h := range hostile {
		var stdout, stderr bytes.Buffer
		code := ctl.Main([]string{"cleanup", h}, &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), "invalid tenant id") || !strings.Contains(stderr.String(), "nothing was published") {
			t.Errorf("tenantctl cleanup %s: exit %d, stderr %q", tenant.QuoteInput(h), code, stderr.String())
		}
		if len(stderr.String()) > 1000 {
			t.Errorf("tenantctl's refusal of a %d-byte id is %d bytes long", len(h), stderr.Len())
		}
	}
	// A file with one bad id among good ones is refused as a whole.
	csvFile := filepath.Join(t.TempDir(), "ids.csv")
	if err := os.WriteFile(csvFile, []byte("tenant_id,note\n"+eligibleOld+",ok\npublic,bad\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := ctl.Main([]string{"cleanup", "--csv", csvFile}, &bytes.Buffer{}, &stderr); code != 1 {
		t.Errorf("tenantctl cleanup --csv with an invalid id: exit %d (%s)", code, stderr.String())
	}
	if got := w.StreamLastSeq(); got != seq {
		t.Fatalf("tenantctl published %d messages for refused requests", got-seq)
	}

	// Published raw, they are refused by the services, which keep running;
	// the server itself refuses a message larger than bus.MaxRequestSize.
	var stored []string
	for _, h := range hostile {
		_, err := w.Bus.JetStream().Publish(context.Background(), bus.SubjectCandidate, []byte(h))
		if len(h) > bus.MaxRequestSize {
			if err == nil {
				t.Errorf("a %d-byte request was stored", len(h))
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, h)
	}
	for _, subj := range []string{bus.DrainSubject("tenant_dev"), bus.DrainSubject(eligibleOld)} {
		for _, body := range []string{`{"tenant_id":"public"}`, "garbage", `{"tenant_id":"tenant_dev"}`} {
			if err := w.Bus.Conn().Publish(subj, []byte(body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	sent := len(stored) + 6
	testenv.Eventually(t, 20*time.Second, func() bool {
		return len(w.EventsWith(tenant.OutcomeRefused)) >= sent && w.WorkDone()
	}, "every hostile message refused (%d refusals so far)", len(w.EventsWith(tenant.OutcomeRefused)))
	refused := w.EventsWith(tenant.OutcomeRefused)
	if len(refused) != sent {
		t.Errorf("%d refusals for %d hostile messages", len(refused), sent)
	}
	for _, h := range stored { // each raw candidate is refused by name
		found := false
		for _, ev := range refused {
			found = found || ev.Input == tenant.QuoteInput(h)
		}
		if !found {
			t.Errorf("no refused event names the input %s", tenant.QuoteInput(h))
		}
	}
	if got := w.State(eligibleOld); got != fpBefore {
		t.Fatal("hostile messages changed a tenant")
	}
	for _, schema := range []string{"public", "customer_data", "fixture"} {
		if !w.DBs.SchemaExists(t, schema) {
			t.Fatalf("schema %s is gone", schema)
		}
	}
	if n := w.DBs.CountData(t, "SELECT count(*) FROM customer_data.t"); n != 1 {
		t.Fatalf("customer_data.t has %d rows; want its 1", n)
	}

	// The services still work: a valid request through tenantctl --csv is cleaned.
	if err := os.WriteFile(csvFile, []byte("tenant_id\n"+eligibleOld+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	if code := ctl.Main([]string{"cleanup", "--csv", csvFile}, &stdout, &stderr); code != 0 {
		t.Fatalf("tenantctl cleanup --csv: exit %d: %s", code, stderr.String())
	}
	w.DrainTenants(true, eligibleOld)
	w.WaitFor(eligibleOld, tenant.OutcomeCleaned, 30*time.Second)
	w.AssertCleaned(eligibleOld)
}

func TestDuplicateDelivery(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleOld, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200), Pairs: 2, DocsPerPair: 5})
	w.DBs.CreateTenant(t, testenv.Tenant{ID: active, Status: "ACTIVE", Pairs: 1, DocsPerPair: 3})
	other := w.State(active)
	// The same request three times, in both wire forms, before anything runs.
	ctx := context.Background()
	for range 2 {
		if err := w.Bus.PublishRequest(ctx, tenant.Request{ID: eligibleOld, RequestedBy: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Bus.Conn().Publish(bus.SubjectCandidate, []byte(eligibleOld)); err != nil {
		t.Fatal(err)
	}
	w.DrainTenants(true, eligibleOld, active)
	w.startServices()
	w.WaitFor(eligibleOld, tenant.OutcomeCleaned, 30*time.Second)
	// Duplicate drain checks after the cleanup change nothing.
	for range 2 {
		if err := w.Bus.ScheduleDrainCheck(ctx, tenant.DrainCheck{ID: eligibleOld}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 20*time.Second, w.WorkDone, "all work acknowledged")
	w.AssertCleaned(eligibleOld)
	if w.State(active) != other {
		t.Fatal("another tenant changed")
	}
	for _, ev := range w.EventsWith(tenant.OutcomeRefused) {
		if ev.TenantID == eligibleOld && !strings.Contains(ev.Reason, "already cleaned") {
			t.Errorf("duplicate request refused for another reason: %q", ev.Reason)
		}
	}
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
