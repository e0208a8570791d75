package ctl

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tenantcleanup/tenant-cleanup/pkg/buildinfo"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
)

const rootHelp = `Operate the tenant cleanup pipeline: request cleanups and follow them, see
where tenants are and whether the pipeline is alive, run the analysis as a dry
run, reconcile the databases with the ledger, export the ledger, hold tenants,
replay dead letters.

Flags may come before or after the arguments; "--" ends them. Listing commands
take -o table|wide|json|csv and write files only with --output-file.
Commands that destroy data say what they will do and ask first on a terminal;
--force (or --yes) confirms without asking; without a terminal and without
--force they refuse (exit status 2).

Exit status: 0 done (and the answer is yes), 1 the answer is no or something
failed (the message says what to do), 2 bad arguments or configuration, or a
question that could not be asked (nothing was done), 130 interrupted.`

// newRoot builds the command tree. Each command's help ends with the
// environment variables it reads (config.Usage of its spec).
func (c *CLI) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:     "tenantctl",
		Short:   "operate the tenant cleanup pipeline",
		Long:    rootHelp,
		Version: buildinfo.Version(),
		// tenantctl alone: the help, exit status 2 (as with any usage mistake).
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			return exitCode(exitUsage)
		},
		SilenceErrors:              true,
		SilenceUsage:               true,
		SuggestionsMinimumDistance: 2,
	}
	root.SetVersionTemplate(buildinfo.String("tenantctl") + "\n")
	root.SetOut(c.Stdout)
	root.SetErr(c.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	root.PersistentFlags().StringVar(&c.as, "as", "",
		"who you are in requests, holds and the ledger (default $TENANTCTL_AS, else your OS user@host)")
	root.CompletionOptions.HiddenDefaultCmd = false

	specs := map[*cobra.Command]any{root: &struct{ config.Common }{}}
	add := func(cmd *cobra.Command, spec any) {
		root.AddCommand(cmd)
		if spec != nil {
			specs[cmd] = spec
		}
	}
	add(c.statusCmd(), &lookupSpec{})
	add(c.watchCmd(), &natsSpec{})
	add(c.cleanupCmd(), &lookupSpec{})
	add(c.reportCmd(), &analysisSpec{})
	add(c.verifyCmd(), &verifySpec{})
	add(c.ledgerCmd(), &controlSpec{})
	add(c.sweepCmd(), &sweepSpec{})
	add(c.holdCmd(), &controlSpec{})
	add(c.unholdCmd(), &controlSpec{})
	dead := c.deadCmd()
	add(dead, &natsSpec{})
	for _, sub := range dead.Commands() {
		specs[sub] = &natsSpec{}
	}

	defaultHelp := root.HelpFunc()
	root.SetHelpFunc(func(cmd *cobra.Command, args []string) {
		defaultHelp(cmd, args)
		if spec, ok := specs[cmd]; ok {
			w := cmd.OutOrStdout()
			fmt.Fprintln(w, "\nConfiguration (environment variables):")
			config.Usage(w, spec)
		}
	})
	return root
}

// runner adapts a command's body, which prints its own messages and returns
// an exit status, to cobra.
func runner(body func(ctx context.Context, cmd *cobra.Command, args []string) int) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if code := body(cmd.Context(), cmd, args); code != exitOK {
			return exitCode(code)
		}
		return nil
	}
}

// usageError prints a usage mistake and how to get help; it returns exitUsage.
func (c *CLI) usageError(cmd *cobra.Command, format string, args ...any) int {
	c.errorf(format, args...)
	fmt.Fprintf(c.Stderr, "Usage: %s (%s --help for help)\n", cmd.UseLine(), cmd.CommandPath())
	return exitUsage
}

// forceFlags adds --force and its synonym --yes (-y) to fs, both setting force.
func forceFlags(fs *pflag.FlagSet, force *bool, what string) {
	fs.BoolVar(force, "force", false, "do not ask before "+what)
	fs.BoolVarP(force, "yes", "y", false, "the same as --force")
}

// completeTenants completes nothing but says that tenant ids are expected
// (the pipeline's ids are not listed: it may know thousands).
func completeTenants(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return nil, cobra.ShellCompDirectiveNoFileComp
}

// helpText trims a command's long help.
func helpText(summary, details string) string {
	return summary + "\n\n" + strings.TrimSpace(details)
}
