package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mattn/go-runewidth"
	"github.com/spf13/cobra"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/filestore"
	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
	"github.com/tenantcleanup/tenant-cleanup/pkg/sweep"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// tenantctl sweep: the command glue of pkg/sweep, and the stores check of
// tenantctl verify.

const sweepHelp = `
Finds what cleaned tenants left in the stores outside their schemas and, with
--apply, removes it: their objects under S3_FILE_STORE_PREFIX/TENANT_ID/ in
the S3 file store, their Redis keys TENANT_ID:* and memberships in
cloud:gated_tenants and cloud:active_tenants, and the large objects the cleaner
listed for them and did not unlink. A store whose variables are unset is not
looked at. For the tenants cleaned before a store was configured (every row of
tenant_cleanup.ledger), and with --csv for the tenants the original scripts
cleaned: their cleaned_tenants.csv (a header row with a tenant_id column; the
scripts write tenant_id,cleaned_at). Every id in it is validated first: one
that is not a tenant id is shown (quoted) and nothing is done.

Without --apply it is a dry run: it lists each tenant with something left,
what is left in each store and what --apply would do, and removes nothing
(-o json or csv for scripts). With --apply it lists the same, asks (y/N) on a
terminal (--force or --yes does not ask; without a terminal and without
--force it refuses), then sweeps tenant by tenant: one progress line redrawn
on a terminal, a tenant not swept printed above it; otherwise one line per
tenant.

It never touches a tenant that still lives. A tenant whose schema exists on
the data plane (on any shard of ONYX_DB_SHARDS), whose drop by this pipeline
is under way, that has rows in the
shared public tables (live, on another shard, or a half-done cleanup: see
tenantctl verify) or a control-plane tenant row (whatever its status) is
refused, and judged again under the tenant's lock right before each store is
swept, so that a tenant listed in an old CSV that came back is left alone.

What was removed is appended to tenant_cleanup.sweep_log in the control plane
(one row per tenant and sweep: tenant_id, swept_at, swept_by, source,
removed, complete, error). Running it again is safe: what is gone is not
found again. A store that goes away stops the sweep (the rest is not
attempted); run it again once the store is back.

Large objects: after DROP SCHEMA nothing says whose a large object was, so only
those on the cleaner's list are removed, on the shard whose list names them. --large-objects also counts the large
objects no tenant's file_content and no list names (it reads every
file_content table); they are reported, never removed.

Exit status: 0 dry run done, or every tenant not refused swept clean; 1 a
store or database failed, a tenant could not be swept now (busy, failed, not
attempted: run again), or the question was answered no; 2 bad arguments or
configuration, an unreadable CSV or an invalid tenant id in it, or a question
that needs a terminal (nothing done); 130 interrupted.`

// sweepSpec: sweep (and the stores verify checks).
type sweepSpec struct {
	config.DataPlane
	config.ControlPlane
	config.Bastion
	config.OtherStores
}

// Validate checks both planes, the bastion and the configured stores.
func (s *sweepSpec) Validate() error {
	return errors.Join(s.DataPlane.Validate(), s.ControlPlane.Validate(), s.Bastion.Validate(), s.OtherStores.Validate())
}

// newSweeper opens the configured stores around the data plane's shards
// (env) and control.
func newSweeper(ctx context.Context, o *config.OtherStores, env *service.Env, control *controlplane.Store) (*sweep.Sweeper, func(), error) {
	s := &sweep.Sweeper{Data: env.Data, Shards: env.Shards, Control: control}
	closeAll := func() {}
	if o.FileStore.Enabled() {
		files, err := filestore.Open(ctx, o.FileStore.Config)
		if err != nil {
			return nil, nil, err
		}
		s.Files = files
	}
	if o.Redis.Enabled() {
		keys, err := rediskeys.Open(ctx, o.Redis.Config)
		if err != nil {
			return nil, nil, err
		}
		s.Keys = keys
		closeAll = func() { _ = keys.Close() }
	}
	return s, closeAll, nil
}

