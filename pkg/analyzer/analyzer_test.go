package analyzer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

func TestCSVName(t *testing.T) {
	at := time.Date(2026, 11, 26, 8, 5, 9, 0, time.UTC)
	for days, want := range map[int]string{
		90: "gated_tenants_no_query_3mo_20261126_080509.csv",
		60: "gated_tenants_no_query_2mo_20261126_080509.csv",
		45: "gated_tenants_no_query_45d_20261126_080509.csv",
	} {
		if got := CSVName(days, at); got != want {
			t.Errorf("CSVName(%d) = %s; want %s", days, got, want)
		}
	}
}

func TestAnalyzeGroupsTheFleet(t *testing.T) {
	dbs := testenv.NewDatabases(t)
	ctx := context.Background()
	gated := tenant.StatusGatedAccess
	for _, tn := range []testenv.Tenant{
		{ID: "tenant_i-01", Status: gated, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 5},
		{ID: "tenant_i-02", Status: gated, Pairs: 2, DocsPerPair: 10},                                // never active, 20 docs
		{ID: "tenant_i-03", Status: gated, LastQuery: testenv.DaysAgo(45), Pairs: 1, DocsPerPair: 1}, // 30–90 days
		{ID: "tenant_i-04", Status: gated, LastQuery: testenv.DaysAgo(3), Pairs: 1, DocsPerPair: 1},  // this month
		{ID: "tenant_i-05", Status: "ACTIVE", LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 1},
		{ID: "tenant_i-06", LastQuery: testenv.DaysAgo(200)},                                // no control-plane row
		{ID: "tenant_i-07", Status: gated, LastQuery: testenv.DaysAgo(200), NoSchema: true}, // interrupted cleanup
		{ID: "tenant_i-08", Status: gated, Created: testenv.DaysAgo(10)},                    // created recently
	} {
		dbs.CreateTenant(t, tn)
	}
	dbs.ExecControl(t, "SELECT fixture_control_tenant('tenant_i-09')") // on no data plane here
	dbs.ExecData(t, `CREATE SCHEMA "tenant_NOT_VALID"`)
	data, err := dataplane.New(ctx, dbs.Data, dataplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := data.Ensure(ctx, false); err != nil {
		t.Fatal(err)
	}
	dbs.RecordDroppedSchema(t, "tenant_i-07") // an interrupted cleanup: its drop is on record
	// A gated tenant whose schema was renamed for maintenance: no evidence,
	// never selected, listed for review.
	dbs.CreateTenant(t, testenv.Tenant{ID: "tenant_i-0a", Status: gated, LastQuery: testenv.DaysAgo(5), Pairs: 1, DocsPerPair: 1})
	dbs.ExecData(t, `ALTER SCHEMA "tenant_i-0a" RENAME TO maintenance`)
	// A copy restored after its drop: the record says the drop happened, the
	// schema of its name says the tenant was active three days ago. Its
	// activity is read like anyone's: not a candidate.
	dbs.CreateTenant(t, testenv.Tenant{ID: "tenant_i-0b", Status: gated, LastQuery: testenv.DaysAgo(3), Pairs: 1, DocsPerPair: 1})
	dbs.RecordDroppedSchema(t, "tenant_i-0b")
	a := &Analyzer{Data: data, Control: controlplane.New(dbs.Control), InactiveDays: 90, Workers: 2, Now: time.Now,
		Log: slog.New(slog.DiscardHandler)}
	r, err := a.Analyze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var candidates []string
	for _, c := range r.Candidates() {
		candidates = append(candidates, string(c.ID))
	}
	if strings.Join(candidates, " ") != "tenant_i-02 tenant_i-01 tenant_i-07" {
		t.Fatalf("candidates %v; want the three eligible, most documents first", candidates)
	}
	totals := r.Totals()
	if totals[GroupInactive] != [2]int64{3, 25} || totals[GroupActiveEarly][0] != 1 || totals[GroupActiveRecent][0] != 2 ||
		totals[GroupOther][0] != 4 {
		t.Fatalf("group totals %v", totals)
	}
	if fmt.Sprint(r.ForReview) != "[tenant_i-0a]" {
		t.Fatalf("for review: %v; want the tenant whose schema was renamed", r.ForReview)
	}
	if r.NotHere != 1 || len(r.SkippedSchemas) != 1 {
		t.Fatalf("not here %d, skipped %v", r.NotHere, r.SkippedSchemas)
	}
	path := filepath.Join(t.TempDir(), "report.csv")
	if err := WriteCSV(path, r); err != nil {
		t.Fatal(err)
	}
	body, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[1], "tenant_i-02,20,2,,") || !strings.HasPrefix(lines[2], "tenant_i-01,5,2,") ||
		!strings.HasSuffix(lines[2], ",200") {
		t.Fatalf("CSV:\n%s", body)
	}
	var out bytes.Buffer
	PrintSummary(&out, r)
	for _, want := range []string{"gated, no activity in 90 days (candidates)  3", "gated, last active 30-90 days ago", "skipped 1 schemas",
		"1 control-plane tenants have no schema", "1 tenants have no schema but rows left, and nothing shows that a cleanup of them began"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunRetriesAFailedPassSoon(t *testing.T) {
	dbs := testenv.NewDatabases(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dbs.CreateTenant(t, testenv.Tenant{ID: "tenant_i-01", Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200)})
	data, err := dataplane.New(ctx, dbs.Data, dataplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The control plane is away when the first pass runs.
	proxy := testenv.StartProxy(t, "127.0.0.1:5432")
	proxy.Cut()
	control := controlplane.New(testenv.Pool(t, strings.Replace(dbs.ControlURL, "127.0.0.1:5432", proxy.Addr, 1)))
	js := testenv.StartJetStream(t)
	b, err := bus.Connect(ctx, js.URL, bus.Options{Name: "test", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var logs testenv.SyncBuffer
	dir := t.TempDir()
	a := &Analyzer{Data: data, Control: control, Bus: b, InactiveDays: 90, ReportDir: dir, Workers: 2, Out: io.Discard,
		Now: time.Now, Log: slog.New(slog.NewJSONHandler(&logs, nil)), RetryDelay: 50 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, time.Hour) }()
	testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(logs.String(), "analysis pass failed; retrying") },
		"the first pass fails")
	proxy.Restore()
	// The retry comes long before the hour-long interval: the report is written.
	testenv.Eventually(t, 20*time.Second, func() bool {
		csvs, _ := filepath.Glob(filepath.Join(dir, "*.csv"))
		return len(csvs) == 1
	}, "a pass succeeds once the control plane is back")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after shutdown: %v", err)
	}
}

// The analyzer reads only the schemas of tenants the control plane says
// could be eligible: a paying tenant's schema, even one locked so that a read
// would wait, is never read; tenantctl report (ReadAll) reads it.
func TestAnalyzeReadsOnlyWhatCouldBeEligible(t *testing.T) {
	dbs := testenv.NewDatabases(t)
	ctx := context.Background()
	gated := tenant.StatusGatedAccess
	dbs.CreateTenant(t, testenv.Tenant{ID: "tenant_i-01", Status: gated, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 5})
	dbs.CreateTenant(t, testenv.Tenant{ID: "tenant_i-02", Status: "ACTIVE", LastQuery: testenv.DaysAgo(1), Pairs: 1, DocsPerPair: 5})
	dbs.CreateTenant(t, testenv.Tenant{ID: "tenant_i-03", Status: gated, Created: testenv.DaysAgo(10), Pairs: 1, DocsPerPair: 1})
	data, err := dataplane.New(ctx, dbs.Data, dataplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	locker, err := dbs.Data.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = locker.Rollback(ctx) }()
	for _, id := range []string{"tenant_i-02", "tenant_i-03"} {
		if _, err := locker.Exec(ctx, `LOCK TABLE "`+id+`".chat_message IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
	}
	a := &Analyzer{Data: data, Control: controlplane.New(dbs.Control), InactiveDays: 90, Workers: 2, Now: time.Now,
		Log: slog.New(slog.DiscardHandler)}
	r, err := a.Analyze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Unreadable) != 0 || len(r.Candidates()) != 1 || r.Candidates()[0].ID != "tenant_i-01" {
		t.Fatalf("unreadable %v, candidates %v; want no schema read but the gated, old tenant's", r.Unreadable, r.Candidates())
	}
	if tot := r.Totals(); tot[GroupOther] != [2]int64{2, 0} || r.Seen != 3 || len(r.Tenants) != 0 {
		t.Fatalf("totals %v, seen %d, kept %d; want the two others counted unread (no documents), and no tenant kept",
			tot, r.Seen, len(r.Tenants))
	}
	a.ReadAll = true
	if r, err = a.Analyze(ctx); err != nil {
		t.Fatal(err)
	}
	if len(r.Unreadable) != 2 || len(r.Tenants) != 1 {
		t.Fatalf("with ReadAll: unreadable %v, kept %d; want both locked schemas, and every readable tenant kept", r.Unreadable, len(r.Tenants))
	}
}

// TestPassPublishesAsItGoes: a pass goes through the fleet in chunks,
// publishes every candidate once (in the pipeline already: not again),
// records each one's state, and writes the CSV whole and in order from its
// spool, exactly as Analyze orders the candidates.
func TestPassPublishesAsItGoes(t *testing.T) {
	chunks, runs := chunkTenants, spoolRun
	chunkTenants, spoolRun = 3, 4
	t.Cleanup(func() { chunkTenants, spoolRun = chunks, runs })
	dbs := testenv.NewDatabases(t)
	ctx := context.Background()
	gated := tenant.StatusGatedAccess
	var want []string
	for i := range 13 {
		id := fmt.Sprintf("tenant_i-%02x", i)
		tn := testenv.Tenant{ID: id, Status: gated, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: i % 4}
		switch i % 5 {
		case 3:
			tn.Status = "ACTIVE" // never read, never published
		case 4:
			tn.LastQuery = testenv.DaysAgo(2)
		default:
			want = append(want, id)
		}
		dbs.CreateTenant(t, tn)
	}
	data, err := dataplane.New(ctx, dbs.Data, dataplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := data.Ensure(ctx, false); err != nil {
		t.Fatal(err)
	}
	js := testenv.StartJetStream(t)
	b, err := bus.Connect(ctx, js.URL, bus.Options{Name: "analyzer", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dir := t.TempDir()
	var out bytes.Buffer
	a := &Analyzer{Data: data, Control: controlplane.New(dbs.Control), Bus: b, InactiveDays: 90, ReportDir: dir, Workers: 2,
		Out: &out, Now: time.Now, Log: slog.New(slog.DiscardHandler)}
	if err := a.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), fmt.Sprintf("published %d candidates (0 already published)", len(want))) {
		t.Fatalf("summary:\n%s", out.String())
	}
	s, err := b.JetStream().Stream(ctx, bus.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != uint64(len(want)) {
		t.Fatalf("%d requests stored; want %d", n, len(want))
	}
	for _, id := range want {
		if st, found, err := b.TenantState(ctx, tenant.ID(id)); err != nil || !found || st.Phase != tenant.PhaseRequested {
			t.Fatalf("state of %s: %+v, %v, %v; want requested", id, st, found, err)
		}
	}
	r, err := a.Analyze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var csvWant bytes.Buffer
	if err := WriteCSVTo(&csvWant, r); err != nil {
		t.Fatal(err)
	}
	csvs, _ := filepath.Glob(filepath.Join(dir, "*.csv"))
	if len(csvs) != 1 {
		t.Fatalf("reports %v; want one", csvs)
	}
	got, _ := os.ReadFile(csvs[0])
	if lines := strings.Count(string(got), "\n"); lines != len(want)+1 || string(got) != csvWant.String() {
		t.Fatalf("CSV of the pass (%d lines):\n%s\nwant (as Analyze orders them):\n%s", lines, got, csvWant.String())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("the report directory holds %d entries; want the CSV alone", len(entries))
	}
}

// TestAnalyzeOnOneConnection: with a single data-plane connection (the
// schema list cannot hold one while the reads go on), a pass still goes
// through the fleet.
func TestAnalyzeOnOneConnection(t *testing.T) {
	chunks := chunkTenants
	chunkTenants = 2
	t.Cleanup(func() { chunkTenants = chunks })
	dbs := testenv.NewDatabases(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 5 {
		dbs.CreateTenant(t, testenv.Tenant{ID: fmt.Sprintf("tenant_i-%02x", i), Status: tenant.StatusGatedAccess,
			LastQuery: testenv.DaysAgo(200)})
	}
	cfg := dbs.Data.Config()
	cfg.MaxConns = 1
	data, err := dataplane.Open(ctx, cfg, dataplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	a := &Analyzer{Data: data, Control: controlplane.New(dbs.Control), InactiveDays: 90, Workers: 1, Now: time.Now,
		Log: slog.New(slog.DiscardHandler)}
	r, err := a.Analyze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Candidates()) != 5 {
		t.Fatalf("%d candidates; want 5", len(r.Candidates()))
	}
}
