package config

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://app:s3cret@db:5432/onyx?sslmode=require": "postgres://app:xxxxx@db:5432/onyx?sslmode=require",
		"postgres://app@db/onyx":                             "postgres://app@db/onyx",
		"host=db user=app password=s3cret dbname=onyx":       "host=db user=app password=xxxxx dbname=onyx",
		"host=db password='s3 cret' dbname=onyx":             "host=db password=xxxxx dbname=onyx",
		"nats://u:s3cret@127.0.0.1:4222":                     "nats://u:xxxxx@127.0.0.1:4222",
		"postgres://db/onyx?password=s3cret":                 "postgres://db/onyx?password=xxxxx",
	} {
		if got := Redact(in); got != want || strings.Contains(got, "s3cret") {
			t.Errorf("Redact(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestLoadDefaultsAndValidation(t *testing.T) {
	t.Setenv("DATA_PLANE_DATABASE_URL", "postgres://x@db/onyx")
	t.Setenv("CONTROL_PLANE_RDS_HOST", "control.internal")
	t.Setenv("CONTROL_PLANE_RDS_PASSWORD", "p@ss/word")
	var c Cleaner
	if err := Load(&c); err != nil {
		t.Fatal(err)
	}
	if c.InactiveDays != 90 || c.CheckDelay != 10*time.Minute || c.CheckMaxDelay != 6*time.Hour ||
		c.Timeout != 168*time.Hour || c.MaxLeftoverDocs != 5 || c.NATSURL != "nats://127.0.0.1:4222" ||
		c.BastionPort != 22 || c.BastionUser != "ec2-user" || c.BastionKnownHosts != "~/.ssh/known_hosts" {
		t.Fatalf("defaults differ from the contract: %+v", c)
	}
	if got := c.ControlPlaneDSN(); got != "postgres://postgres:p%40ss%2Fword@control.internal:5432/control" {
		t.Fatalf("built control-plane URL = %q", got)
	}
	var a Analyzer
	if err := Load(&a); err != nil || a.Interval != 24*time.Hour {
		t.Fatalf("analyzer: %+v, %v", a, err)
	}

	for env, want := range map[string]string{
		"INACTIVE_DAYS":       "INACTIVE_DAYS must be at least 1",
		"DRAIN_TIMEOUT":       "DRAIN_TIMEOUT must be positive",
		"CLEANER_CONCURRENCY": "DB_MAX_CONNS (6) must be at least CLEANER_CONCURRENCY + 1",
	} {
		t.Run(env, func(t *testing.T) {
			value := map[string]string{"INACTIVE_DAYS": "0", "DRAIN_TIMEOUT": "0s", "CLEANER_CONCURRENCY": "8"}[env]
			t.Setenv(env, value)
			var c Cleaner
			if err := Load(&c); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%s=%s: %v; want %q", env, value, err, want)
			}
		})
	}
	t.Run("no control plane", func(t *testing.T) {
		t.Setenv("CONTROL_PLANE_RDS_HOST", "")
		var m Marker
		if err := Load(&m); err == nil || !strings.Contains(err.Error(), "CONTROL_PLANE_DATABASE_URL") {
			t.Fatalf("without a control plane: %v", err)
		}
	})
}

func TestUsageHidesSecrets(t *testing.T) {
	t.Setenv("DATA_PLANE_DATABASE_URL", "postgres://app:dp-secret@db/onyx")
	t.Setenv("CONTROL_PLANE_RDS_PASSWORD", "cp-secret")
	t.Setenv("BASTION_KEY_PASSPHRASE", "pass-secret")
	var buf bytes.Buffer
	Usage(&buf, &Cleaner{})
	out := buf.String()
	for _, secret := range []string{"dp-secret", "cp-secret", "pass-secret"} {
		if strings.Contains(out, secret) {
			t.Errorf("usage prints %s:\n%s", secret, out)
		}
	}
	for _, want := range []string{"DATA_PLANE_DATABASE_URL", "(required)", "postgres://app:xxxxx@db/onyx", "(set, hidden)",
		"DRAIN_MAX_LEFTOVER_DOCS", "CLEANUP_MAX_PER_HOUR", "BASTION_KNOWN_HOSTS"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
}
