package ctl

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

const verifyHelp = `
Reconciles what operators used to check by hand, with one grouped query per
table: the tenant schemas (pg_namespace), the tenants' public rows
(user_tenant_mapping, user_tenant_mapping_oauth_account, tenant_shard,
tenant_anonymous_user_path, tenant_invite_counter, tenant_sso_domain), their
control-plane rows (tenant, subscription, tenant_config, tenant_notification)
and the ledger (tenant_cleanup.ledger; a missing table is an empty ledger).
It lists every inconsistent tenant with what is left of it, per table:

  (a) half-done cleanups: the schema is gone (or its drop by this pipeline
      began) but public or control-plane rows are left, and the ledger has no
      row for it;
  (b) in the ledger, yet its schema, public rows or control-plane rows are left;
  (c) orphans: public rows with neither a schema nor a control-plane row;
  (d) lost work: marked by this pipeline (its record on the data plane), not
      cleaned, and no drain check is scheduled or due for it (the JetStream
      store was lost or purged): nothing would ever check it again.

and every schema named tenant_cleanup_dropping_… (a drop under way renames
the schema so) that no record claims: left by a drop whose record is lost.

and every invalid tenant id found in those tables (shown quoted, never used
in a statement). A tenant with its schema and no ledger row is live: fine.

  (e) in the ledger, yet something is left in a store outside PostgreSQL:
      objects in the S3 file store (when S3_FILE_STORE_BUCKET_NAME or
      FILE_STORE_BACKEND=s3 is set), Redis keys or memberships (when
      REDIS_HOST is set), large objects the cleaner listed and did not
      unlink. tenantctl sweep --apply removes them (see tenantctl sweep -h).

Shards: when DATA_PLANE_SHARD_NAME is set, a tenant whose public.tenant_shard
row names another shard lives elsewhere; its missing schema is not an
inconsistency and it is only counted. When DATA_PLANE_SHARD_NAME is empty, a
tenant with a tenant_shard row and no schema here may live on another shard: it
is listed apart, under "on another shard?", and not counted as inconsistent.
With ONYX_DB_SHARDS (a sharded fleet) every shard is read: a tenant's
schema on any shard is its schema; verify lists the schemas per shard, the
schemas on a shard nothing places them on (stray copies), the placements
(public.tenant_shard) pointing at no schema, and counts the tenants placed on
a shard that is not configured.
Schemas named tenant_… that are not tenant ids are listed for information.

A tenant of (a) is completed by the pipeline only with evidence that its
cleanup began: this pipeline's record of its drop, or an operator's
confirmation (tenantctl cleanup TENANT_ID asks for it). Without it the schema
may have been renamed, be restored or live on another shard: it needs a human.

--repair lists the tenants it will request, asks (--force or --yes: do not
ask; without a terminal and without --force it refuses), then publishes a
cleanup request (requested_by "tenantctl verify --repair")
for each tenant of (a) with evidence and a control-plane tenant row in
GATED_ACCESS, and of (d): the pipeline checks it again and completes its
cleanup (for (d), the marker schedules its drain check again). It says what it
published and what needs a human: (b), (c), and (a) without evidence, without a
control-plane row or in another status (the pipeline would refuse those). Run
verify again once the pipeline has cleaned them.

-o json prints the reconciliation as one JSON document, -o csv one row per
inconsistent tenant and, in a sharded fleet, per shard finding (ten columns:
category, tenant_id, schema, rows left in public and the control plane, status,
repairable, requested, next step, shard; docs/tenantctl.md has them), -o wide
the tables without the cap of 50 rows.

Exit status: 0 consistent; 1 inconsistent (also after --repair: re-run verify
later), or a database or NATS could not be read; 2 bad arguments or
configuration.`

// repairedBy is the requested_by of verify --repair's requests.
const repairedBy = "tenantctl verify --repair"

// Problem categories.
const (
	halfCleaned = "a"
	inLedger    = "b"
	orphan      = "c"
	lostWork    = "d"
)

