// Package ctl is tenantctl, the operators' command line: it publishes manual
// cleanup requests (and follows them), shows the pipeline's state, runs the
// analysis as a dry run, reconciles both databases with the ledger, exports
// the ledger, places and lifts holds, and lists and replays dead letters.
// cmd/tenantctl only calls Main.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Exit statuses, the same for every command.
const (
	exitOK = 0
	// exitFailed: the command ran but the answer is "no" (not all cleaned,
	// inconsistent, unknown tenant, no such hold) or a dependency failed.
	exitFailed = 1
	// exitUsage: bad arguments, an invalid tenant id or bad configuration;
	// nothing was done.
	exitUsage = 2
	// exitInterrupted: SIGINT or SIGTERM.
	exitInterrupted = 130
)

// command is one tenantctl subcommand.
type command struct {
	name    string
	args    string // the arguments after the name, for usage lines
	summary string
	// help says what the command does and what its exit statuses mean.
	help string
	run  func(ctx context.Context, c *CLI, cmd *command, args []string) int
}

// commands in the order tenantctl -h lists them.
var commands = []*command{
	{name: "status", args: "[TENANT_ID] [--json]", summary: "where tenants are in the pipeline: one tenant, or every phase, hold, pause and dead letter",
		help: statusHelp, run: runStatus},
	{name: "cleanup", args: "TENANT_ID… | --csv FILE [--wait [--timeout DURATION]]", summary: "publish manual cleanup requests, and with --wait follow them to the end",
		help: cleanupHelp, run: runCleanup},
	{name: "report", args: "[--csv[=FILE]]", summary: "the analysis as a dry run: groups, top tenants, distribution (publishes nothing)",
		help: reportHelp, run: runReport},
	{name: "verify", args: "[--repair]", summary: "reconcile schemas, public rows, control-plane rows and the ledger",
		help: verifyHelp, run: runVerify},
	{name: "ledger", args: "[--csv] [-o FILE]", summary: "the ledger of cleaned tenants, as a table or as cleaned_tenants.csv",
		help: ledgerHelp, run: runLedger},
	{name: "hold", args: "TENANT_ID --reason TEXT [--until TIME]", summary: "keep a tenant from being marked or cleaned",
		help: holdHelp, run: runHold},
	{name: "unhold", args: "TENANT_ID", summary: "lift a tenant's hold",
		help: unholdHelp, run: runUnhold},
	{name: "dead", args: "list | replay SEQ… | replay --all", summary: "list or replay the messages that failed too often",
		help: deadHelp, run: runDead},
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// CLI carries the streams a command writes to.
type CLI struct {
	Stdout, Stderr io.Writer
	// Stdin is where answers to questions are read (os.Stdin when nil).
	Stdin io.Reader
	// terminal forces the progress display of cleanup --wait on or off
	// (nil: on when Stdout is a terminal).
	terminal *bool
	// now is the clock (time.Now when nil).
	now func() time.Time
}

// Main runs tenantctl with args (without the program name) and returns the
// exit status. SIGINT and SIGTERM cancel the command (exit status 130).
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := service.SignalContext()
	defer stop()
	return (&CLI{Stdout: stdout, Stderr: stderr}).Run(ctx, args)
}

// Run runs one command until it is done or ctx is cancelled.
func (c *CLI) Run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 && lookup(args[1]) != nil { // tenantctl help COMMAND
			return c.Run(ctx, []string{args[1], "-h"})
		}
		c.usage(c.Stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd := lookup(args[0])
	if cmd == nil {
		fmt.Fprintf(c.Stderr, "tenantctl: unknown command %q\n\n", args[0])
		c.usage(c.Stderr)
		return exitUsage
	}
	return cmd.run(ctx, c, cmd, args[1:])
}

func (c *CLI) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

func (c *CLI) usage(w io.Writer) {
	fmt.Fprint(w, "tenantctl: operate the tenant cleanup pipeline\n\nUsage: tenantctl COMMAND [args] [flags]\n\nCommands:\n")
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprint(w, `
Run tenantctl COMMAND -h (or tenantctl help COMMAND) for its arguments, flags,
output, exit statuses and the variables it reads. Flags may come before or after
the arguments.

Exit status: 0 done (and the answer is yes), 1 the answer is no or something
failed (the message says what to do), 2 bad arguments or configuration (nothing
was done), 130 interrupted.

Configuration (environment variables; each command reads only those it needs):
`)
	var all struct {
		config.Common
	}
	config.Usage(w, &all)
}

// parse parses a command's flags, which may come before, between or after its
// positional arguments ("--" ends the flags), and returns the positional
// arguments. -h prints the command's help, flags and configuration to stdout.
func (c *CLI) parse(cmd *command, args []string, spec any, define func(*flag.FlagSet)) ([]string, int, bool) {
	fs := flag.NewFlagSet("tenantctl "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	if define != nil {
		define(fs)
	}
	fs.Usage = func() { c.help(cmd, fs, spec) }
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			fmt.Fprintf(c.Stderr, "Run tenantctl %s -h for help.\n", cmd.name)
			return nil, exitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, exitOK, true
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), exitOK, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// help prints a command's usage line, description, flags and configuration.
func (c *CLI) help(cmd *command, fs *flag.FlagSet, spec any) {
	w := c.Stdout
	fmt.Fprintf(w, "Usage: tenantctl %s %s\n\n%s\n", cmd.name, cmd.args, cmd.summary)
	if cmd.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.help))
	}
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(c.Stderr)
	}
	if spec != nil {
		fmt.Fprintln(w, "\nConfiguration (environment variables):")
		config.Usage(w, spec)
	}
}

// usageError prints a usage mistake and how to get help; it returns exitUsage.
func (c *CLI) usageError(cmd *command, format string, args ...any) int {
	c.errorf(format, args...)
	fmt.Fprintf(c.Stderr, "Usage: tenantctl %s %s (tenantctl %s -h for help)\n", cmd.name, cmd.args, cmd.name)
	return exitUsage
}

func (c *CLI) errorf(format string, args ...any) {
	fmt.Fprintf(c.Stderr, "tenantctl: "+format+"\n", args...)
}

func (c *CLI) stdin() io.Reader {
	if c.Stdin != nil {
		return c.Stdin
	}
	return os.Stdin
}

// stdinTerminal reports whether questions can be asked: standard input is a
// terminal.
func (c *CLI) stdinTerminal() bool {
	f, ok := c.stdin().(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// requester names the operator in requests and holds: tenantctl:user@host.
func requester() string {
	user := os.Getenv("USER")
	if user == "" {
		user = "unknown"
	}
	host, _ := os.Hostname()
	return tenant.CleanRequester("tenantctl:" + tenant.CleanText(user, 64) + "@" + tenant.CleanText(host, 64))
}