func (c *CLI) sweepCmd() *cobra.Command {
	var (
		out                 output
		csvPath             string
		apply, lobjs, force bool
	)
	cmd := &cobra.Command{
		Use:   "sweep [--csv FILE] [--apply]",
		Short: "remove what cleaned tenants left in S3, Redis and the large-object list (dry run unless --apply)",
		Long:  helpText("Remove what cleaned tenants left in S3, Redis and the cleaner's large-object list.", sweepHelp),
		Args:  cobra.NoArgs,
		Example: "  tenantctl sweep\n  tenantctl sweep --csv cleaned_tenants.csv\n  tenantctl sweep --csv cleaned_tenants.csv --apply\n" +
			"  tenantctl sweep -o json",
	}
	outputFlags(cmd, &out)
	cmd.Flags().StringVar(&csvPath, "csv", "", "also sweep the tenants of this cleaned_tenants.csv (`FILE` with a tenant_id column)")
	cmd.Flags().BoolVar(&apply, "apply", false, "remove what is left (asks first; without it: a dry run)")
	cmd.Flags().BoolVar(&lobjs, "large-objects", false, "also count the large objects nobody names (reads every file_content table)")
	forceFlags(cmd.Flags(), &force, "removing")
	cmd.RunE = runner(func(ctx context.Context, cmd *cobra.Command, _ []string) int {
		return c.runSweep(ctx, cmd, out, csvPath, apply, lobjs, force)
	})
	return cmd
}

func (c *CLI) runSweep(ctx context.Context, cmd *cobra.Command, out output, csvPath string, apply, lobjs, force bool) int {
	var spec sweepSpec
	if msg := out.check(); msg != "" {
		return c.usageError(cmd, "%s", msg)
	}
	if apply && out.format != formatTable && out.format != formatWide {
		return c.usageError(cmd, "-o %s lists a dry run: without --apply", out.format)
	}
	if !c.loadEnv(cmd, &spec) {
		return exitUsage
	}
	by, err := c.requester()
	if err != nil {
		c.errorf("%v", err)
		return exitUsage
	}
	var csvIDs []tenant.ID
	if csvPath != "" {
		var code int
		if csvIDs, code = c.readSweepCSV(csvPath); code != exitOK {
			return code
		}
	}
	env, err := openShards(ctx, spec.DataPlane, 4)
	if err != nil {
		return c.fail(ctx, err)
	}
	defer env.Close()
	control, closeControl, err := openControl(ctx, spec.ControlPlane, spec.Bastion)
	if err != nil {
		return c.fail(ctx, err)
	}
	defer closeControl()
	sw, closeStores, err := newSweeper(ctx, &spec.OtherStores, env, control)
	if err != nil {
		return c.fail(ctx, err)
	}
	defer closeStores()
	sw.LargeObjects, sw.By = lobjs, by

	plan, err := sw.Plan(ctx, csvIDs)
	if err != nil {
		return c.fail(ctx, fmt.Errorf("%w; nothing was removed", err))
	}
	switch out.format {
	case formatJSON, formatCSV:
		err := out.write(c, func(w io.Writer) error {
			if out.format == formatJSON {
				return writeJSON(w, newSweepView(plan))
			}
			return writeCSV(w, sweepCSVHeader, sweepCSV(plan))
		})
		if err != nil {
			return c.fail(ctx, err)
		}
		return exitOK
	}
	w := c.Stdout
	mode := "dry run"
	if apply {
		mode = "apply"
	}
	fmt.Fprintf(w, "Sweep (%s) of %s\n", mode, strings.Join(plan.Stores, "; "))
	if sw.Files == nil && sw.Keys == nil {
		fmt.Fprintln(w, "no S3 file store (S3_FILE_STORE_BUCKET_NAME, FILE_STORE_BACKEND) and no Redis (REDIS_HOST) configured")
	}
	source := fmt.Sprintf("%s in the ledger", plural(plan.Ledger, "tenant"))
	if csvPath != "" {
		source += fmt.Sprintf(", %d more only in %s", plan.CSV, tenant.QuoteInput(csvPath))
	}
	fmt.Fprintf(w, "Looked for %s: %d with something left, %d refused\n", source, len(plan.Items), plan.Refused())
	if plan.UnattributedLargeObjects >= 0 {
		fmt.Fprintf(w, "%s on the data plane that no tenant's file_content and no cleanup's list name: whose they were cannot be told "+
			"(DROP SCHEMA took the rows that named them), so they are left (review them with vacuumlo)\n",
			plural(int(plan.UnattributedLargeObjects), "large object"))
	}
	printPlan(w, plan)
	todo := len(plan.Items) - plan.Refused()
	if !apply {
		if todo > 0 {
			fmt.Fprintf(w, "\ndry run: nothing was removed; tenantctl sweep --apply%s removes what %s left\n", csvFlag(csvPath), plural(todo, "tenant"))
		} else {
			fmt.Fprintln(w, "\ndry run: nothing to remove")
		}
		return exitOK
	}
	if todo == 0 {
		fmt.Fprintln(w, "\nnothing to remove")
		return exitOK
	}
	if code := c.confirm(cmd, force, fmt.Sprintf("\nRemove what these %s left? It cannot be undone.", plural(todo, "tenant")),
		"nothing was removed"); code != exitOK {
		return code
	}
	fmt.Fprintln(w)
	return c.applySweep(ctx, sw, plan)
}

