package ctl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

const holdHelp = `
Places a hold on the tenant (or replaces its hold) in the control plane
(tenant_cleanup.hold). While it lasts the marker refuses the tenant (outcome
"held") and the cleaner neither checks nor cleans it (its next drain check
waits for the hold to end). The tenant need not exist yet: a hold can be placed
before any request. Placing it waits (up to 15 s) for a marking or cleanup of
the tenant under way: a hold and a cleanup never overlap.

--until ends the hold by itself. It accepts
  an RFC 3339 time      2026-12-01T09:00:00Z, 2026-12-01T10:00:00+01:00
  a date (UTC)          2026-12-01: the hold lasts through that day, until
                        2026-12-02T00:00:00Z
  a duration from now   72h, 90m (Go syntax: h, m, s)
and must be in the future. Without --until the hold lasts until tenantctl unhold.
The hold records who placed it (tenantctl:--as, else $TENANTCTL_AS, else
user@host) and when.

Exit status: 0 placed; 1 the control plane could not be reached; 2 invalid
tenant id, no --reason, a bad or past --until, or bad configuration.`

const unholdHelp = `
Lifts the tenant's hold, active or expired. The pipeline then treats the tenant
as usual: a pending drain check cleans it if it is still eligible and drained;
a tenant refused as held must be requested again (tenantctl cleanup TENANT_ID).

Exit status: 0 lifted; 1 the tenant has no hold, or the control plane could not
be reached; 2 invalid tenant id or bad configuration.`

func (c *CLI) holdCmd() *cobra.Command {
	var reason, until string
	cmd := &cobra.Command{
		Use:               "hold TENANT_ID --reason TEXT [--until TIME]",
		Short:             "keep a tenant from being marked or cleaned",
		Long:              helpText("Keep a tenant from being marked or cleaned.", holdHelp),
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeTenants,
		Example:           "  tenantctl hold " + exampleID + " --reason 'legal hold, ticket 123' --until 72h",
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the tenant must not be cleaned (required)")
	cmd.Flags().StringVar(&until, "until", "", "when the hold ends by itself: RFC 3339 time, YYYY-MM-DD (through that day, UTC) or a duration like 72h")
	cmd.RunE = runner(func(ctx context.Context, cmd *cobra.Command, args []string) int {
		return c.runHold(ctx, cmd, args[0], reason, until)
	})
	return cmd
}

func (c *CLI) runHold(ctx context.Context, cmd *cobra.Command, arg, reason, until string) int {
	id, err := tenant.ParseID(arg)
	if err != nil {
		c.errorf("%v", err)
		return exitUsage
	}
	reason = tenant.CleanText(reason, 500)
	if reason == "" {
		return c.usageError(cmd, "--reason is required: say why %s must not be cleaned", id)
	}
	now := c.clock()
	by, err := c.requester()
	if err != nil {
		c.errorf("%v", err)
		return exitUsage
	}
	h := tenant.Hold{ID: id, Reason: reason, By: by, At: now.UTC()}
	if until != "" {
		end, err := parseUntil(until, now)
		if err != nil {
			return c.usageError(cmd, "--until: %v", err)
		}
		h.Until = &end
	}
	control, closeControl, code := c.controlPlane(ctx, cmd)
	if control == nil {
		return code
	}
	defer closeControl()
	if err := control.Ensure(ctx); err != nil {
		return c.fail(ctx, err)
	}
	previous, inControl, err := control.PlaceHold(ctx, h, 15*time.Second)
	if err != nil {
		return c.fail(ctx, err)
	}
	ends := "until tenantctl unhold " + string(id)
	if h.Until != nil {
		ends = "until " + when(now, *h.Until)
	}
	fmt.Fprintf(c.Stdout, "held %s %s: %s (by %s)\n", id, ends, reason, h.By)
	if previous != nil {
		fmt.Fprintf(c.Stdout, "replaced the earlier hold: %s\n", previous.Describe())
	}
	if !inControl {
		fmt.Fprintf(c.Stdout, "note: the control plane has no tenant %s (not created yet, or already cleaned: tenantctl status %s)\n", id, id)
	}
	fmt.Fprintln(c.Stdout, "the marker and the cleaner leave it alone while the hold lasts")
	return exitOK
}

// parseUntil reads --until: an RFC 3339 time, a date (the hold lasts through
// that day, UTC) or a duration from now. The end must be in the future.
func parseUntil(s string, now time.Time) (time.Time, error) {
	var end time.Time
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		end = t
	} else if d, err := time.Parse(time.DateOnly, s); err == nil {
		end = d.AddDate(0, 0, 1) // through that day: until the next midnight UTC
	} else if dur, err := time.ParseDuration(s); err == nil {
		end = now.Add(dur)
	} else {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time (2026-12-01T09:00:00Z), a date (2026-12-01) or a duration (72h)", s)
	}
	if !end.After(now) {
		return time.Time{}, fmt.Errorf("%s is not in the future", end.UTC().Format(time.RFC3339))
	}
	return end.UTC(), nil
}

func (c *CLI) unholdCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "unhold TENANT_ID",
		Short:             "lift a tenant's hold",
		Long:              helpText("Lift a tenant's hold.", unholdHelp),
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeTenants,
		RunE: runner(func(ctx context.Context, cmd *cobra.Command, args []string) int {
			return c.runUnhold(ctx, cmd, args[0])
		}),
	}
}

func (c *CLI) runUnhold(ctx context.Context, cmd *cobra.Command, arg string) int {
	id, err := tenant.ParseID(arg)
	if err != nil {
		c.errorf("%v", err)
		return exitUsage
	}
	control, closeControl, code := c.controlPlane(ctx, cmd)
	if control == nil {
		return code
	}
	defer closeControl()
	h, removed, err := control.RemoveHold(ctx, id)
	if err != nil {
		return c.fail(ctx, err)
	}
	if !removed {
		return c.fail(ctx, errors.New(string(id)+" has no hold; nothing to lift (tenantctl status lists the holds)"))
	}
	state := "active"
	if !h.Active(c.clock()) {
		state = "expired"
	}
	fmt.Fprintf(c.Stdout, "lifted the hold on %s (%s, %s)\n", id, state, h.Describe())
	fmt.Fprintf(c.Stdout, "if it was refused as held, request it again: tenantctl cleanup %s\n", id)
	return exitOK
}
