package ctl

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

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