// leftover is one tenant with what is left of it.
type leftover struct {
	id          tenant.ID
	category    string
	schema      string // "present", "gone" or "partly dropped"
	public      map[string]int64
	control     map[string]int64
	status      string // control-plane application_status, "" without a tenant row
	shard       string
	cleanedAt   time.Time
	marked      time.Time // (d): the latest marking
	repairable  bool
	needsHuman  string
	publishedOK bool
}

// invalidID is a tenant id found in a table that is not a valid tenant id.
type invalidID struct {
	raw  string
	rows map[string]int64 // table → rows
}

// reconciliation is the result of comparing both planes and the ledger.
type reconciliation struct {
	shardName                                     string
	schemas, withPublic, inControl, ledgerTenants int
	problems                                      []leftover // (a), (b), (c), by category then id
	invalid                                       []invalidID
	elsewhere                                     int        // on another shard per tenant_shard (DATA_PLANE_SHARD_NAME set)
	maybeElsewhere                                []leftover // tenant_shard row, no schema, DATA_PLANE_SHARD_NAME empty
	oddSchemas                                    []string   // tenant_… schemas that are not tenant ids
	lostDrops                                     []string   // quarantine schemas no record claims

	// stores is (e): leftovers in the other stores (sweep.go).
	stores *storeCheck
	// shards is what a sharded fleet's shards hold (nil with one shard).
	shards *shardCheck
}

func (r *reconciliation) inconsistent() bool {
	return len(r.problems) > 0 || len(r.invalid) > 0 || len(r.lostDrops) > 0 || r.stores.found() || r.shards.found()
}

func (r *reconciliation) count(category string) int {
	n := 0
	for _, p := range r.problems {
		if p.category == category {
			n++
		}
	}
	return n
}

