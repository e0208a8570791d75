package ctl

import (
	"flag"
	"strings"
	"testing"
	"time"
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
	contains(t, "unknown command", stderr, `unknown command "frobnicate"`)

	for name, wants := range map[string][]string{
		"status":  {"[TENANT_ID] [--json]", "-json", "Exit status:", "NATS_URL", "CONTROL_PLANE_DATABASE_URL", "not consulted"},
		"cleanup": {"--wait", "-timeout", "-csv", "130 interrupted", "NATS_URL"},
		"report":  {"--csv[=FILE]", "floor(n*p)", "DATA_PLANE_DATABASE_URL", "INACTIVE_DAYS", "DB_MAX_CONNS"},
		"verify":  {"-repair", "(a)", "(b)", "(c)", "DATA_PLANE_SHARD_NAME", "on another shard?", "tenantctl verify --repair"},
		"ledger":  {"-csv", "-o", "cleaned_tenants.csv", "tenant_id,cleaned_at,requested_by,marked_at", "CONTROL_PLANE_RDS_HOST"},
		"hold":    {"-reason", "-until", "2026-12-02T00:00:00Z", "72h", "CONTROL_PLANE_DATABASE_URL", "never overlap"},
		"unhold":  {"has no hold", "CONTROL_PLANE_DATABASE_URL"},
		"dead":    {"dead list", "dead replay SEQ", "-all", "NATS_URL"},
	} {
		stdout, _ := mustRun(t, 0, name, "-h")
		contains(t, "tenantctl "+name+" -h", stdout, append(wants, "Usage: tenantctl "+name)...)
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
	contains(t, "report without a data plane", stderr, "DATA_PLANE_DATABASE_URL", "tenantctl report -h")
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
	c := &CLI{Stdout: &strings.Builder{}, Stderr: &strings.Builder{}}
	cmd := &command{name: "x"}
	for _, tc := range []struct {
		args   []string
		pos    string
		reason string
		wait   bool
	}{
		{[]string{"A", "--reason", "r"}, "A", "r", false},
		{[]string{"--reason", "r", "A", "B", "--wait"}, "A B", "r", true},
		{[]string{"A", "--wait", "B", "-reason=r r"}, "A B", "r r", true},
		{[]string{"A", "--", "--wait"}, "A --wait", "", false},
		{[]string{"-", "--reason", "-"}, "-", "-", false},
	} {
		var (
			reason string
			wait   bool
		)
		pos, _, ok := c.parse(cmd, tc.args, nil, func(fs *flag.FlagSet) {
			fs.StringVar(&reason, "reason", "", "")
			fs.BoolVar(&wait, "wait", false, "")
		})
		if !ok || strings.Join(pos, " ") != tc.pos || reason != tc.reason || wait != tc.wait {
			t.Errorf("parse %q = %q, reason %q, wait %v, ok %v", tc.args, pos, reason, wait, ok)
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
