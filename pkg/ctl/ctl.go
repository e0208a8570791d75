// Package ctl is tenantctl, the operators' command line: it publishes manual
// cleanup requests (and follows them), shows the pipeline's state and
// liveness, runs the analysis as a dry run, reconciles both databases with
// the ledger, exports the ledger, places and lifts holds, and lists and
// replays dead letters. cmd/tenantctl only calls Main.
//
// The commands are built on github.com/spf13/cobra (root.go): help, usage
// errors with suggestions, shell completion and --version come from it.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

// Exit statuses, the same for every command.
const (
	exitOK = 0
	// exitFailed: the command ran but the answer is "no" (not all cleaned,
	// inconsistent, unknown tenant, no such hold) or a dependency failed.
	exitFailed = 1
	// exitUsage: bad arguments, an invalid tenant id, bad configuration, or
	// a confirmation that cannot be asked; nothing was done.
	exitUsage = 2
	// exitInterrupted: SIGINT or SIGTERM.
	exitInterrupted = 130
)

// CLI carries the streams a command writes to.
type CLI struct {
	Stdout, Stderr io.Writer
	// Stdin is where answers to questions are read (os.Stdin when nil).
	Stdin io.Reader
	// terminal forces the progress display on or off (nil: on when Stdout
	// is a terminal).
	terminal *bool
	// interactive forces questions on or off (nil: asked when Stdin is a
	// terminal).
	interactive *bool
	// width is the terminal's width for the progress display (0: asked
	// from the terminal, 80 when it cannot say).
	width int
	// now is the clock (time.Now when nil).
	now func() time.Time
	// as is --as: who the operator is in requests, holds and the ledger.
	as string
}

// Main runs tenantctl with args (without the program name) and returns the
// exit status. SIGINT and SIGTERM cancel the command (exit status 130).
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := service.SignalContext()
	defer stop()
	return (&CLI{Stdout: stdout, Stderr: stderr}).Run(ctx, args)
}

// exitCode is the error a command returns to end with a status other than 0;
// the command has already said why.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// Run runs one command until it is done or ctx is cancelled, and returns its
// exit status. Usage mistakes (an unknown command or flag, wrong arguments)
// are one short message and exit status 2.
func (c *CLI) Run(ctx context.Context, args []string) int {
	root := c.newRoot()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code)
	}
	c.errorf("%v", err)
	fmt.Fprintf(c.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return exitUsage
}

func (c *CLI) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
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
	if c.interactive != nil {
		return *c.interactive
	}
	f, ok := c.stdin().(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
