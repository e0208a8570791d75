package ctl

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantcleanup/tenant-cleanup/pkg/analyzer"
)

const reportHelp = `
Runs the analyzer's analysis (both planes, the same rule, the same grouping)
and prints it; it publishes nothing and does not need NATS. The output is what
the original analyze script printed:
  - the summary by group (candidates, gated and active 30-INACTIVE_DAYS days
    ago, gated and active in the last 30 days, everyone else);
  - the top 100 tenants by documents: documents, users, last activity, days
    since, control-plane status, and whether it is eligible (or why not);
  - the distribution of documents per tenant (median, 75th, 90th, 95th, 99th
    percentile, max; the value at index floor(n*p) of the sorted counts, as
    the script computed it), over all tenants and over the candidates;
  - the tenants with no documents and with no users (count, share, and the
    first 50 of each).

-o csv prints the candidate CSV the analyzer writes
(tenant_id,num_documents,num_users,last_query_time,days_since_last_query),
which tenantctl cleanup --csv reads; -o json every tenant with its verdict;
-o wide the table with every tenant instead of the top 100. --output-file FILE
writes the output to FILE. --csv also writes the candidate CSV file: to FILE
(--csv=FILE), or with --csv alone to
gated_tenants_no_query_<span>_<YYYYMMDD_HHMMSS>.csv here, as the analyzer
names it, and says where on standard error.

Exit status: 0 done; 1 a database could not be read or the CSV not written;
2 bad arguments or configuration.`

// reportTop and listCap bound the report's lists.
const (
	reportTop = 100
	listCap   = 50
)

func (c *CLI) reportCmd() *cobra.Command {
	var (
		out    output
		csvOut string
	)
	cmd := &cobra.Command{
		Use:   "report",
		Short: "the analysis as a dry run (publishes nothing)",
		Long:  helpText("The analysis as a dry run: groups, top tenants, distribution (publishes nothing).", reportHelp),
		Args:  cobra.NoArgs,
		Example: "  tenantctl report\n  tenantctl report -o csv --output-file candidates.csv\n" +
			"  tenantctl cleanup --csv candidates.csv --dry-run",
	}
	outputFlags(cmd, &out)
	cmd.Flags().StringVar(&csvOut, "csv", "", "also write the analyzer's candidate CSV file: to `FILE` (--csv=FILE), or with --csv alone to the analyzer's file name here")
	cmd.Flags().Lookup("csv").NoOptDefVal = analyzerName
	cmd.RunE = runner(func(ctx context.Context, cmd *cobra.Command, _ []string) int {
		return c.runReport(ctx, cmd, out, csvOut)
	})
	return cmd
}

// analyzerName is --csv alone: the analyzer's own file name.
const analyzerName = "(the analyzer's file name)"

func (c *CLI) runReport(ctx context.Context, cmd *cobra.Command, out output, csvOut string) int {
	var spec analysisSpec
	if msg := out.check(); msg != "" {
		return c.usageError(cmd, "%s", msg)
	}
	if csvOut == "-" {
		return c.usageError(cmd, "--csv writes a file; for the candidates on standard output use -o csv")
	}
	if !c.loadEnv(cmd, &spec) {
		return exitUsage
	}
	r, code := c.analyze(ctx, spec)
	if r == nil {
		return code
	}
	err := out.write(c, func(w io.Writer) error {
		switch out.format {
		case formatCSV:
			return analyzer.WriteCSVTo(w, r)
		case formatJSON:
			return writeJSON(w, newReportView(r))
		}
		top := reportTop
		if out.format == formatWide {
			top = len(r.Tenants)
		}
		printReport(w, r, top)
		return nil
	})
	if err != nil {
		return c.fail(ctx, err)
	}
	if csvOut == "" {
		return exitOK
	}
	path := csvOut
	if path == analyzerName {
		path, err = analyzer.WriteCSVIn(".", spec.InactiveDays, r)
	} else {
		err = analyzer.WriteCSV(path, r)
	}
	if err != nil {
		return c.fail(ctx, err)
	}
	abs, _ := filepath.Abs(path)
	fmt.Fprintf(c.Stderr, "report: %s (%s)\n", abs, plural(len(r.Candidates()), "candidate"))
	return exitOK
}