func csvFlag(path string) string {
	if path == "" {
		return ""
	}
	return " --csv " + path
}

// readSweepCSV reads the ids of a cleaned_tenants.csv; any invalid id
// refuses the whole sweep (exit 2).
func (c *CLI) readSweepCSV(path string) ([]tenant.ID, int) {
	f, err := os.Open(path)
	if err != nil {
		c.errorf("%v; nothing was done", err)
		return nil, exitUsage
	}
	defer f.Close()
	ids, invalid, err := sweep.ReadCSV(f)
	if err != nil {
		c.errorf("read %s: %v; nothing was done", tenant.QuoteInput(path), err)
		return nil, exitUsage
	}
	if len(invalid) > 0 {
		c.errorf("%s holds %s that %s not tenant ids; nothing was done:", tenant.QuoteInput(path),
			plural(len(invalid), "value"), map[bool]string{true: "is", false: "are"}[len(invalid) == 1])
		lines := make([]string, len(invalid))
		for i, in := range invalid {
			lines[i] = fmt.Sprintf("line %d\t%s", in.Line, in.Quoted)
		}
		listCapped(c.Stderr, "  ", lines, listCap)
		return nil, exitUsage
	}
	return ids, exitOK
}

// printPlan prints the tenants with something left and what --apply does.
func printPlan(w io.Writer, p *sweep.Plan) {
	if len(p.Items) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := table(w)
	row(tw, "TENANT", "SOURCE", "CLEANED AT", "S3 OBJECTS", "REDIS KEYS", "LARGE OBJECTS", "ACTION")
	for _, it := range p.Items {
		action := "remove"
		if it.Refused != "" {
			action = "refused: " + it.Refused
		}
		cleaned := "-"
		if !it.CleanedAt.IsZero() {
			cleaned = stamp(it.CleanedAt)
		}
		row(tw, it.ID, it.Source, cleaned, it.S3Objects, it.RedisKeys, it.LargeObjects, action)
	}
	tw.Flush()
}

// sweepTally adds up the results of a sweep.
type sweepTally struct {
	outcomes map[sweep.Outcome]int
	removed  sweep.Removed
}

func (t *sweepTally) add(r sweep.Result) {
	t.outcomes[r.Outcome]++
	t.removed.S3Objects += r.Removed.S3Objects
	t.removed.S3Bytes += r.Removed.S3Bytes
	t.removed.RedisKeys += r.Removed.RedisKeys
	t.removed.RedisMemberships += r.Removed.RedisMemberships
	t.removed.LargeObjects += r.Removed.LargeObjects
}

