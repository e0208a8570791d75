// Package ctl is tenantctl, the operators' command line: it validates and
// publishes manual cleanup requests (and, as the pipeline grows, reports on
// it). cmd/tenantctl only calls Main.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/kelseyhightower/envconfig"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

// command is one tenantctl subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, c *CLI, args []string) int
}

var commands = map[string]command{
	"cleanup": {"publish manual cleanup requests: cleanup TENANT_ID… | cleanup --csv FILE", runCleanup},
}

// CLI carries the streams a command writes to.
type CLI struct {
	Stdout, Stderr io.Writer
}

// Main runs tenantctl with args (without the program name) and returns the
// exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	c := &CLI{Stdout: stdout, Stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		c.usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "tenantctl: unknown command %q\n\n", args[0])
		c.usage(stderr)
		return 2
	}
	ctx, stop := service.SignalContext()
	defer stop()
	return cmd.run(ctx, c, args[1:])
}

func (c *CLI) usage(w io.Writer) {
	fmt.Fprintln(w, "tenantctl: operate the tenant cleanup pipeline\n\nUsage: tenantctl COMMAND [flags] [args]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun tenantctl COMMAND -h for a command's flags.\n\nConfiguration (environment variables):")
	var all struct {
		config.Common
	}
	config.Usage(w, &all)
}

// flags parses a subcommand's flags; -h prints them and its configuration.
func (c *CLI) flags(name, usage string, spec any, args []string, define func(*flag.FlagSet)) (*flag.FlagSet, int, bool) {
	fs := flag.NewFlagSet("tenantctl "+name, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	if define != nil {
		define(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(c.Stdout, "Usage: tenantctl %s %s\n", name, usage)
		fs.SetOutput(c.Stdout)
		fs.PrintDefaults()
		if spec != nil {
			fmt.Fprintln(c.Stdout, "\nConfiguration (environment variables):")
			config.Usage(c.Stdout, spec)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return fs, 0, false
		}
		return fs, 2, false
	}
	return fs, 0, true
}

// loadEnv fills spec from the environment.
func (c *CLI) loadEnv(spec any) bool {
	if err := envconfig.Process("", spec); err != nil {
		fmt.Fprintf(c.Stderr, "tenantctl: configuration: %v\n", err)
		return false
	}
	return true
}

func (c *CLI) errorf(format string, args ...any) {
	fmt.Fprintf(c.Stderr, "tenantctl: "+format+"\n", args...)
}

// requester names the operator in requests: tenantctl:user@host.
func requester() string {
	user := os.Getenv("USER")
	if user == "" {
		user = "unknown"
	}
	host, _ := os.Hostname()
	return "tenantctl:" + strings.TrimSpace(user) + "@" + host
}
