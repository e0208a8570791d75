package ctl

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

const watchHelp = `
Re-attaches to cleanups in flight, the way cleanup --wait follows the requests
it publishes: with TENANT_IDs, those tenants; without, every tenant the
pipeline has not finished (requested, marked or draining; not held). Tenants already
finished (cleaned, refused, stuck, held, dead) count at once. It publishes
nothing. The display is cleanup --wait's: a progress line on a terminal (with
failures as they happen), plain lines otherwise, then each tenant's outcome.

Exit status: 0 every tenant cleaned (or none in flight); 1 a tenant ended
otherwise, or the timeout passed; 2 bad arguments or configuration; 130
interrupted (the pipeline goes on).`

func (c *CLI) watchCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:               "watch [TENANT_ID…]",
		Short:             "follow cleanups in flight until they end",
		Long:              helpText("Follow cleanups in flight until they end.", watchHelp),
		ValidArgsFunction: completeTenants,
		Example:           "  tenantctl watch\n  tenantctl watch " + exampleID + " --timeout 1h",
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long, listing the unfinished (0 = wait forever)")
	cmd.RunE = runner(func(ctx context.Context, cmd *cobra.Command, args []string) int {
		return c.runWatch(ctx, cmd, args, timeout)
	})
	return cmd
}

func (c *CLI) runWatch(ctx context.Context, cmd *cobra.Command, args []string, timeout time.Duration) int {
	if timeout < 0 {
		return c.usageError(cmd, "--timeout must be positive")
	}
	ids, invalid := validate(args)
	if invalid > 0 {
		for _, line := range ids.refusals {
			c.errorf("%s", line)
		}
		return exitUsage
	}
	b, code := c.natsBus(ctx, cmd)
	if b == nil {
		return code
	}
	defer b.Close()
	// Follow first, then read the states: an event between the two is seen.
	events, err := follow(ctx, b)
	if err != nil {
		return c.fail(ctx, err)
	}
	defer events.stop()
	states, err := b.States(ctx)
	if err != nil {
		return c.fail(ctx, err)
	}
	byID := map[tenant.ID]tenant.State{}
	for _, s := range states {
		byID[s.ID] = s
	}
	watched := ids.valid
	if len(watched) == 0 {
		for _, s := range states {
			// In flight: not finished, nor ended for a wait (a held tenant
			// is left alone while its hold lasts).
			if !s.Phase.Final() && !finalForWait[tenant.Outcome(s.Phase)] {
				watched = append(watched, s.ID)
			}
		}
		sort.Slice(watched, func(i, j int) bool { return watched[i] < watched[j] })
		if len(watched) == 0 {
			fmt.Fprintln(c.Stdout, "no cleanup in flight: every tenant the pipeline knows is finished (tenantctl status)")
			return exitOK
		}
	}
	p := newProgress(watched)
	for _, id := range watched {
		if s, ok := byID[id]; ok {
			p.apply(tenant.Event{TenantID: id, Outcome: tenant.Outcome(s.Phase), Reason: s.Reason})
		}
	}
	fmt.Fprintf(c.Stdout, "watching %s, %d finished already\n", plural(len(watched), "tenant"), p.finished)
	if !p.done() {
		c.warnIfNotConsuming(ctx, b)
	}
	return c.waitFor(ctx, events, p, timeout)
}