func (t *sweepTally) String() string {
	var parts []string
	for _, o := range []sweep.Outcome{sweep.Swept, sweep.Refused, sweep.Busy, sweep.Failed, sweep.Skipped} {
		if n := t.outcomes[o]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, o))
		}
	}
	return strings.Join(parts, ", ")
}

func removedText(r sweep.Removed) string {
	return fmt.Sprintf("S3 %s (%d bytes), Redis %s and %s, %s", plural(int(r.S3Objects), "object"), r.S3Bytes,
		plural(int(r.RedisKeys), "key"), plural(int(r.RedisMemberships), "membership"), plural(int(r.LargeObjects), "large object"))
}

// applySweep sweeps the plan with its progress, then the summary.
func (c *CLI) applySweep(ctx context.Context, sw *sweep.Sweeper, plan *sweep.Plan) int {
	w := c.Stdout
	scr := &screen{w: w, terminal: isTerminal(w), width: c.width}
	if c.terminal != nil {
		scr.terminal = *c.terminal
	}
	start := c.clock()
	tally := &sweepTally{outcomes: map[sweep.Outcome]int{}}
	progress := func(done int, r sweep.Result) {
		tally.add(r)
		line := fmt.Sprintf("[%d/%d] %s", done, len(plan.Items), resultLine(r))
		if !scr.terminal {
			fmt.Fprintln(w, line)
			return
		}
		if r.Outcome != sweep.Swept {
			fmt.Fprint(w, eraseLine+line+"\n") // named now, above the status line
		}
		const bar = 24
		filled := bar * done / len(plan.Items)
		status := fmt.Sprintf("[%s%s] %d/%d tenants (%s) | %d objects, %d keys removed | %s",
			strings.Repeat("#", filled), strings.Repeat("-", bar-filled), done, len(plan.Items), tally,
			tally.removed.S3Objects, tally.removed.RedisKeys, short(c.clock().Sub(start)))
		fmt.Fprint(w, eraseLine+runewidth.Truncate(status, scr.columns()-1, "…"))
		scr.drawn = true
	}
	_, err := sw.Apply(ctx, plan, progress)
	scr.end()
	fmt.Fprintf(w, "\n%d tenants: %s; removed %s; logged in tenant_cleanup.sweep_log\n", len(plan.Items), tally, removedText(tally.removed))
	switch {
	case ctx.Err() != nil:
		c.errorf("interrupted: the tenant in progress is finished or logged as it stood; run tenantctl sweep --apply again")
		return exitInterrupted
	case err != nil:
		c.errorf("%v\nrun tenantctl sweep --apply again once it is back: it continues where this one stopped", err)
		return exitFailed
	case tally.outcomes[sweep.Busy]+tally.outcomes[sweep.Failed] > 0:
		fmt.Fprintln(w, "some tenants could not be swept now (see above): run tenantctl sweep --apply again")
		return exitFailed
	}
	return exitOK
}

// resultLine is one tenant's result: "TENANT swept: S3 …".
func resultLine(r sweep.Result) string {
	s := fmt.Sprintf("%s %s", r.ID, r.Outcome)
	switch {
	case r.Outcome == sweep.Swept:
		s += ": " + removedText(r.Removed)
	case r.Err != nil:
		s += ": " + safe(r.Err.Error()) + "; removed before it: " + removedText(r.Removed)
	case r.Reason != "":
		s += ": " + safe(r.Reason)
	}
	return s
}

// storeCheck is what verify found in the stores of the ledgered tenants.
type storeCheck struct {
	plan *sweep.Plan
}

// found reports leftovers of ledgered tenants in a store.
func (s *storeCheck) found() bool { return s != nil && len(s.plan.Items) > 0 }

