package ctl

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

var ledgerHelp = `
Reads tenant_cleanup.ledger in the control plane (through the bastion when
BASTION_HOST is set), oldest cleanup first. A ledger table that does not exist
yet is empty: nothing was cleaned.

Without --csv: a table. With --csv (or -o): writes cleaned_tenants.csv in the
current directory, or FILE ("-" = standard output), for the later sweep of
search-index leftovers, with the header
  ` + strings.Join(ledgerCSVHeader, ",") + `
Times are RFC 3339 in UTC; a column that is NULL in the ledger is empty.

Exit status: 0 done; 1 the control plane could not be read or the file not
written; 2 bad arguments or configuration.`

// ledgerCSVHeader is the header of cleaned_tenants.csv.
var ledgerCSVHeader = []string{"tenant_id", "cleaned_at", "requested_by", "marked_at", "documents_at_marking",
	"users_at_marking", "last_activity_at", "tenant_created_at", "application_status", "stripe_customer_id",
	"schema_existed", "relations_dropped", "public_rows_deleted", "cleaned_by"}

// ledgerCSVName is the default file of ledger --csv.
const ledgerCSVName = "cleaned_tenants.csv"

// ledgerRow is one ledger row as tenantctl prints it (status --json).
type ledgerRow struct {
	TenantID           tenant.ID        `json:"tenant_id"`
	CleanedAt          time.Time        `json:"cleaned_at"`
	RequestedBy        string           `json:"requested_by"`
	MarkedAt           *time.Time       `json:"marked_at"`
	DocumentsAtMarking int64            `json:"documents_at_marking"`
	UsersAtMarking     int64            `json:"users_at_marking"`
	LastActivityAt     *time.Time       `json:"last_activity_at"`
	TenantCreatedAt    *time.Time       `json:"tenant_created_at"`
	ApplicationStatus  string           `json:"application_status"`
	StripeCustomerID   string           `json:"stripe_customer_id"`
	SchemaExisted      bool             `json:"schema_existed"`
	RelationsDropped   int              `json:"relations_dropped"`
	PublicRowsDeleted  int64            `json:"public_rows_deleted"`
	ControlRowsDeleted map[string]int64 `json:"control_rows_deleted"`
	CleanedBy          string           `json:"cleaned_by"`
}

func newLedgerRow(e controlplane.LedgerEntry) ledgerRow {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		u := t.UTC()
		return &u
	}
	return ledgerRow{TenantID: e.ID, CleanedAt: e.CleanedAt.UTC(), RequestedBy: e.RequestedBy, MarkedAt: opt(e.MarkedAt),
		DocumentsAtMarking: e.DocumentsAtMarking, UsersAtMarking: e.UsersAtMarking, LastActivityAt: opt(e.LastActivityAt),
		TenantCreatedAt: opt(e.TenantCreatedAt), ApplicationStatus: e.ApplicationStatus, StripeCustomerID: e.StripeCustomerID,
		SchemaExisted: e.SchemaExisted, RelationsDropped: int(e.RelationsDropped), PublicRowsDeleted: e.PublicRowsDeleted,
		ControlRowsDeleted: e.ControlRowsDeleted, CleanedBy: e.CleanedBy}
}

func (r ledgerRow) csv() []string {
	opt := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	text := tenant.SpreadsheetSafe
	return []string{string(r.TenantID), r.CleanedAt.UTC().Format(time.RFC3339), text(r.RequestedBy), opt(r.MarkedAt),
		strconv.FormatInt(r.DocumentsAtMarking, 10), strconv.FormatInt(r.UsersAtMarking, 10), opt(r.LastActivityAt),
		opt(r.TenantCreatedAt), text(r.ApplicationStatus), text(r.StripeCustomerID), strconv.FormatBool(r.SchemaExisted),
		strconv.Itoa(r.RelationsDropped), strconv.FormatInt(r.PublicRowsDeleted, 10), text(r.CleanedBy)}
}

func runLedger(ctx context.Context, c *CLI, cmd *command, args []string) int {
	var (
		spec   controlSpec
		asCSV  bool
		output string
	)
	pos, code, ok := c.parse(cmd, args, &spec, func(fs *flag.FlagSet) {
		fs.BoolVar(&asCSV, "csv", false, "write the ledger as CSV to "+ledgerCSVName+" (or -o FILE)")
		fs.StringVar(&output, "o", "", `write the CSV to FILE instead of `+ledgerCSVName+` ("-" = standard output); implies --csv`)
	})
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return c.usageError(cmd, "ledger takes no arguments, got %q", pos)
	}
	if !c.loadEnv(cmd, &spec) {
		return exitUsage
	}
	control, closeControl, err := openControl(ctx, spec.ControlPlane, spec.Bastion)
	if err != nil {
		return c.fail(ctx, err)
	}
	defer closeControl()
	entries, err := control.Ledger(ctx)
	if err != nil && !controlplane.NoLedger(err) {
		return c.fail(ctx, err)
	}
	rows := make([]ledgerRow, len(entries))
	for i, e := range entries {
		rows[i] = newLedgerRow(e)
	}

	if !asCSV && output == "" {
		c.printLedger(rows)
		return exitOK
	}
	if output == "" {
		output = ledgerCSVName
	}
	if output == "-" {
		if err := writeLedgerCSV(c.Stdout, rows); err != nil {
			return c.fail(ctx, err)
		}
		return exitOK
	}
	if err := writeLedgerFile(output, rows); err != nil {
		return c.fail(ctx, err)
	}
	path, _ := filepath.Abs(output)
	fmt.Fprintf(c.Stdout, "wrote %s to %s\n", plural(len(rows), "cleaned tenant"), path)
	return exitOK
}

func (c *CLI) printLedger(rows []ledgerRow) {
	if len(rows) == 0 {
		fmt.Fprintln(c.Stdout, "The ledger is empty: no tenant was cleaned yet.")
		return
	}
	now := c.clock()
	tw := table(c.Stdout)
	row(tw, "TENANT", "CLEANED AT", "REQUESTED BY", "DOCUMENTS", "USERS", "LAST ACTIVITY", "STATUS", "SCHEMA", "PUBLIC ROWS", "CLEANED BY")
	for _, r := range rows {
		schema := fmt.Sprintf("%d relations", r.RelationsDropped)
		if !r.SchemaExisted {
			schema = "already gone"
		}
		row(tw, r.TenantID, when(now, r.CleanedAt), orDash(r.RequestedBy), r.DocumentsAtMarking, r.UsersAtMarking,
			stampPtr(r.LastActivityAt), orDash(r.ApplicationStatus), schema, r.PublicRowsDeleted, orDash(r.CleanedBy))
	}
	tw.Flush()
	fmt.Fprintf(c.Stdout, "\n%s in the ledger (tenantctl ledger --csv writes %s)\n", plural(len(rows), "cleaned tenant"), ledgerCSVName)
}

func writeLedgerCSV(w io.Writer, rows []ledgerRow) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(ledgerCSVHeader); err != nil {
		return err
	}
	for _, r := range rows {
		if err := cw.Write(r.csv()); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

func writeLedgerFile(path string, rows []ledgerRow) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write the ledger: %w", err)
	}
	if err := writeLedgerCSV(f, rows); err != nil {
		f.Close()
		return fmt.Errorf("write the ledger to %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write the ledger to %s: %w", path, err)
	}
	return nil
}