// reconcile classifies every tenant id found in either plane or the ledger;
// pending reports whether a drain check of a marked tenant is scheduled or
// due.
//
// configured, in a sharded fleet, names every configured shard: a tenant
// placed on one of them whose schema is on none is checked like any other
// (data holds the schemas of every shard); one placed elsewhere is counted.
func reconcile(data *dataplane.Inventory, control *controlplane.Inventory, shardName string, pending map[tenant.ID]bool,
	now time.Time, configured ...string) *reconciliation {
	r := &reconciliation{shardName: shardName, ledgerTenants: len(control.Ledger)}
	claimed := map[string]bool{}
	for _, rec := range data.Records {
		claimed[rec.Quarantine()] = true
	}
	for _, q := range slices.Sorted(maps.Keys(data.Quarantines)) {
		if !claimed[q] {
			r.lostDrops = append(r.lostDrops, q)
		}
	}
	keys := map[string]bool{}
	for k := range data.Schemas {
		keys[k] = true
	}
	for k := range data.PublicRows {
		keys[k] = true
	}
	for k := range control.Rows {
		keys[k] = true
	}
	for k := range control.Ledger {
		keys[k] = true
	}
	for _, key := range slices.Sorted(maps.Keys(keys)) {
		_, hasSchema := data.Schemas[key]
		id, err := tenant.ParseID(key)
		if err != nil {
			rows := map[string]int64{}
			maps.Copy(rows, data.PublicRows[key])
			for t, n := range control.Rows[key] {
				rows["control-plane "+t] += n
			}
			if _, ok := control.Ledger[key]; ok {
				rows["tenant_cleanup.ledger"] = 1
			}
			if len(rows) > 0 {
				r.invalid = append(r.invalid, invalidID{raw: key, rows: rows})
			}
			if hasSchema {
				r.oddSchemas = append(r.oddSchemas, key)
			}
			continue
		}
		partlyDropped := data.Schemas[key]
		rec := data.Records[key]
		public, ctl := data.PublicRows[key], control.Rows[key]
		if hasSchema {
			r.schemas++
		}
		if total(public) > 0 {
			r.withPublic++
		}
		if ctl["tenant"] > 0 {
			r.inControl++
		}
		l := leftover{id: id, public: public, control: ctl, status: control.Status[key], shard: data.Shards[key], schema: "gone"}
		underway := rec.Quarantine() != "" && data.Quarantines[rec.Quarantine()]
		switch {
		case partlyDropped:
			l.schema = "partly dropped"
		case hasSchema:
			l.schema = "present"
		case underway:
			l.schema = "being dropped (" + rec.Quarantine() + ")"
		}
		if cleaned, ok := control.Ledger[key]; ok {
			if hasSchema || total(public) > 0 || total(ctl) > 0 {
				l.category, l.cleanedAt = inLedger, cleaned
				l.needsHuman = "the ledger says it was cleaned, so the pipeline refuses it: see what is left and delete it by hand"
				r.problems = append(r.problems, l)
			}
			continue
		}
		if hasSchema && !partlyDropped {
			if rec.Marked() && !rec.AboutAnotherCopy(data.SchemaOIDs[key]) && ctl["tenant"] > 0 && !pending[id] {
				l.category, l.repairable = lostWork, true
				l.marked = rec.LastMarkedAt
				r.problems = append(r.problems, l)
			}
			continue // a live tenant
		}
		if !partlyDropped && !underway && l.shard != "" && len(configured) > 0 {
			if !slices.Contains(configured, l.shard) {
				r.elsewhere++
				continue
			}
		} else if !partlyDropped && !underway && l.shard != "" {
			if shardName != "" && l.shard != shardName {
				r.elsewhere++
				continue
			}
			if shardName == "" {
				r.maybeElsewhere = append(r.maybeElsewhere, l)
				continue
			}
		}
		evidence := rec.Evidence(now)
		switch {
		case ctl["tenant"] > 0:
			l.category = halfCleaned
			switch {
			case l.status != tenant.StatusGatedAccess && !rec.DropStarted():
				l.needsHuman = fmt.Sprintf("control-plane status is %q, not %s: the pipeline would refuse it", l.status, tenant.StatusGatedAccess)
			case evidence == "":
				l.needsHuman = "nothing shows that a cleanup of it began (schema renamed? being restored? on another shard?): " +
					"if it is an interrupted cleanup, confirm it with tenantctl cleanup " + string(id)
			default:
				l.repairable = true
			}
		case total(public) > 0 && !partlyDropped && !underway:
			l.category = orphan
			l.needsHuman = "no control-plane row, so the pipeline refuses it: delete its public rows by hand if the tenant is gone"
		default:
			l.category = halfCleaned
			l.needsHuman = "no control-plane tenant row, so the pipeline refuses it: finish it by hand"
		}
		r.problems = append(r.problems, l)
	}
	slices.SortStableFunc(r.problems, func(x, y leftover) int { return strings.Compare(x.category, y.category) })
	return r
}

func (c *CLI) verifyCmd() *cobra.Command {
	var (
		out           output
		repair, force bool
	)
	cmd := &cobra.Command{
		Use:     "verify",
		Short:   "reconcile schemas, public rows, control-plane rows and the ledger",
		Long:    helpText("Reconcile schemas, public rows, control-plane rows and the ledger.", verifyHelp),
		Args:    cobra.NoArgs,
		Example: "  tenantctl verify\n  tenantctl verify --repair\n  tenantctl verify -o json",
	}
	outputFlags(cmd, &out)
	cmd.Flags().BoolVar(&repair, "repair", false, "request the cleanup of the half-done cleanups the pipeline can complete (needs NATS; asks first)")
	forceFlags(cmd.Flags(), &force, "publishing the repair requests")
	cmd.RunE = runner(func(ctx context.Context, cmd *cobra.Command, _ []string) int {
		return c.runVerify(ctx, cmd, out, repair, force)
	})
	return cmd
}