// analyze runs the analyzer's analysis read-only; on failure it returns nil
// and the exit status.
func (c *CLI) analyze(ctx context.Context, spec analysisSpec) (*analyzer.Report, int) {
	env, err := openShards(ctx, spec.DataPlane, spec.DBMaxConns)
	if err != nil {
		return nil, c.fail(ctx, err)
	}
	defer env.Close()
	control, closeControl, err := openControl(ctx, spec.ControlPlane, spec.Bastion)
	if err != nil {
		return nil, c.fail(ctx, err)
	}
	defer closeControl()
	// Every shard of a sharded fleet, as the analyzer reads them.
	a := &analyzer.Analyzer{Data: env.Data, Shards: env.Shards, CatalogShard: env.CatalogShard, DefaultShard: env.DefaultShard,
		Control: control, InactiveDays: spec.InactiveDays, ReadAll: true,
		Workers: int(spec.DBMaxConns), Now: c.clock, Log: discard}
	r, err := a.Analyze(ctx)
	if err != nil {
		return nil, c.fail(ctx, err)
	}
	return r, exitOK
}

// printReport prints the report's tables, with the top tenants by documents.
func printReport(w io.Writer, r *analyzer.Report, topN int) {
	analyzer.PrintSummary(w, r)
	fmt.Fprintln(w, "dry run: nothing was published")

	var totalDocs int64
	for _, t := range r.Tenants {
		totalDocs += t.Activity.Documents
	}
	top := r.TopByDocuments(topN)
	fmt.Fprintf(w, "\nTop %d tenants by documents:\n", len(top))
	tw := table(w)
	row(tw, "RANK", "TENANT", "DOCUMENTS", "USERS", "LAST ACTIVITY", "DAYS SINCE", "STATUS", "ELIGIBLE")
	var topDocs int64
	for i, t := range top {
		topDocs += t.Activity.Documents
		last, days := "never", "-"
		if l := t.Activity.Last(); !l.IsZero() {
			last = l.UTC().Format(time.DateOnly)
			days = strconv.Itoa(int(r.At.Sub(l).Hours() / 24))
		}
		status := t.Status
		if !t.InControlPlane {
			status = "(no control-plane row)"
		}
		eligible := "yes"
		if !t.Eligible {
			eligible = "no: " + t.Reason
		}
		row(tw, i+1, t.ID, t.Activity.Documents, t.Activity.Users, last, days, status, eligible)
	}
	tw.Flush()
	fmt.Fprintf(w, "these %d hold %d of %d documents (%s)\n", len(top), topDocs, totalDocs, percent(topDocs, totalDocs))

	candidates := r.Candidates()
	fmt.Fprintln(w, "\nDocuments per tenant:")
	tw = table(w)
	row(tw, "", "TENANTS", "MEDIAN", "P75", "P90", "P95", "P99", "MAX")
	for _, set := range []struct {
		name    string
		tenants []analyzer.Tenant
	}{{"all tenants", r.Tenants}, {"candidates", candidates}} {
		d := analyzer.Documents(set.tenants)
		row(tw, set.name, d.Tenants, d.Median, d.P75, d.P90, d.P95, d.P99, d.Max)
	}
	tw.Flush()

	for _, list := range []struct {
		what    string
		tenants []analyzer.Tenant
	}{{"no documents", r.WithoutDocuments()}, {"no users", r.WithoutUsers()}} {
		fmt.Fprintf(w, "\nTenants with %s: %d (%s)\n", list.what, len(list.tenants),
			percent(int64(len(list.tenants)), int64(len(r.Tenants))))
		ids := make([]string, len(list.tenants))
		for i, t := range list.tenants {
			ids[i] = describeBrief(t)
		}
		listCapped(w, "  ", ids, listCap)
	}
}

// describeBrief is a tenant id with its status and eligibility, for lists.
func describeBrief(t analyzer.Tenant) string {
	status := t.Status
	if !t.InControlPlane {
		status = "no control-plane row"
	}
	s := string(t.ID) + "\t" + status
	if t.Eligible {
		s += ", candidate"
	}
	if !t.SchemaExists {
		s += ", schema gone"
	}
	return s
}

func percent(part, whole int64) string {
	if whole == 0 {
		return "0.00%"
	}
	return fmt.Sprintf("%.2f%%", float64(part)*100/float64(whole))
}
