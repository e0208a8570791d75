package ctl

import (
	"fmt"
	"net"
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

// TestConfigurationBounds: tenantctl checks the bounds of what it reads as
// the services do (INACTIVE_DAYS=1000000 once overflowed the window of
// tenantctl report), and the shard variables as the services do, at start
// (status and cleanup read the data plane only when it is configured, and
// refuse a mistake in them all the same, naming the variable), and its -h
// and errors never show the secrets of NATS_URL. Nothing here reaches a
// database or a server (NATS_URL names a port nobody listens on: a check
// skipped would exit 1, not 2).
func TestConfigurationBounds(t *testing.T) {
	t.Setenv("DATA_PLANE_DATABASE_URL", "postgres://app:dp-S3CRET@127.0.0.1:1/onyx")
	t.Setenv("CONTROL_PLANE_DATABASE_URL", "host=127.0.0.1 port=1 password='cp S3CRET'")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	t.Setenv("NATS_URL", "nats://"+dead)
	for _, tt := range []struct {
		env, value string
		args       []string
		want       string
		also       [2]string // another variable the case sets
	}{
		{env: "INACTIVE_DAYS", value: "1000000", args: []string{"report"}, want: "INACTIVE_DAYS must be between 1 and 3650 days, got 1000000"},
		{env: "INACTIVE_DAYS", value: "0", args: []string{"report"}, want: "INACTIVE_DAYS must be between 1 and 3650 days, got 0"},
		{env: "DB_MAX_CONNS", value: "1001", args: []string{"report"}, want: "DB_MAX_CONNS must be between 1 and 1000, got 1001"},
		{env: "NATS_REPLICAS", value: "2", args: []string{"cleanup", idA}, want: "NATS_REPLICAS must be 1, 3 or 5, got 2"},
		{env: "CONTROL_PLANE_RDS_PORT", value: "70000", args: []string{"ledger"}, want: "CONTROL_PLANE_RDS_PORT must be between 1 and 65535, got 70000"},
		{env: "ONYX_DB_SHARDS", value: `{"b": {"hots": "db2"}}`, args: []string{"status"}, want: `ONYX_DB_SHARDS["b"] has unknown keys: ["hots"]`},
		{env: "ONYX_DB_SHARDS", value: `["b"]`, args: []string{"cleanup", idA}, want: "ONYX_DB_SHARDS must be a JSON object"},
		{env: "ONYX_DB_SHARDS", value: `{"default": {"db": "b"}}`, args: []string{"status", idA},
			want: `ONYX_DB_SHARDS must not redefine the default shard "default"`},
		{env: "ONYX_DB_CATALOG_SHARD", value: "c", args: []string{"cleanup", idA}, also: [2]string{"ONYX_DB_SHARDS", `{"b": {"db": "b"}}`},
			want: `ONYX_DB_CATALOG_SHARD="c" is not a configured shard (known: b, default)`},
		{env: "ONYX_DB_DEFAULT_SHARD", value: "b", args: []string{"status"}, also: [2]string{"DATA_PLANE_SHARD_NAME", "a"},
			want: `DATA_PLANE_SHARD_NAME="a" and ONYX_DB_DEFAULT_SHARD="b" name different shards`},
	} {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			t.Setenv(tt.env, tt.value)
			if tt.also[0] != "" {
				t.Setenv(tt.also[0], tt.also[1])
			}
			code, _, stderr := run(t, tt.args...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Fatalf("tenantctl %s with %s=%s: exit %d, stderr:\n%s\nwant exit %d and %q",
					strings.Join(tt.args, " "), tt.env, tt.value, code, stderr, exitUsage, tt.want)
			}
			if strings.Count(stderr, tt.want) != 1 {
				t.Errorf("the error is reported more than once:\n%s", stderr)
			}
		})
	}

	t.Setenv("NATS_URL", fmt.Sprintf("nats://tok-S3CRET@%s,nats://u:pw-S3CRET@%s", dead, dead))
	for _, args := range [][]string{{"-h"}, {"cleanup", "-h"}, {"status", "-h"}, {"report", "-h"}, {"cleanup", idA}, {"status", idA}} {
		code, stdout, stderr := run(t, args...)
		if strings.Contains(stdout+stderr, "S3CRET") {
			t.Errorf("tenantctl %s (exit %d) shows a secret:\n%s\n%s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
}