// checkStoresOf looks, for tenantctl verify, for what the ledger's tenants
// left in the configured stores.
func checkStoresOf(ctx context.Context, o *config.OtherStores, env *service.Env, control *controlplane.Store) (*storeCheck, error) {
	sw, closeStores, err := newSweeper(ctx, o, env, control)
	if err != nil {
		return nil, err
	}
	defer closeStores()
	plan, err := sw.Plan(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("look for leftovers of the ledger's tenants in the stores: %w", err)
	}
	return &storeCheck{plan: plan}, nil
}

// printStoreCheck prints verify's section on the stores.
func printStoreCheck(w io.Writer, s *storeCheck, now time.Time) {
	if s == nil {
		return
	}
	if !s.found() {
		fmt.Fprintf(w, "\nStores: nothing left of the ledger's tenants in %s\n", strings.Join(s.plan.Stores, "; "))
		return
	}
	fmt.Fprintf(w, "\n(e) in the ledger, yet something is left in a store: %d\n", len(s.plan.Items))
	tw := table(w)
	row(tw, "TENANT", "CLEANED AT", "S3 OBJECTS", "REDIS KEYS", "LARGE OBJECTS", "NEXT STEP")
	for _, it := range s.plan.Items {
		next := "tenantctl sweep --apply removes it"
		if it.Refused != "" {
			next = "needs a human: " + it.Refused
		}
		row(tw, it.ID, when(now, it.CleanedAt), it.S3Objects, it.RedisKeys, it.LargeObjects, next)
	}
	tw.Flush()
}

// sweepItemView is one tenant of sweep -o json, and of verify -o json's
// store_leftovers.
type sweepItemView struct {
	TenantID     tenant.ID  `json:"tenant_id"`
	Source       string     `json:"source"`
	CleanedAt    *time.Time `json:"cleaned_at"`
	S3Objects    int64      `json:"s3_objects"`
	RedisKeys    int64      `json:"redis_keys"`
	LargeObjects int64      `json:"large_objects"`
	Refused      string     `json:"refused,omitempty"`
}

func newSweepItemViews(items []sweep.Item) []sweepItemView {
	out := make([]sweepItemView, 0, len(items))
	for _, it := range items {
		v := sweepItemView{TenantID: it.ID, Source: string(it.Source), S3Objects: it.S3Objects, RedisKeys: it.RedisKeys,
			LargeObjects: it.LargeObjects, Refused: it.Refused}
		if !it.CleanedAt.IsZero() {
			t := it.CleanedAt.UTC()
			v.CleanedAt = &t
		}
		out = append(out, v)
	}
	return out
}

// sweepView is sweep -o json: the dry run.
type sweepView struct {
	Stores        []string        `json:"stores"`
	LedgerTenants int             `json:"ledger_tenants"`
	CSVTenants    int             `json:"csv_tenants"`
	Tenants       []sweepItemView `json:"tenants"`
	// UnattributedLargeObjects is null without --large-objects.
	UnattributedLargeObjects *int64 `json:"unattributed_large_objects"`
}

func newSweepView(p *sweep.Plan) sweepView {
	v := sweepView{Stores: p.Stores, LedgerTenants: p.Ledger, CSVTenants: p.CSV, Tenants: newSweepItemViews(p.Items)}
	if p.UnattributedLargeObjects >= 0 {
		n := p.UnattributedLargeObjects
		v.UnattributedLargeObjects = &n
	}
	return v
}

// sweepCSVHeader is the header of sweep -o csv.
var sweepCSVHeader = []string{"tenant_id", "source", "cleaned_at", "s3_objects", "redis_keys", "large_objects", "refused"}

func sweepCSV(p *sweep.Plan) [][]string {
	var rows [][]string
	for _, it := range p.Items {
		cleaned := ""
		if !it.CleanedAt.IsZero() {
			cleaned = it.CleanedAt.UTC().Format(time.RFC3339)
		}
		rows = append(rows, []string{string(it.ID), string(it.Source), cleaned, strconv.FormatInt(it.S3Objects, 10),
			strconv.FormatInt(it.RedisKeys, 10), strconv.FormatInt(it.LargeObjects, 10), tenant.SpreadsheetSafe(it.Refused)})
	}
	return rows
}
