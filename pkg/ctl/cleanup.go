package ctl

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

const cleanupHelp = `
Validates every tenant id first (tenant_<lower-case uuid>, tenant_i-<hex> or
tenant_dev); if one is invalid it says why, publishes nothing and exits 1.
Otherwise it publishes one request per tenant (duplicates once) on
` + bus.SubjectCandidate + `, requested by tenantctl:WHO (--as, else
$TENANTCTL_AS, else your OS user@host), and the tenant is recorded as
"requested". A tenant already cleaned (in the ledger when the control plane is
configured, else per the pipeline's state) is reported as already cleaned and
not requested again: running a CSV again after a partial run finishes the rest.

--csv FILE lists what it will request and asks first (y/N) on a terminal;
--force (or --yes) does not ask; without a terminal and without --force it
refuses (exit status 2) and publishes nothing.

--dry-run prints each tenant's verdict now, read from both planes with the
analyzer's rule: eligible or why not, last activity, documents, hold, already
cleaned. It publishes nothing and needs DATA_PLANE_DATABASE_URL and the
control plane, not NATS. The marker and the cleaner then check and clean each one
exactly as they do the analyzer's candidates: a tenant that is not eligible is
refused.

A tenant whose schema is gone but whose rows remain is completed by the
pipeline only with evidence that its cleanup began. When
DATA_PLANE_DATABASE_URL is set, cleanup looks each tenant up first; for such a
tenant without evidence (its schema may have been renamed, be restored, or
live on another shard) it says what completing it deletes and asks; --force
confirms without asking. The confirmation is recorded on the data plane
(tenant_cleanup.progress), where the pipeline looks for it. Without a terminal
and without --force, nothing is published.

--wait follows the requests to their end: a progress line that fits the
terminal (failures printed above it as they happen; without a terminal one
line per tenant as it finishes) until every tenant is cleaned, refused, stuck,
held or dead, then a table of each tenant's outcome and reason. It says at once
when no marker or no cleaner is consuming (the requests wait in NATS until one
runs). tenantctl watch re-attaches to cleanups in flight. Marked, draining, capped and paused are progress. Draining waits
for Onyx to delete the documents, which can take hours: --timeout bounds the
wait (0 = forever). Interrupting the wait (Ctrl-C) leaves the requests
published and the pipeline working on them.

Exit status: 0 published or already cleaned (with --wait: every tenant
cleaned); 1 an invalid id (nothing published), NATS failed, a question answered
no, or with --wait a tenant ended otherwise than cleaned or the timeout passed
(the unfinished are listed); 2 no ids, bad flags or configuration, or a
question that needs a terminal; 130 interrupted.`

// publishers bounds the requests published at once.
const publishers = 16

// cleanupOpts are cleanup's flags.
type cleanupOpts struct {
	csvPath string
	wait    bool
	force   bool
	dryRun  bool
	timeout time.Duration
}

func (c *CLI) cleanupCmd() *cobra.Command {
	var o cleanupOpts
	cmd := &cobra.Command{
		Use:               "cleanup TENANT_ID… | --csv FILE",
		Short:             "publish manual cleanup requests, and with --wait follow them to the end",
		Long:              helpText("Publish manual cleanup requests, and with --wait follow them to the end.", cleanupHelp),
		ValidArgsFunction: completeTenants,
		Example: "  tenantctl cleanup " + exampleID + " --wait\n  tenantctl cleanup --csv candidates.csv --dry-run\n" +
			"  tenantctl cleanup --csv candidates.csv --wait --timeout 8h",
	}
	fs := cmd.Flags()
	fs.StringVar(&o.csvPath, "csv", "", "read tenant ids from the tenant_id column of this CSV `FILE` (asks before publishing)")
	fs.BoolVar(&o.wait, "wait", false, "follow the requests until each tenant is cleaned, refused, stuck, held or dead")
	fs.DurationVar(&o.timeout, "timeout", 0, "with --wait: give up after this long, listing the unfinished (0 = wait forever)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print each tenant's verdict now (eligible or why not, last activity, documents, hold) and publish nothing")
	forceFlags(fs, &o.force, "publishing a CSV's requests or completing tenants whose schema is gone")
	cmd.RunE = runner(func(ctx context.Context, cmd *cobra.Command, args []string) int {
		return c.runCleanup(ctx, cmd, o, args)
	})
	return cmd
}

