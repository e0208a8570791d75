package ctl

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// confirm asks question (y/N) before a command destroys data, once the
// command has said what it will do. force (--force, --yes) answers yes.
// Without a terminal to ask on, it refuses: exit status 2 with how to
// proceed. A "no" is exit status 1. untouched says what was left alone
// ("nothing was published"). It returns exitOK to go on.
func (c *CLI) confirm(cmd *cobra.Command, force bool, question, untouched string) int {
	if force {
		return exitOK
	}
	if !c.stdinTerminal() {
		c.errorf("%s asks before it goes on, and standard input is not a terminal: run it again with --force (or --yes) to confirm; %s",
			cmd.CommandPath(), untouched)
		return exitUsage
	}
	fmt.Fprintf(c.Stdout, "%s [y/N] ", question)
	answer, _ := bufio.NewReader(c.stdin()).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
		c.errorf("not confirmed; %s", untouched)
		return exitFailed
	}
	return exitOK
}

// these names n things in a question: "this tenant", "these 3 tenants".
func these(n int, thing string) string {
	if n == 1 {
		return "this " + thing
	}
	return "these " + plural(n, thing)
}
