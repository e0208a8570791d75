package ctl

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// TestConfigurationBounds: tenantctl checks the bounds of what it reads as
// the services do (INACTIVE_DAYS=1000000 once overflowed the window of
// tenantctl report), and its -h and errors never show the secrets of
// NATS_URL. Nothing here reaches a database or a server.
func TestConfigurationBounds(t *testing.T) {
	t.Setenv("DATA_PLANE_DATABASE_URL", "postgres://app:dp-S3CRET@127.0.0.1:1/onyx")
	t.Setenv("CONTROL_PLANE_DATABASE_URL", "host=127.0.0.1 port=1 password='cp S3CRET'")
	for _, tt := range []struct {
		env, value string
		args       []string
		want       string
	}{
		{"INACTIVE_DAYS", "1000000", []string{"report"}, "INACTIVE_DAYS must be between 1 and 3650 days, got 1000000"},
		{"INACTIVE_DAYS", "0", []string{"report"}, "INACTIVE_DAYS must be between 1 and 3650 days, got 0"},
		{"DB_MAX_CONNS", "1001", []string{"report"}, "DB_MAX_CONNS must be between 1 and 1000, got 1001"},
		{"NATS_REPLICAS", "2", []string{"cleanup", idA}, "NATS_REPLICAS must be 1, 3 or 5, got 2"},
		{"CONTROL_PLANE_RDS_PORT", "70000", []string{"ledger"}, "CONTROL_PLANE_RDS_PORT must be between 1 and 65535, got 70000"},
	} {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			t.Setenv(tt.env, tt.value)
			code, _, stderr := run(t, tt.args...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Fatalf("tenantctl %s with %s=%s: exit %d, stderr:\n%s\nwant exit %d and %q",
					strings.Join(tt.args, " "), tt.env, tt.value, code, stderr, exitUsage, tt.want)
			}
			if strings.Count(stderr, tt.env) != 1 {
				t.Errorf("the error is reported more than once:\n%s", stderr)
			}
		})
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	t.Setenv("NATS_URL", fmt.Sprintf("nats://tok-S3CRET@%s,nats://u:pw-S3CRET@%s", dead, dead))
	for _, args := range [][]string{{"-h"}, {"cleanup", "-h"}, {"status", "-h"}, {"report", "-h"}, {"cleanup", idA}, {"status", idA}} {
		code, stdout, stderr := run(t, args...)
		if strings.Contains(stdout+stderr, "S3CRET") {
			t.Errorf("tenantctl %s (exit %d) shows a secret:\n%s\n%s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
}
