package ctl

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

func TestReport(t *testing.T) {
	w := newWorld(t)
	gated := tenant.StatusGatedAccess
	for _, tn := range []testenv.Tenant{
		{ID: idA, Status: gated, LastQuery: testenv.DaysAgo(200), Pairs: 2, DocsPerPair: 30},
		{ID: idB, Status: gated, Pairs: 1, DocsPerPair: 10},
		{ID: idC, Status: gated, LastQuery: testenv.DaysAgo(300)},
		{ID: idD, Status: "ACTIVE", LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 20},
		{ID: idE, Status: gated, LastQuery: testenv.DaysAgo(10), Pairs: 1, DocsPerPair: 7},
		{ID: idF, Status: gated, LastQuery: testenv.DaysAgo(45), Pairs: 1, DocsPerPair: 4},
		{ID: idG, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 3},
		{ID: idH, Status: gated, LastQuery: testenv.DaysAgo(200), NoSchema: true},
	} {
		w.dbs.CreateTenant(t, tn)
	}
	w.dbs.ExecData(t, `DELETE FROM "`+idC+`".chat_message; DELETE FROM "`+idC+`".chat_session; DELETE FROM "`+idC+`"."user"`)
	w.dropRecorded(idH)                        // an interrupted cleanup: its schema is gone, its drop recorded
	t.Setenv("NATS_URL", "nats://127.0.0.1:1") // report does not need NATS
	seqBefore := w.streamLastSeq()

	stdout, _ := mustRun(t, 0, "report")
	contains(t, "report", stdout,
		"8 tenants, INACTIVE_DAYS=90",
		"dry run: nothing was published",
		"Top 8 tenants by documents:",
		"these 8 hold 104 of 104 documents (100.00%)",
		"Tenants with no documents: 2 (25.00%)\n  "+idC+"  GATED_ACCESS, candidate\n  "+idH+"  ",
		"Tenants with no users: 2 (25.00%)\n  "+idC+"  GATED_ACCESS, candidate\n  "+idH)
	for _, want := range [][]string{
		{"gated, no activity in 90 days (candidates)", " 4 ", " 70 "},
		{"gated, last active 30-90 days ago", " 1 ", " 4 "},
		{"gated, active in the last 30 days", " 1 ", " 7 "},
		{"everyone else", " 2 ", " 23 "},
		{"1 ", idA, " 60 ", " 2 ", " 200 ", "GATED_ACCESS", "yes"},
		{"2 ", idD, " 20 ", "ACTIVE", `no: control-plane status is "ACTIVE", not GATED_ACCESS`},
		{"6 ", idG, " 3 ", "(no control-plane row)", "no: no control-plane tenant row"},
		{"8 ", idH, " 0 ", " 0 ", "never", "GATED_ACCESS", "yes"},
		{idE, "no: active", "inside the 90-day inactivity window"},
		{"  " + idH, "GATED_ACCESS, candidate, schema gone"},
	} {
		if lineWith(stdout, want...) == "" {
			t.Errorf("report has no line with %q:\n%s", want, stdout)
		}
	}
	// The ranks follow the documents, most first.
	var ranked []string
	for _, m := range regexp.MustCompile(`(?m)^(\d+)\s+(tenant_\S+)\s+(\d+)`).FindAllStringSubmatch(stdout, -1) {
		ranked = append(ranked, m[1]+":"+m[3])
	}
	if got := strings.Join(ranked, " "); got != "1:60 2:20 3:10 4:7 5:4 6:3 7:0 8:0" {
		t.Errorf("top list ranks:documents = %s", got)
	}
	// Percentiles as the original script computed them: sorted[floor(n*p)].
	// All: 0 0 3 4 7 10 20 60; candidates: 0 0 10 60.
	if regexp.MustCompile(`all tenants\s+8\s+7\s+20\s+60\s+60\s+60\s+60\n`).FindString(stdout) == "" ||
		regexp.MustCompile(`candidates\s+4\s+10\s+60\s+60\s+60\s+60\s+60\n`).FindString(stdout) == "" {
		t.Errorf("distribution:\n%s", stdout)
	}
	if got := w.streamLastSeq(); got != seqBefore {
		t.Errorf("report published %d messages", got-seqBefore)
	}

	// --csv FILE, --csv=FILE, and --csv alone (the analyzer's name, here).
	dir := t.TempDir()
	for _, args := range [][]string{{"report", "-o", "csv", "--output-file", filepath.Join(dir, "a.csv")}, {"report", "--csv=" + filepath.Join(dir, "b.csv")}} {
		_, stderr := mustRun(t, 0, args...)
		path := args[len(args)-1]
		path = path[strings.Index(path, "/"):]
		if args[1] == "--csv="+path {
			contains(t, strings.Join(args, " "), stderr, "report: "+path+" (4 candidates)")
		}
		rows := readCSVFile(t, path)
		if got := fmt.Sprint(rows); !strings.HasPrefix(got, "[[tenant_id num_documents num_users last_query_time days_since_last_query] ["+idA+" 60 2 ") ||
			len(rows) != 5 || rows[2][0] != idB || rows[2][3] != "" || rows[3][0] != idC || rows[4][0] != idH {
			t.Errorf("%s:\n%v", path, rows)
		}
	}
	t.Chdir(dir)
	stdout, stderr := mustRun(t, 0, "report", "--csv")
	matches, _ := filepath.Glob(filepath.Join(dir, "gated_tenants_no_query_3mo_*.csv"))
	if len(matches) != 1 || !strings.Contains(stderr, "report: "+matches[0]) {
		t.Errorf("report --csv wrote %v; stdout:\n%s", matches, stdout)
	}
	mustRun(t, 2, "report", "extra")
	mustRun(t, 2, "report", "--csv=-") // a file named "-": no
	stdout, _ = mustRun(t, 0, "report", "-o", "csv")
	if !strings.HasPrefix(stdout, "tenant_id,num_documents,num_users,last_query_time,days_since_last_query\n"+idA+",60,2,") {
		t.Errorf("report -o csv:\n%s", stdout)
	}
	stdout, _ = mustRun(t, 0, "report", "-o", "json")
	contains(t, "report -o json", stdout, `"candidates": 4`, `"tenant_id": "`+idA)
}

func readCSVFile(t *testing.T, path string) [][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rows
}

func TestListCapped(t *testing.T) {
	var items []string
	for i := range 53 {
		items = append(items, fmt.Sprint(i))
	}
	var out bytes.Buffer
	listCapped(&out, "  ", items, 50)
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 51 || lines[49] != "  49" || lines[50] != "  … and 3 more" {
		t.Errorf("capped list:\n%s", out.String())
	}
}