// runCleanup validates every requested id first and publishes only when all
// are valid: an invalid request is refused with its reason, the exit status
// is 1 and nothing is published. Tenants already cleaned are reported so and
// not published again.
func (c *CLI) runCleanup(ctx context.Context, cmd *cobra.Command, o cleanupOpts, raw []string) int {
	if o.timeout < 0 || (o.timeout > 0 && !o.wait) {
		return c.usageError(cmd, "--timeout must be positive and goes with --wait")
	}
	if o.dryRun && o.wait {
		return c.usageError(cmd, "--dry-run publishes nothing, so there is nothing to --wait for")
	}
	if o.csvPath != "" {
		ids, err := readCSV(o.csvPath)
		if err != nil {
			c.errorf("%v; nothing was published", err)
			return exitFailed
		}
		raw = append(raw, ids...)
	}
	if len(raw) == 0 {
		return c.usageError(cmd, "no tenant ids given: tenantctl cleanup TENANT_ID… or tenantctl cleanup --csv FILE")
	}
	ids, invalid := validate(raw)
	if invalid > 0 {
		for _, line := range ids.refusals {
			c.errorf("%s", line)
		}
		c.errorf("refused %d of %d requests; nothing was published. Fix or remove them and run again.", invalid, len(raw))
		return exitFailed
	}
	if o.dryRun {
		return c.dryRun(ctx, cmd, ids.valid)
	}
	var spec lookupSpec
	if !c.loadEnv(cmd, &spec) {
		return exitUsage
	}
	by, err := c.requester()
	if err != nil {
		c.errorf("%v; nothing was published", err)
		return exitUsage
	}
	b, err := connectBus(ctx, spec.NATS)
	if err != nil {
		c.errorf("%v; nothing was published", err)
		return exitFailed
	}
	defer b.Close()
	todo, done, err := c.alreadyCleaned(ctx, b, spec, ids.valid)
	if err != nil {
		c.errorf("%v; nothing was published", err)
		return exitFailed
	}
	if len(todo) > 0 && spec.OptionalDataPlane.Configured() {
		if code := c.confirmCompletions(ctx, cmd, spec.OptionalDataPlane.DataPlane(), todo, o.force, by); code != exitOK {
			return code
		}
	}
	if len(todo) > 0 && o.csvPath != "" {
		fmt.Fprintf(c.Stdout, "cleanup --csv %s requests the cleanup of %s (the pipeline checks each again and refuses those not eligible):\n",
			o.csvPath, plural(len(todo), "tenant"))
		listCapped(c.Stdout, "  ", idStrings(todo), 10)
		// On a terminal it asks; from a script (no terminal) a CSV is
		// published as the contract says: requesting destroys nothing,
		// the pipeline checks each tenant again.
		if c.stdinTerminal() {
			if code := c.confirm(cmd, o.force, fmt.Sprintf("Publish %s?", plural(len(todo), "cleanup request")), "nothing was published"); code != exitOK {
				return code
			}
		}
	}
	var events *follower
	if o.wait && len(todo) > 0 {
		// Follow from before publishing, so that no outcome is missed.
		if events, err = follow(ctx, b); err != nil {
			c.errorf("%v; nothing was published", err)
			return exitFailed
		}
		defer events.stop()
	}
	published, err := publish(ctx, b, todo, by)
	if err != nil {
		c.errorf("%v; published %d of %d requests (publishing them all again is safe)", err, published, len(todo))
		if ctx.Err() != nil {
			return exitInterrupted
		}
		return exitFailed
	}
	if len(todo) > 0 {
		fmt.Fprintf(c.Stdout, "published %d cleanup request(s) on %s\n", len(todo), bus.SubjectCandidate)
	}
	if !o.wait || len(todo) == 0 {
		return exitOK
	}
	c.warnIfNotConsuming(ctx, b)
	p := newProgress(ids.valid)
	for _, ev := range done {
		p.apply(ev)
	}
	return c.waitFor(ctx, events, p, o.timeout)
}

// alreadyCleaned splits ids into those to publish and those already cleaned
// (per the ledger when a control plane is configured, else per the
// pipeline's state), which it reports as such: a CSV run again after a
// partial run finishes what is left.
func (c *CLI) alreadyCleaned(ctx context.Context, b *bus.Bus, spec lookupSpec, ids []tenant.ID) ([]tenant.ID, map[tenant.ID]tenant.Event, error) {
	cleaned := map[tenant.ID]string{}
	if spec.ControlPlane.Configured() {
		control, closeControl, err := openControl(ctx, spec.ControlPlane, spec.Bastion)
		if err != nil {
			return nil, nil, err
		}
		defer closeControl()
		in, err := control.Cleaned(ctx, ids)
		if err != nil && !controlplane.NoLedger(err) {
			return nil, nil, err
		}
		for id, ok := range in {
			if ok {
				cleaned[id] = "in the ledger"
			}
		}
	}
	for _, id := range ids {
		if _, ok := cleaned[id]; ok {
			continue
		}
		s, found, err := b.TenantState(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		if found && s.Phase == tenant.PhaseCleaned {
			at := s.Since
			if s.CleanedAt != nil {
				at = *s.CleanedAt
			}
			cleaned[id] = "cleaned at " + stamp(at)
		}
	}
	var todo []tenant.ID
	done := map[tenant.ID]tenant.Event{}
	for _, id := range ids {
		why, ok := cleaned[id]
		if !ok {
			todo = append(todo, id)
			continue
		}
		done[id] = tenant.Event{TenantID: id, Outcome: tenant.OutcomeCleaned, Reason: "already cleaned (" + why + "); not requested again"}
		fmt.Fprintf(c.Stdout, "%s: already cleaned (%s); not requested again\n", id, why)
	}
	return todo, done, nil
}

// idStrings converts ids for listCapped.
func idStrings(ids []tenant.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = string(id)
	}
	return out
}

