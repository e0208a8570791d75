package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

const deadHelp = `
A message that fails more than DEAD_LETTER_AFTER times (an error that is not a
refusal, a "later" or an unavailable dependency) is moved to the stream
` + bus.StreamDead + ` with the reason, and its tenant is reported dead.

  tenantctl dead list            the dead letters, oldest first: sequence
                                 number, when, consumer, tenant, failures,
                                 reason and the subject it came from
  tenantctl dead replay SEQ…     re-publish these dead letters to the subject
                                 they came from and remove them from the stream
  tenantctl dead replay --all    re-publish every dead letter: lists them and
                                 asks first (--force or --yes: do not ask)

dead list takes -o table|wide|json|csv.

Fix the cause (the reason says what failed) before replaying: a message that
fails again comes back here.

Exit status: 0 done; 1 a dead letter could not be replayed (no such sequence
number, or NATS failed), the others were; 2 bad arguments or configuration.`

func (c *CLI) deadCmd() *cobra.Command {
	dead := &cobra.Command{
		Use:   "dead",
		Short: "list or replay the messages that failed too often",
		Long:  helpText("List or replay the messages that failed too often.", deadHelp),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.usageError(cmd, "dead needs a subcommand: list or replay")
			return exitCode(exitUsage)
		},
	}
	var out output
	list := &cobra.Command{
		Use:   "list",
		Short: "the dead letters, oldest first",
		Args:  cobra.NoArgs,
		RunE: runner(func(ctx context.Context, cmd *cobra.Command, _ []string) int {
			if msg := out.check(); msg != "" {
				return c.usageError(cmd, "%s", msg)
			}
			b, code := c.natsBus(ctx, cmd)
			if b == nil {
				return code
			}
			defer b.Close()
			return c.deadList(ctx, b, out)
		}),
	}
	outputFlags(list, &out)
	var all, force bool
	replay := &cobra.Command{
		Use:     "replay SEQ… | --all",
		Short:   "re-publish dead letters to the subject they came from",
		Args:    cobra.ArbitraryArgs,
		Example: "  tenantctl dead replay 12 13\n  tenantctl dead replay --all --yes",
		RunE: runner(func(ctx context.Context, cmd *cobra.Command, args []string) int {
			return c.runReplay(ctx, cmd, args, all, force)
		}),
	}
	replay.Flags().BoolVar(&all, "all", false, "every dead letter (asks first)")
	forceFlags(replay.Flags(), &force, "replaying every dead letter")
	dead.AddCommand(list, replay)
	return dead
}

// natsBus loads the NATS configuration and connects; on failure it returns
// nil and the exit status.
func (c *CLI) natsBus(ctx context.Context, cmd *cobra.Command) (*bus.Bus, int) {
	var spec natsSpec
	return c.connect(ctx, cmd, &spec, &spec.NATS)
}

func (c *CLI) runReplay(ctx context.Context, cmd *cobra.Command, args []string, all, force bool) int {
	var seqs []uint64
	for _, s := range args {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return c.usageError(cmd, "%q is not a dead-letter sequence number (tenantctl dead list shows them)", s)
		}
		seqs = append(seqs, n)
	}
	if all == (len(seqs) > 0) {
		return c.usageError(cmd, "dead replay needs either sequence numbers or --all")
	}
	b, code := c.natsBus(ctx, cmd)
	if b == nil {
		return code
	}
	defer b.Close()
	if all {
		dead, err := b.DeadLetters(ctx)
		if err != nil {
			return c.fail(ctx, err)
		}
		if len(dead) == 0 {
			fmt.Fprintln(c.Stdout, "no dead letters: nothing to replay")
			return exitOK
		}
		for _, d := range dead {
			seqs = append(seqs, d.Seq)
		}
		fmt.Fprintf(c.Stdout, "dead replay --all re-publishes %s to the subjects they came from:\n", plural(len(dead), "dead letter"))
		c.printDead(c.Stdout, dead)
		if code := c.confirm(cmd, force, "Replay "+these(len(dead), "dead letter")+"?", "nothing was replayed"); code != exitOK {
			return code
		}
	}
	failed := 0
	for _, seq := range seqs {
		d, err := b.Replay(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			err = fmt.Errorf("no dead letter %d (tenantctl dead list shows them)", seq)
		}
		if err != nil {
			if ctx.Err() != nil {
				return c.fail(ctx, err)
			}
			c.errorf("%v", err)
			failed++
			continue
		}
		who := string(d.Tenant)
		if who == "" {
			who = "no valid tenant id"
		}
		fmt.Fprintf(c.Stdout, "replayed dead letter %d (%s, consumer %s, %d failures) to %s\n", seq, who, d.Consumer, d.Failures, d.Subject)
	}
	if failed > 0 {
		c.errorf("%d of %d dead letters not replayed", failed, len(seqs))
		return exitFailed
	}
	fmt.Fprintf(c.Stdout, "replayed %s; follow them with tenantctl status TENANT_ID\n", plural(len(seqs), "dead letter"))
	return exitOK
}

func (c *CLI) deadList(ctx context.Context, b *bus.Bus, out output) int {
	dead, err := b.DeadLetters(ctx)
	if err != nil {
		return c.fail(ctx, err)
	}
	err = out.write(c, func(w io.Writer) error {
		switch out.format {
		case formatJSON:
			return writeJSON(w, append([]bus.DeadLetter{}, dead...))
		case formatCSV:
			return writeCSV(w, deadCSVHeader, deadCSV(dead))
		}
		if len(dead) == 0 {
			fmt.Fprintln(w, "no dead letters")
			return nil
		}
		c.printDead(w, dead)
		fmt.Fprintf(w, "\n%s; after fixing the cause: tenantctl dead replay SEQ… (or --all)\n", plural(len(dead), "dead letter"))
		return nil
	})
	if err != nil {
		return c.fail(ctx, err)
	}
	return exitOK
}

func (c *CLI) printDead(w io.Writer, dead []bus.DeadLetter) {
	now := c.clock()
	tw := table(w)
	row(tw, "SEQ", "TIME", "CONSUMER", "TENANT", "FAILURES", "REASON", "SUBJECT")
	for _, d := range dead {
		who := string(d.Tenant)
		if who == "" {
			who = "-"
		}
		row(tw, d.Seq, when(now, d.Time), d.Consumer, who, d.Failures, d.Reason, d.Subject)
	}
	tw.Flush()
}

// deadCSVHeader is the header of dead list -o csv.
var deadCSVHeader = []string{"seq", "time", "consumer", "tenant_id", "failures", "reason", "subject"}

func deadCSV(dead []bus.DeadLetter) [][]string {
	text := tenant.SpreadsheetSafe
	var rows [][]string
	for _, d := range dead {
		rows = append(rows, []string{strconv.FormatUint(d.Seq, 10), stamp(d.Time), text(d.Consumer), string(d.Tenant),
			strconv.Itoa(d.Failures), text(d.Reason), text(d.Subject)})
	}
	return rows
}
