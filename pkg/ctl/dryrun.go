package ctl

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantcleanup/tenant-cleanup/pkg/analyzer"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// dryRun prints, for each requested tenant, what the pipeline would decide
// now: the analyzer's verdict (eligible or why not), its last activity and
// documents, its hold and whether it is already in the ledger. It publishes
// nothing. The exit status is 0 when every tenant is eligible or already
// cleaned, else 1.
func (c *CLI) dryRun(ctx context.Context, cmd *cobra.Command, ids []tenant.ID) int {
	var spec analysisSpec
	if !c.loadEnv(cmd, &spec) {
		return exitUsage
	}
	r, code := c.analyze(ctx, spec)
	if r == nil {
		return code
	}
	control, closeControl, err := openControl(ctx, spec.ControlPlane, spec.Bastion)
	if err != nil {
		return c.fail(ctx, err)
	}
	defer closeControl()
	cleaned, err := control.Cleaned(ctx, ids)
	if err != nil && !controlplane.NoLedger(err) {
		return c.fail(ctx, err)
	}
	byID := map[tenant.ID]analyzer.Tenant{}
	for _, t := range r.Tenants {
		byID[t.ID] = t
	}
	now := c.clock()
	tw := table(c.Stdout)
	row(tw, "TENANT", "VERDICT", "LAST ACTIVITY", "DOCUMENTS", "HOLD")
	eligible, done := 0, 0
	for _, id := range ids {
		hold := "none"
		h, held, err := control.Hold(ctx, id)
		if err != nil && !controlplane.NoLedger(err) {
			return c.fail(ctx, err)
		}
		if held {
			hold = h.Describe()
			if !h.Active(now) {
				hold += " (expired)"
			}
		}
		t, known := byID[id]
		verdict, last, docs := "unknown: no schema and no control-plane row", "-", "-"
		switch {
		case cleaned[id]:
			verdict = "already cleaned (in the ledger): not requested again"
			done++
		case !known:
		case t.Eligible && held && h.Active(now):
			verdict = "held: the pipeline leaves it alone while the hold lasts"
		case t.Eligible:
			verdict = "eligible"
			eligible++
		default:
			verdict = "not eligible: " + t.Reason
		}
		if known {
			docs = strconv.FormatInt(t.Activity.Documents, 10)
			if l := t.Activity.Last(); !l.IsZero() {
				last = l.UTC().Format(time.DateOnly) + " (" + relative(now, l) + ")"
			} else {
				last = "never"
			}
		}
		row(tw, id, verdict, last, docs, hold)
	}
	tw.Flush()
	fmt.Fprintf(c.Stdout, "\ndry run: %d eligible, %d already cleaned, %d neither, of %s; nothing was published\n",
		eligible, done, len(ids)-eligible-done, plural(len(ids), "tenant"))
	if eligible+done < len(ids) {
		return exitFailed
	}
	return exitOK
}