func (c *CLI) runVerify(ctx context.Context, cmd *cobra.Command, out output, repair, force bool) int {
	var spec verifySpec
	if msg := out.check(); msg != "" {
		return c.usageError(cmd, "%s", msg)
	}
	if !c.loadEnv(cmd, &spec) {
		return exitUsage
	}
	env, err := openShards(ctx, spec.DataPlane, 2)
	if err != nil {
		return c.fail(ctx, err)
	}
	defer env.Close()
	data := env.Data
	control, closeControl, err := openControl(ctx, spec.ControlPlane, spec.Bastion)
	if err != nil {
		return c.fail(ctx, err)
	}
	defer closeControl()
	dataInv, err := data.Inventory(ctx)
	if err != nil {
		return c.fail(ctx, err)
	}
	var shards *shardCheck
	if len(env.Shards) > 0 {
		if shards, err = checkShards(ctx, env, dataInv); err != nil {
			return c.fail(ctx, err)
		}
	}
	controlInv, err := control.Inventory(ctx)
	if err != nil {
		return c.fail(ctx, err)
	}
	pending, err := pendingDrainChecks(ctx, spec.NATS, dataInv, controlInv)
	if err != nil {
		return c.fail(ctx, err)
	}
	var r *reconciliation
	if shards != nil {
		r = reconcile(dataInv, controlInv, env.CatalogShard, pending, time.Now(), shards.names...)
		r.shards = shards
	} else {
		r = reconcile(dataInv, controlInv, spec.ShardName, pending, time.Now())
	}
	if r.stores, err = checkStoresOf(ctx, &spec.OtherStores, env, control); err != nil {
		return c.fail(ctx, err)
	}

	var published []tenant.ID
	if repair {
		var todo []string
		var ids []tenant.ID
		for _, p := range r.problems {
			if p.repairable {
				ids = append(ids, p.id)
				todo = append(todo, string(p.id)+"\t("+p.category+")")
			}
		}
		if len(ids) > 0 {
			fmt.Fprintf(c.Stderr, "verify --repair requests the cleanup of %s, which the pipeline checks again and completes:\n",
				plural(len(ids), "tenant"))
			listCapped(c.Stderr, "  ", todo, listCap)
			if code := c.confirm(cmd, force, "Request the cleanup of "+these(len(ids), "tenant")+"?",
				"nothing was repaired"); code != exitOK {
				return code
			}
			b, err := connectBus(ctx, spec.NATS)
			if err != nil {
				return c.fail(ctx, fmt.Errorf("%w; nothing was repaired", err))
			}
			defer b.Close()
			n, err := publish(ctx, b, ids, repairedBy)
			if err != nil {
				return c.fail(ctx, fmt.Errorf("%w; published %d of %d repair requests (running verify --repair again is safe)", err, n, len(ids)))
			}
			published = ids
			for i := range r.problems {
				r.problems[i].publishedOK = r.problems[i].repairable
			}
		}
	}
	err = out.write(c, func(w io.Writer) error {
		switch out.format {
		case formatJSON:
			return writeJSON(w, newVerifyView(r, published))
		case formatCSV:
			return writeCSV(w, verifyCSVHeader, verifyCSV(r))
		}
		printReconciliation(w, r, repair, published, out.format == formatWide)
		return nil
	})
	if err != nil {
		return c.fail(ctx, err)
	}
	if r.inconsistent() {
		return exitFailed
	}
	return exitOK
}

// pendingDrainChecks looks up, for every tenant this pipeline marked and did
// not clean, whether a drain check of it is scheduled or due (or the
// pipeline reported it final: refused, stuck, dead).
func pendingDrainChecks(ctx context.Context, n config.NATS, data *dataplane.Inventory, control *controlplane.Inventory) (map[tenant.ID]bool, error) {
	var marked []tenant.ID
	for key, rec := range data.Records {
		id, err := tenant.ParseID(key)
		if err != nil || !rec.Marked() {
			continue
		}
		if _, cleaned := control.Ledger[key]; !cleaned && control.Rows[key]["tenant"] > 0 {
			marked = append(marked, id)
		}
	}
	pending := map[tenant.ID]bool{}
	if len(marked) == 0 {
		return pending, nil
	}
	b, err := connectBus(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("%w (verify looks up the drain checks of the %d marked tenants)", err, len(marked))
	}
	defer b.Close()
	for _, id := range marked {
		// A tenant the pipeline reported refused, stuck or dead is not lost:
		// status shows it.
		s, found, err := b.TenantState(ctx, id)
		if err != nil {
			return nil, err
		}
		p := found && s.Phase.Final()
		if !p {
			if p, err = b.DrainPending(ctx, id); err != nil {
				return nil, err
			}
		}
		pending[id] = p
	}
	return pending, nil
}