// confirmCompletions looks up each tenant on the data plane; for a tenant
// whose schema is gone, whose rows remain and whose cleanup has no evidence,
// it says what completing it deletes, asks (or takes --force), and records
// the confirmation. It publishes nothing; a tenant not confirmed stops the
// command before anything is published.
func (c *CLI) confirmCompletions(ctx context.Context, cmd *cobra.Command, dp config.DataPlane, ids []tenant.ID, force bool, by string) int {
	env, err := openShards(ctx, dp, 2)
	if err != nil {
		c.errorf("%v; nothing was published", err)
		return exitFailed
	}
	defer env.Close()
	data := env.Data
	var todo []tenant.ID
	for _, id := range ids {
		fp, err := data.Footprint(ctx, id)
		if err != nil {
			c.errorf("%v; nothing was published", err)
			return exitFailed
		}
		if fp.SchemaExists || fp.PublicRows == 0 || fp.Record.Evidence(time.Now()) != "" {
			continue
		}
		// In a sharded fleet its schema may be on another shard: then it
		// is not gone, and there is nothing to confirm.
		if len(env.Shards) > 0 {
			where, err := tenantShards(ctx, env, id)
			if err != nil {
				c.errorf("%v; nothing was published", err)
				return exitFailed
			}
			if len(where.SchemaOn) > 0 {
				continue
			}
			if len(where.Unreachable) > 0 || !where.Configured {
				fmt.Fprintf(c.Stdout, "%s: %s: not asking to complete it (the pipeline refuses it while this is so)\n", id, where.describe())
				continue
			}
		}
		fmt.Fprintf(c.Stdout, "%s: its schema is not on the data plane, and nothing shows that a cleanup of it began.\n"+
			"  Completing it deletes its %d public rows and, if it is GATED_ACCESS and inactive, its control-plane rows.\n"+
			"  If its schema was renamed, is being restored or lives on another shard, do not complete it.\n",
			id, fp.PublicRows)
		todo = append(todo, id)
	}
	if len(todo) == 0 {
		return exitOK
	}
	if code := c.confirm(cmd, force, fmt.Sprintf("Complete the cleanup of %d tenant(s) whose schema is gone?", len(todo)),
		"nothing was published"); code != exitOK {
		return code
	}
	if _, err := data.Ensure(ctx, false); err != nil {
		c.errorf("%v; nothing was published", err)
		return exitFailed
	}
	for _, id := range todo {
		if err := data.ConfirmCompletion(ctx, id, by); err != nil {
			c.errorf("%v; nothing was published", err)
			return exitFailed
		}
	}
	fmt.Fprintf(c.Stdout, "recorded your confirmation for %d tenant(s)\n", len(todo))
	return exitOK
}

// publish publishes a request for each tenant (which records it as
// requested), a few at a time; it stops at the first error and returns how
// many were published.
func publish(ctx context.Context, b *bus.Bus, ids []tenant.ID, by string) (int, error) {
	var (
		mu        sync.Mutex
		published int
		firstErr  error
		wg        sync.WaitGroup
		next      = make(chan tenant.ID)
	)
	now := time.Now().UTC()
	for range min(publishers, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				err := b.PublishRequest(ctx, tenant.Request{ID: id, RequestedBy: by, RequestedAt: now})
				mu.Lock()
				if err == nil {
					published++
				} else if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		next <- id
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return published, firstErr
}

type validated struct {
	valid    []tenant.ID
	refusals []string
}

// validate parses every id; duplicates are published once.
func validate(raw []string) (validated, int) {
	var v validated
	seen := map[tenant.ID]bool{}
	for _, s := range raw {
		id, err := tenant.ParseID(s)
		if err != nil {
			v.refusals = append(v.refusals, "refused: "+err.Error())
			continue
		}
		if !seen[id] {
			seen[id] = true
			v.valid = append(v.valid, id)
		}
	}
	return v, len(v.refusals)
}

// readCSV returns the tenant_id column of a CSV file with a header row.
func readCSV(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("read %s: no header row: %w", path, err)
	}
	col := -1
	for i, h := range header {
		if h == "tenant_id" || (i == 0 && h == "\ufefftenant_id") {
			col = i
		}
	}
	if col < 0 {
		return nil, fmt.Errorf("read %s: no tenant_id column in the header %q", path, header)
	}
	var ids []string
	for line := 2; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return ids, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if col >= len(rec) {
			return nil, fmt.Errorf("read %s: line %d has no tenant_id field", path, line)
		}
		ids = append(ids, rec[col])
	}
}
