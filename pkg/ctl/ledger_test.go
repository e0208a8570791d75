package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLedger(t *testing.T) {
	w := newWorld(t)
	t.Setenv("NATS_URL", "nats://127.0.0.1:1") // ledger does not need NATS

	// No ledger table yet: an empty ledger.
	stdout, _ := mustRun(t, 0, "ledger")
	contains(t, "ledger without a table", stdout, "The ledger is empty")
	stdout, _ = mustRun(t, 0, "ledger", "-o", "csv")
	if stdout != strings.Join(ledgerCSVHeader, ",")+"\n" {
		t.Errorf("ledger --csv of an empty ledger:\n%s", stdout)
	}

	w.ensureLedger()
	cleaned := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	marked := time.Date(2026, 11, 20, 9, 0, 0, 0, time.FixedZone("CET", 3600))
	w.dbs.ExecControl(t, `INSERT INTO tenant_cleanup.ledger (tenant_id, cleaned_at, requested_by, marked_at, documents_at_marking,
		users_at_marking, last_activity_at, tenant_created_at, application_status, stripe_customer_id, schema_existed,
		relations_dropped, public_rows_deleted, control_rows_deleted, cleaned_by)
		VALUES ($1, $2, 'analyzer', $3, 60, 2, $4, $5, 'GATED_ACCESS', 'cus_123', true, 835, 6, '{"tenant": 1}', 'cleaner@host/7')`,
		idA, cleaned, marked, cleaned.AddDate(0, -7, 0), cleaned.AddDate(-1, 0, 0))
	// A row with NULLs (an older ledger row, say).
	w.dbs.ExecControl(t, "INSERT INTO tenant_cleanup.ledger (tenant_id, cleaned_at) VALUES ($1, $2)", idB, cleaned.Add(time.Hour))

	stdout, _ = mustRun(t, 0, "ledger")
	contains(t, "ledger", stdout, "2 cleaned tenants in the ledger")
	if lineWith(stdout, idA, "2026-11-20T10:00:00Z", "analyzer", " 60 ", " 2 ", "2026-04-20T10:00:00Z", "GATED_ACCESS", "835 relations", " 6 ", "cleaner@host/7") == "" ||
		lineWith(stdout, idB, "2026-11-20T11:00:00Z", "already gone") == "" {
		t.Errorf("ledger table:\n%s", stdout)
	}
	wantCSV := strings.Join(ledgerCSVHeader, ",") + "\n" +
		idA + ",2026-11-20T10:00:00Z,analyzer,2026-11-20T08:00:00Z,60,2,2026-04-20T10:00:00Z,2025-11-20T10:00:00Z,GATED_ACCESS,cus_123,true,835,6,cleaner@host/7\n" +
		idB + ",2026-11-20T11:00:00Z,,,0,0,,,,,false,0,0,\n"
	if ledgerCSVHeaderLine := strings.Join(ledgerCSVHeader, ","); ledgerCSVHeaderLine !=
		"tenant_id,cleaned_at,requested_by,marked_at,documents_at_marking,users_at_marking,last_activity_at,tenant_created_at,"+
			"application_status,stripe_customer_id,schema_existed,relations_dropped,public_rows_deleted,cleaned_by" {
		t.Fatalf("header %s", ledgerCSVHeaderLine)
	}
	stdout, _ = mustRun(t, 0, "ledger", "-o", "csv")
	if stdout != wantCSV {
		t.Errorf("ledger -o csv:\n%s\nwant:\n%s", stdout, wantCSV)
	}
	stdout, _ = mustRun(t, 0, "ledger", "-o", "json")
	contains(t, "ledger -o json", stdout, `"tenant_id": "`+idA+`"`, `"relations_dropped": 835`)
	stdout, _ = mustRun(t, 0, "ledger", "-o", "wide")
	contains(t, "ledger -o wide", stdout, "STRIPE CUSTOMER", "cus_123")
	mustRun(t, 2, "ledger", "-o", "json2")

	dir := t.TempDir()
	out := filepath.Join(dir, "sweep.csv")
	stdout, stderr := mustRun(t, 0, "ledger", "-o", "csv", "--output-file", out)
	contains(t, "ledger --output-file FILE", stderr, "wrote "+out)
	if stdout != "" {
		t.Errorf("ledger --output-file printed %q", stdout)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != wantCSV {
		t.Errorf("%s: %q, %v", out, b, err)
	}
	t.Chdir(dir)
	_, stderr = mustRun(t, 0, "ledger", "--csv") // deprecated: cleaned_tenants.csv
	contains(t, "ledger --csv", stderr, "wrote "+filepath.Join(dir, "cleaned_tenants.csv"))
	if b, err := os.ReadFile(filepath.Join(dir, "cleaned_tenants.csv")); err != nil || string(b) != wantCSV {
		t.Errorf("cleaned_tenants.csv: %q, %v", b, err)
	}

	t.Setenv("CONTROL_PLANE_DATABASE_URL", "")
	_, stderr = mustRun(t, 2, "ledger")
	contains(t, "ledger without a control plane", stderr, "set CONTROL_PLANE_DATABASE_URL, or CONTROL_PLANE_RDS_HOST")
}