// printReconciliation prints the problems by category with their next step;
// wide lists every tenant "on another shard?" instead of the first 50.
func printReconciliation(w io.Writer, r *reconciliation, repair bool, published []tenant.ID, wide bool) {
	limit := listCap
	if wide {
		limit = len(r.maybeElsewhere) + len(r.oddSchemas)
	}
	shard := "DATA_PLANE_SHARD_NAME not set"
	if r.shardName != "" {
		shard = "DATA_PLANE_SHARD_NAME=" + r.shardName
	}
	if r.shards != nil {
		shard = "shards " + strings.Join(r.shards.names, ", ") + "; catalog " + r.shardName
	}
	fmt.Fprintf(w, "Verified %d tenant schemas, %d tenants with public rows, %d control-plane tenants, %d ledger rows (%s)\n",
		r.schemas, r.withPublic, r.inControl, r.ledgerTenants, shard)

	section := func(category, title string, header []any, cols func(leftover) []any) {
		n := r.count(category)
		if n == 0 {
			return
		}
		fmt.Fprintf(w, "\n(%s) %s: %d\n", category, title, n)
		tw := table(w)
		row(tw, header...)
		for _, p := range r.problems {
			if p.category == category {
				row(tw, cols(p)...)
			}
		}
		tw.Flush()
	}
	section(halfCleaned, "schema gone but rows left, no ledger row (half-done cleanups)",
		[]any{"TENANT", "SCHEMA", "PUBLIC ROWS", "CONTROL-PLANE ROWS", "STATUS", "NEXT STEP"},
		func(p leftover) []any {
			next := "tenantctl verify --repair requests it"
			switch {
			case p.publishedOK:
				next = "requested: the pipeline completes it"
			case !p.repairable:
				next = "needs a human: " + p.needsHuman
			}
			return []any{p.id, p.schema, counts(dataplane.PublicTables, p.public), counts(controlplane.ControlTables, p.control),
				orDash(p.status), next}
		})
	section(inLedger, "in the ledger but rows left",
		[]any{"TENANT", "CLEANED AT", "SCHEMA", "PUBLIC ROWS", "CONTROL-PLANE ROWS", "NEXT STEP"},
		func(p leftover) []any {
			return []any{p.id, stamp(p.cleanedAt), p.schema, counts(dataplane.PublicTables, p.public),
				counts(controlplane.ControlTables, p.control), "needs a human: " + p.needsHuman}
		})
	section(lostWork, "marked, not cleaned, and no drain check scheduled (lost work)",
		[]any{"TENANT", "MARKED", "CONTROL-PLANE ROWS", "STATUS", "NEXT STEP"},
		func(p leftover) []any {
			next := "tenantctl verify --repair requests it (the marker schedules its drain check again)"
			if p.publishedOK {
				next = "requested: the marker schedules its drain check again"
			}
			return []any{p.id, stamp(p.marked), counts(controlplane.ControlTables, p.control), orDash(p.status), next}
		})
	section(orphan, "public rows with neither schema nor control-plane row (orphans)",
		[]any{"TENANT", "PUBLIC ROWS", "NEXT STEP"},
		func(p leftover) []any {
			return []any{p.id, counts(dataplane.PublicTables, p.public), "needs a human: " + p.needsHuman}
		})
	if len(r.lostDrops) > 0 {
		fmt.Fprintf(w, "\nSchemas left by a drop whose record is lost (need a human): %d\n", len(r.lostDrops))
		tw := table(w)
		row(tw, "SCHEMA", "NEXT STEP")
		for _, q := range r.lostDrops {
			row(tw, q, "a tenant's schema renamed by this pipeline while it dropped it, and no record of which: "+
				"check its contents (COMMENT, tables), then drop it by hand")
		}
		tw.Flush()
	}
	if len(r.invalid) > 0 {
		fmt.Fprintf(w, "\nInvalid tenant ids in tenant tables (never used in a statement; need a human): %d\n", len(r.invalid))
		tw := table(w)
		row(tw, "TENANT ID (quoted)", "ROWS")
		for _, inv := range r.invalid {
			row(tw, tenant.QuoteInput(inv.raw), counts(nil, inv.rows))
		}
		tw.Flush()
	}
	if len(r.maybeElsewhere) > 0 {
		fmt.Fprintf(w, "\nOn another shard? %d tenants have a tenant_shard row but no schema here; not counted as inconsistent "+
			"(set DATA_PLANE_SHARD_NAME to tell)\n", len(r.maybeElsewhere))
		tw := table(w)
		row(tw, "TENANT", "SHARD", "PUBLIC ROWS", "CONTROL-PLANE ROWS")
		for i, p := range r.maybeElsewhere {
			if i == limit {
				row(tw, fmt.Sprintf("… and %d more", len(r.maybeElsewhere)-i), "", "", "")
				break
			}
			row(tw, p.id, p.shard, counts(dataplane.PublicTables, p.public), counts(controlplane.ControlTables, p.control))
		}
		tw.Flush()
	}
	if r.elsewhere > 0 {
		fmt.Fprintf(w, "\n%d tenants live on other shards (public.tenant_shard); not checked here\n", r.elsewhere)
	}
	if len(r.oddSchemas) > 0 {
		quoted := make([]string, len(r.oddSchemas))
		for i, s := range r.oddSchemas {
			quoted[i] = tenant.QuoteInput(s)
		}
		fmt.Fprintf(w, "\nSchemas named like tenants that are not tenant ids (never touched): %d\n", len(quoted))
		listCapped(w, "  ", quoted, limit)
	}
	printShardCheck(w, r.shards, limit)
	printStoreCheck(w, r.stores, time.Now())

	if !r.inconsistent() {
		fmt.Fprintln(w, "\nconsistent: no cleanup left anything behind")
		return
	}
	repairable, human := 0, 0
	for _, p := range r.problems {
		if p.repairable {
			repairable++
		} else {
			human++
		}
	}
	human += len(r.invalid)
	fmt.Fprintf(w, "\ninconsistent: %s (a %d, b %d, c %d, d %d), %s\n", plural(len(r.problems), "tenant"),
		r.count(halfCleaned), r.count(inLedger), r.count(orphan), r.count(lostWork), plural(len(r.invalid), "invalid tenant id"))
	if r.stores.found() {
		fmt.Fprintf(w, "(e) %s of the ledger left something in a store: tenantctl sweep --apply removes it\n", plural(len(r.stores.plan.Items), "tenant"))
	}
	switch {
	case len(published) > 0:
		ids := make([]string, len(published))
		for i, id := range published {
			ids[i] = string(id)
		}
		fmt.Fprintf(w, "published %s (requested_by %q): %s\n", plural(len(published), "cleanup request"), repairedBy, strings.Join(ids, ", "))
		fmt.Fprintln(w, "the pipeline checks each again and completes it; run tenantctl verify again once they are cleaned (tenantctl status TENANT_ID)")
	case repairable > 0 && !repair:
		fmt.Fprintf(w, "tenantctl verify --repair requests the cleanup of %s the pipeline can complete\n", plural(repairable, "tenant"))
	case repair:
		fmt.Fprintln(w, "nothing the pipeline can complete: no cleanup request published")
	}
	if human > 0 {
		fmt.Fprintf(w, "needs a human: %d (see NEXT STEP)\n", human)
	}
}
