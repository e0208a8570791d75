package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
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
  tenantctl dead replay --all    re-publish every dead letter

Fix the cause (the reason says what failed) before replaying: a message that
fails again comes back here.

Exit status: 0 done; 1 a dead letter could not be replayed (no such sequence
number, or NATS failed), the others were; 2 bad arguments or configuration.`

func runDead(ctx context.Context, c *CLI, cmd *command, args []string) int {
	var (
		spec natsSpec
		all  bool
	)
	pos, code, ok := c.parse(cmd, args, &spec, func(fs *flag.FlagSet) {
		fs.BoolVar(&all, "all", false, "replay: every dead letter")
	})
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return c.usageError(cmd, "dead needs a subcommand: list or replay")
	}
	var seqs []uint64
	switch pos[0] {
	case "list":
		if len(pos) > 1 || all {
			return c.usageError(cmd, "dead list takes no arguments")
		}
	case "replay":
		for _, s := range pos[1:] {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil || n == 0 {
				return c.usageError(cmd, "%q is not a dead-letter sequence number (tenantctl dead list shows them)", s)
			}
			seqs = append(seqs, n)
		}
		if all == (len(seqs) > 0) {
			return c.usageError(cmd, "dead replay needs either sequence numbers or --all")
		}
	default:
		return c.usageError(cmd, "unknown subcommand %q: use list or replay", pos[0])
	}
	if !c.loadEnv(cmd, &spec) {
		return exitUsage
	}
	b, err := connectBus(ctx, spec.NATS)
	if err != nil {
		return c.fail(ctx, err)
	}
	defer b.Close()
	if pos[0] == "list" {
		return c.deadList(ctx, b)
	}
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

func (c *CLI) deadList(ctx context.Context, b *bus.Bus) int {
	dead, err := b.DeadLetters(ctx)
	if err != nil {
		return c.fail(ctx, err)
	}
	if len(dead) == 0 {
		fmt.Fprintln(c.Stdout, "no dead letters")
		return exitOK
	}
	now := c.clock()
	tw := table(c.Stdout)
	row(tw, "SEQ", "TIME", "CONSUMER", "TENANT", "FAILURES", "REASON", "SUBJECT")
	for _, d := range dead {
		who := string(d.Tenant)
		if who == "" {
			who = "-"
		}
		row(tw, d.Seq, when(now, d.Time), d.Consumer, who, d.Failures, d.Reason, d.Subject)
	}
	tw.Flush()
	fmt.Fprintf(c.Stdout, "\n%s; after fixing the cause: tenantctl dead replay SEQ… (or --all)\n", plural(len(dead), "dead letter"))
	return exitOK
}
