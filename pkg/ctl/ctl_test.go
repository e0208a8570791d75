package ctl

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func TestHelp(t *testing.T) {
	t.Setenv("DATA_PLANE_DATABASE_URL", "postgres://app:dp-secret@db/onyx")
	t.Setenv("CONTROL_PLANE_RDS_PASSWORD", "cp-secret")
	t.Setenv("NATS_URL", "nats://u:nats-secret@127.0.0.1:4222")
	stdout, _ := mustRun(t, 0, "-h")
	contains(t, "tenantctl -h", stdout, "status", "cleanup", "report", "verify", "ledger", "hold", "unhold", "dead",
		"Exit status: 0", "130 interrupted", "DATA_PLANE_DATABASE_URL", "CONTROL_PLANE_RDS_HOST", "BASTION_HOST", "NATS_URL", "INACTIVE_DAYS")
	mustRun(t, 2) // no command: the usage, exit 2
	_, stderr := mustRun(t, 2, "frobnicate")
	contains(t, "unknown command", stderr, `unknown command "frobnicate"`, "tenantctl --help")
	if n := strings.Count(stderr, "\n"); n > 6 {
		t.Errorf("a mistyped command prints %d lines:\n%s", n, stderr)
	}
	_, stderr = mustRun(t, 2, "stauts")
	contains(t, "a misspelt command", stderr, "Did you mean this?", "status")
	stdout, _ = mustRun(t, 0, "--version")
	contains(t, "--version", stdout, "tenantctl devel (commit ")
	stdout, _ = mustRun(t, 0, "completion", "bash")
	contains(t, "completion bash", stdout, "bash completion")

	for name, wants := range map[string][]string{
		"status":  {"status [TENANT_ID]", "--json", "--output", "Exit status:", "NATS_URL", "CONTROL_PLANE_DATABASE_URL", "not consulted", "liveness"},
		"cleanup": {"--wait", "--timeout", "--csv", "--dry-run", "--force", "--yes", "130 interrupted", "NATS_URL"},
		"report":  {"--csv", "--output-file", "floor(n*p)", "DATA_PLANE_DATABASE_URL", "INACTIVE_DAYS", "DB_MAX_CONNS"},
		"verify":  {"--repair", "--force", "(a)", "(b)", "(c)", "DATA_PLANE_SHARD_NAME", "on another shard?", "tenantctl verify --repair"},
		"ledger":  {"-o, --output", "--output-file", "tenant_id,cleaned_at,requested_by,marked_at", "CONTROL_PLANE_RDS_HOST"},
		"hold":    {"--reason", "--until", "2026-12-02T00:00:00Z", "72h", "CONTROL_PLANE_DATABASE_URL", "never overlap"},
		"unhold":  {"has no hold", "CONTROL_PLANE_DATABASE_URL"},
		"dead":    {"dead list", "dead replay SEQ", "--all", "NATS_URL"},
		"watch":   {"in flight", "--timeout", "NATS_URL"},
	} {
		stdout, _ := mustRun(t, 0, name, "-h")
		contains(t, "tenantctl "+name+" -h", stdout, append(wants, "Usage:\n  tenantctl "+name)...)
		for _, secret := range []string{"dp-secret", "cp-secret", "nats-secret"} {
			if strings.Contains(stdout, secret) {
				t.Errorf("tenantctl %s -h prints %s", name, secret)
			}
		}
		help, _ := mustRun(t, 0, "help", name)
		if help != stdout {
			t.Errorf("tenantctl help %s differs from tenantctl %s -h", name, name)
		}
	}
	// Each command shows only the variables it reads.
	stdout, _ = mustRun(t, 0, "hold", "-h")
	if strings.Contains(stdout, "DATA_PLANE_DATABASE_URL") {
		t.Errorf("hold -h lists the data plane:\n%s", stdout)
	}
	stdout, _ = mustRun(t, 0, "report", "-h")
	if strings.Contains(stdout, "NATS_URL") {
		t.Errorf("report -h lists NATS:\n%s", stdout)
	}
	mustRun(t, 2, "status", "--bogus")
}

func TestConfigurationErrors(t *testing.T) {
	t.Setenv("DATA_PLANE_DATABASE_URL", "")
	t.Setenv("CONTROL_PLANE_DATABASE_URL", "postgres://x@127.0.0.1:1/x")
	_, stderr := mustRun(t, 2, "report")
	contains(t, "report without a data plane", stderr, "DATA_PLANE_DATABASE_URL", "tenantctl report --help")
	t.Setenv("NATS_REPLICAS", "2")
	_, stderr = mustRun(t, 2, "dead", "list")
	contains(t, "dead list with NATS_REPLICAS=2", stderr, "NATS_REPLICAS must be 1, 3 or 5")
	t.Setenv("NATS_REPLICAS", "1")
	t.Setenv("NATS_URL", "nats://127.0.0.1:1")
	_, stderr = mustRun(t, 1, "dead", "list")
	contains(t, "dead list without NATS", stderr, "connect to NATS at nats://127.0.0.1:1", "check NATS_URL")
	_, stderr = mustRun(t, 1, "unhold", idA)
	contains(t, "unhold without a control plane", stderr, "control plane:", "check CONTROL_PLANE_DATABASE_URL")
	t.Setenv("CONTROL_PLANE_DATABASE_URL", "postgres://app:pw-secret@127.0.0.1:1/control?connect_timeout=2")
	_, stderr = mustRun(t, 1, "ledger")
	contains(t, "ledger without a control plane", stderr, "control plane:", "check CONTROL_PLANE_DATABASE_URL")
	if strings.Contains(stderr, "pw-secret") {
		t.Errorf("the error shows the password: %s", stderr)
	}
}

func TestInterspersedFlags(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		pos    string
		reason string
		wait   bool
	}{
		{[]string{"A", "--reason", "r"}, "A", "r", false},
		{[]string{"--reason", "r", "A", "B", "--wait"}, "A B", "r", true},
		{[]string{"A", "--wait", "B", "--reason=r r"}, "A B", "r r", true},
		{[]string{"A", "--", "--wait"}, "A --wait", "", false},
		{[]string{"-", "--reason", "-"}, "-", "-", false},
	} {
		var (
			reason string
			wait   bool
			pos    []string
		)
		cmd := &cobra.Command{Use: "x", RunE: func(_ *cobra.Command, args []string) error { pos = args; return nil }}
		cmd.Flags().StringVar(&reason, "reason", "", "")
		cmd.Flags().BoolVar(&wait, "wait", false, "")
		cmd.SetArgs(tc.args)
		err := cmd.Execute()
		if err != nil || strings.Join(pos, " ") != tc.pos || reason != tc.reason || wait != tc.wait {
			t.Errorf("parse %q = %q, reason %q, wait %v, %v", tc.args, pos, reason, wait, err)
		}
	}
}

func TestShortDurations(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		45 * time.Second:                         "45s ago",
		12*time.Minute + 5*time.Second:           "12m ago",
		3 * time.Hour:                            "3h ago",
		3*time.Hour + 20*time.Minute:             "3h20m ago",
		26 * time.Hour:                           "1d2h ago",
		12 * 24 * time.Hour:                      "12d ago",
		-(20*time.Minute - 300*time.Millisecond): "in 20m",
		200 * time.Millisecond:                   "now",
	} {
		if got := relative(now, now.Add(-d)); got != want {
			t.Errorf("relative(-%s) = %q; want %q", d, got, want)
		}
	}
}
