package ctl

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

var ledgerHelp = `
Reads tenant_cleanup.ledger in the control plane (through the bastion when
BASTION_HOST is set), oldest cleanup first. A ledger table that does not exist
yet is empty: nothing was cleaned.

-o table (the default) or wide: a table. -o csv prints the ledger as CSV on
standard output (--output-file FILE writes it to FILE instead), for the later
sweep of search-index leftovers, with the header
  ` + strings.Join(ledgerCSVHeader, ",") + `
Times are RFC 3339 in UTC; a column that is NULL in the ledger is empty.

-o json prints the rows as a JSON array.

Exit status: 0 done; 1 the control plane could not be read or the file not
written; 2 bad arguments or configuration.`

// ledgerCSVHeader is the header of cleaned_tenants.csv.
var ledgerCSVHeader = []string{"tenant_id", "cleaned_at", "requested_by", "marked_at", "documents_at_marking",
	"users_at_marking", "last_activity_at", "tenant_created_at", "application_status", "stripe_customer_id",
	"schema_existed", "relations_dropped", "public_rows_deleted", "cleaned_by"}

// ledgerCSVName is the file of the deprecated ledger --csv.
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

func (c *CLI) ledgerCmd() *cobra.Command {
	var (
		out   output
		asCSV bool
	)
	cmd := &cobra.Command{
		Use:     "ledger",
		Short:   "the ledger of cleaned tenants",
		Long:    helpText("The ledger of cleaned tenants.", ledgerHelp),
		Args:    cobra.NoArgs,
		Example: "  tenantctl ledger\n  tenantctl ledger -o csv > " + ledgerCSVName + "\n  tenantctl ledger -o csv --output-file " + ledgerCSVName,
	}
	outputFlags(cmd, &out)
	cmd.Flags().BoolVar(&asCSV, "csv", false, "write "+ledgerCSVName+" (the same as -o csv --output-file "+ledgerCSVName+")")
	_ = cmd.Flags().MarkDeprecated("csv", "use -o csv --output-file "+ledgerCSVName)
	cmd.RunE = runner(func(ctx context.Context, cmd *cobra.Command, _ []string) int {
		if asCSV {
			out.format = formatCSV
			if out.file == "" {
				out.file = ledgerCSVName
			}
		}
		return c.runLedger(ctx, cmd, out)
	})
	return cmd
}

func (c *CLI) runLedger(ctx context.Context, cmd *cobra.Command, out output) int {
	if msg := out.check(); msg != "" {
		return c.usageError(cmd, "%s", msg)
	}
	control, closeControl, code := c.controlPlane(ctx, cmd)
	if control == nil {
		return code
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
	err = out.write(c, func(w io.Writer) error {
		switch out.format {
		case formatCSV:
			return writeLedgerCSV(w, rows)
		case formatJSON:
			return writeJSON(w, rows)
		}
		c.printLedger(w, rows, out.format == formatWide)
		return nil
	})
	if err != nil {
		return c.fail(ctx, err)
	}
	return exitOK
}

// printLedger prints the ledger as a table; wide adds the columns an
// auditor rarely needs on screen.
func (c *CLI) printLedger(w io.Writer, rows []ledgerRow, wide bool) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "The ledger is empty: no tenant was cleaned yet.")
		return
	}
	now := c.clock()
	tw := table(w)
	header := []any{"TENANT", "CLEANED AT", "REQUESTED BY", "DOCUMENTS", "USERS", "LAST ACTIVITY", "STATUS", "SCHEMA", "PUBLIC ROWS", "CLEANED BY"}
	if wide {
		header = append(header, "MARKED AT", "TENANT CREATED", "STRIPE CUSTOMER", "CONTROL-PLANE ROWS")
	}
	row(tw, header...)
	for _, r := range rows {
		schema := fmt.Sprintf("%d relations", r.RelationsDropped)
		if !r.SchemaExisted {
			schema = "already gone"
		}
		cols := []any{r.TenantID, when(now, r.CleanedAt), orDash(r.RequestedBy), r.DocumentsAtMarking, r.UsersAtMarking,
			stampPtr(r.LastActivityAt), orDash(r.ApplicationStatus), schema, r.PublicRowsDeleted, orDash(r.CleanedBy)}
		if wide {
			cols = append(cols, stampPtr(r.MarkedAt), stampPtr(r.TenantCreatedAt), orDash(r.StripeCustomerID),
				counts(controlplane.ControlTables, r.ControlRowsDeleted))
		}
		row(tw, cols...)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%s in the ledger (tenantctl ledger -o csv prints it as CSV)\n", plural(len(rows), "cleaned tenant"))
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
