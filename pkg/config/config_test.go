package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
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

// TestRedactHidesEverySecretForm covers the forms that leaked: NATS tokens,
// every URL of a list, passwords in query strings, keyword/value passwords
// quoted or escaped, and malformed URLs. Every secret below contains "s3c".
func TestRedactHidesEverySecretForm(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		// NATS
		{"nats token", "nats://s3cTOKEN@nats:4222", "nats://xxxxx@nats:4222"},
		{"nats token, no scheme", "s3cTOKEN@nats:4222", "xxxxx@nats:4222"},
		{"nats nkey seed as token", "nats://SUAs3cSEEDSEEDSEED@nats:4222", "nats://xxxxx@nats:4222"},
		{"nats jwt-ish token with dots and =", "nats://eyJs3c.eyJ0.sig==@nats:4222", "nats://xxxxx@nats:4222"},
		{"nats list, every password", "nats://a:s3c1@n1:4222,nats://b:s3c2@n2:4222, nats://c:s3c3@n3:4222",
			"nats://a:xxxxx@n1:4222,nats://b:xxxxx@n2:4222, nats://c:xxxxx@n3:4222"},
		{"nats list, tokens and passwords mixed", "tls://s3cA@n1:4222,nats://u:s3cB@n2,s3cC@n3:4222,nats://n4:4222",
			"tls://xxxxx@n1:4222,nats://u:xxxxx@n2,xxxxx@n3:4222,nats://n4:4222"},
		{"nats websocket", "wss://u:s3c@n1:443/path", "wss://u:xxxxx@n1:443/path"},
		{"nats password with @ and :", "nats://u:s3c@x:y@n1:4222", "nats://u:xxxxx@n1:4222"},
		{"nats token with / (not a host)", "nats://s3c/x@n1:4222", "nats://xxxxx@n1:4222"},
		{"nats malformed token (space)", "nats://s3c TOKEN@n1:4222", "nats://xxxxx@n1:4222"},
		{"nats malformed token (percent)", "nats://s3c%zz@n1:4222", "nats://xxxxx@n1:4222"},
		// PostgreSQL URLs
		{"pg sslpassword in query", "postgres://app@db/onyx?sslmode=verify-full&sslpassword=s3c", "postgres://app@db/onyx?sslmode=verify-full&sslpassword=xxxxx"},
		{"pg password and userinfo", "postgresql://app:s3c1@db/onyx?password=s3c2&application_name=x", "postgresql://app:xxxxx@db/onyx?password=xxxxx&application_name=x"},
		{"pg encoded password key", "postgres://db/onyx?pass%77ord=s3c", "postgres://db/onyx?pass%77ord=xxxxx"},
		{"pg upper-case scheme and key", "POSTGRES://app:s3c@db/onyx?PASSWORD=s3c2", "POSTGRES://app:xxxxx@db/onyx?PASSWORD=xxxxx"},
		{"pg password with /", "postgres://app:s3c/x@db/onyx", "postgres://app:xxxxx@db/onyx"},
		{"pg password with ?", "postgres://app:s3c?x@db/onyx", "postgres://app:xxxxx@db/onyx"},
		{"pg password with #", "postgres://app:s3c#x@db/onyx", "postgres://app:xxxxx@db/onyx"},
		{"pg password with @", "postgres://app:s3c@x@db/onyx", "postgres://app:xxxxx@db/onyx"},
		{"pg multi-host", "postgres://app:s3c@db1:5432,db2:5432/onyx", "postgres://app:xxxxx@db1:5432,db2:5432/onyx"},
		// keyword/value
		{"kv spaces around =", "host=db password = s3c dbname=onyx", "host=db password = xxxxx dbname=onyx"},
		{"kv quoted with escaped quote", `host=db password='s3c\' x' dbname=onyx`, "host=db password=xxxxx dbname=onyx"},
		{"kv unterminated quote", "host=db password='s3c x dbname=onyx", "host=db password=xxxxx"},
		{"kv escaped space", `host=db password=s3c\ x dbname=onyx`, "host=db password=xxxxx dbname=onyx"},
		{"kv upper case and sslpassword", "host=db PASSWORD=s3c1 sslpassword=s3c2", "host=db PASSWORD=xxxxx sslpassword=xxxxx"},
		{"kv double quotes", `host=db password="s3c x" dbname=onyx`, "host=db password=xxxxx dbname=onyx"},
		{"kv first", "password=s3c host=db", "password=xxxxx host=db"},
	}
	for _, tt := range tests {
		got := Redact(tt.in)
		if got != tt.want || strings.Contains(got, "s3c") {
			t.Errorf("%s: Redact(%q)\n got %q\nwant %q", tt.name, tt.in, got, tt.want)
		}
	}
}

// setRequired sets the variables every service needs and clears the ones
// the tests below vary, so that the environment of the machine does not
// leak in.
func setRequired(t *testing.T) {
	t.Helper()
	t.Setenv("DATA_PLANE_DATABASE_URL", "postgres://x@db/onyx")
	t.Setenv("CONTROL_PLANE_DATABASE_URL", "")
	t.Setenv("CONTROL_PLANE_RDS_HOST", "control.internal")
	t.Setenv("CONTROL_PLANE_RDS_PASSWORD", "p@ss/word")
	t.Setenv("BASTION_HOST", "")
	for _, f := range append(fields(reflect.TypeFor[Cleaner]()), fields(reflect.TypeFor[Analyzer]())...) {
		if _, has := f.Tag.Lookup("range"); has {
			t.Setenv(f.Tag.Get("envconfig"), "")
			os.Unsetenv(f.Tag.Get("envconfig"))
		}
	}
	for _, k := range []string{"NATS_CREDS", "NATS_NKEY_SEED", "LOG_LEVEL"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

func TestLoadDefaultsAndValidation(t *testing.T) {
	setRequired(t)
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
		"INACTIVE_DAYS":       "INACTIVE_DAYS must be between 1 and 3650 days, got 0",
		"DRAIN_TIMEOUT":       "DRAIN_TIMEOUT must be between 1s and 8760h, got 0s",
		"CLEANER_CONCURRENCY": "DB_MAX_CONNS (6) must be at least CLEANER_CONCURRENCY + 2 (10) with PACE=auto",
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

// bound is one row of TestBounds: a value of a variable and whether the
// service accepts it. extra are the other variables the row needs (so that
// the checks across variables pass for the values inside).
type bound struct {
	env, value string
	ok         bool
	want       string // in the error when !ok
	extra      map[string]string
}

// boundTable is every variable with a range, just inside and just outside
// each of its bounds, and the values someone might use to "turn it off".
var boundTable = []bound{
	{"INACTIVE_DAYS", "1", true, "", nil},
	{"S3_TIMEOUT", "100ms", true, "", nil},
	{"S3_TIMEOUT", "99ms", false, "S3_TIMEOUT must be between", nil},
	{"S3_MAX_ATTEMPTS", "1", true, "", nil},
	{"S3_MAX_ATTEMPTS", "0", false, "S3_MAX_ATTEMPTS must be between", nil},
	{"S3_MAX_ATTEMPTS", "11", false, "S3_MAX_ATTEMPTS must be between", nil},
	{"REDIS_PORT", "0", false, "REDIS_PORT must be between", nil},
	{"REDIS_PORT", "65535", true, "", nil},
	{"REDIS_DB_NUMBER", "-1", false, "REDIS_DB_NUMBER must be between", nil},
	{"REDIS_DB_NUMBER", "0", true, "", nil},
	{"REDIS_TIMEOUT", "99ms", false, "REDIS_TIMEOUT must be between", nil},
	{"REDIS_TIMEOUT", "100ms", true, "", nil},
	{"PACE_INTERVAL", "100ms", true, "", nil},
	{"PACE_INTERVAL", "99ms", false, "PACE_INTERVAL must be between", nil},
	{"PACE_INTERVAL", "1m1s", false, "PACE_INTERVAL must be between", nil},
	{"PACE_MAX_CONCURRENCY", "0", false, "PACE_MAX_CONCURRENCY must be between", nil},
	{"PACE_MAX_CONCURRENCY", "64", true, "", nil},
	{"PACE_MAX_CONCURRENCY", "65", false, "PACE_MAX_CONCURRENCY must be between", nil},
	{"PACE_HEALTHY_SAMPLES", "0", false, "PACE_HEALTHY_SAMPLES must be between", nil},
	{"PACE_HEALTHY_SAMPLES", "1", true, "", nil},
	{"PACE_PROBES", "0", false, "PACE_PROBES must be between", nil},
	{"PACE_PROBES", "51", false, "PACE_PROBES must be between", nil},
	{"PACE_PROBES", "50", true, "", nil},
	{"PACE_MAX_PROBE_RATIO", "1", false, "PACE_MAX_PROBE_RATIO must be between", nil},
	{"PACE_MAX_PROBE_RATIO", "1.1", true, "", nil},
	{"PACE_CRITICAL_PROBE_RATIO", "1000", true, "", nil},
	{"PACE_CRITICAL_PROBE_RATIO", "1001", false, "PACE_CRITICAL_PROBE_RATIO must be between", nil},
	{"PACE_PROBE_SLACK", "-1ns", false, "PACE_PROBE_SLACK must be between", nil},
	{"PACE_PROBE_SLACK", "0s", true, "", nil},
	{"PACE_BASELINE_ADAPT", "59s", false, "PACE_BASELINE_ADAPT must be between", nil},
	{"PACE_BASELINE_ADAPT", "1m", true, "", nil},
	{"PACE_MAX_COMMIT_LATENCY", "-1ns", false, "PACE_MAX_COMMIT_LATENCY must be between", nil},
	{"PACE_MAX_COMMIT_LATENCY", "0s", true, "", nil},
	{"PACE_CRITICAL_COMMIT_LATENCY", "1h1ns", false, "PACE_CRITICAL_COMMIT_LATENCY must be between", nil},
	{"PACE_MAX_REPLICATION_LAG", "-1ns", false, "PACE_MAX_REPLICATION_LAG must be between", nil},
	{"PACE_CRITICAL_REPLICATION_LAG", "24h1ns", false, "PACE_CRITICAL_REPLICATION_LAG must be between", nil},
	{"PACE_MAX_WAL_RATE", "-1", false, "PACE_MAX_WAL_RATE must be between", nil},
	{"PACE_MAX_WAL_RATE", "0", true, "", nil},
	{"PACE_MAX_BACKEND_WRITES", "-1", false, "PACE_MAX_BACKEND_WRITES must be between", nil},
	{"PACE_MAX_ACTIVE_BACKENDS", "-1", false, "PACE_MAX_ACTIVE_BACKENDS must be between", nil},
	{"PACE_CRITICAL_ACTIVE_BACKENDS", "100001", false, "PACE_CRITICAL_ACTIVE_BACKENDS must be between", nil},
	{"INACTIVE_DAYS", "0", false, "INACTIVE_DAYS must be between 1 and 3650 days, got 0", nil},
	{"INACTIVE_DAYS", "-1", false, "INACTIVE_DAYS must be between 1 and 3650 days, got -1", nil},
	{"INACTIVE_DAYS", "3650", true, "", nil},
	{"INACTIVE_DAYS", "3651", false, "INACTIVE_DAYS must be between 1 and 3650 days, got 3651", nil},
	{"INACTIVE_DAYS", "1000000", false, "INACTIVE_DAYS must be between 1 and 3650 days, got 1000000", nil}, // overflowed tenant.Window
	{"INACTIVE_DAYS", "106752", false, "INACTIVE_DAYS must be between 1 and 3650 days, got 106752", nil},
	{"INACTIVE_DAYS", "9223372036854775807", false, "got 9223372036854775807", nil},
	{"INACTIVE_DAYS", "9223372036854775808", false, "INACTIVE_DAYS", nil}, // envconfig: out of range of int
	{"DB_MAX_CONNS", "2", true, "", map[string]string{"CLEANER_CONCURRENCY": "1", "PACE": "off"}},
	{"DB_MAX_CONNS", "3", true, "", map[string]string{"CLEANER_CONCURRENCY": "1"}},
	{"DB_MAX_CONNS", "2", false, "DB_MAX_CONNS (2) must be at least CLEANER_CONCURRENCY + 2 (3) with PACE=auto", map[string]string{"CLEANER_CONCURRENCY": "1"}},
	{"DB_MAX_CONNS", "0", false, "DB_MAX_CONNS must be between 1 and 1000, got 0", nil},
	{"DB_MAX_CONNS", "1000", true, "", nil},
	{"DB_MAX_CONNS", "1001", false, "DB_MAX_CONNS must be between 1 and 1000, got 1001", nil},
	{"DB_MAX_CONNS", "2147483648", false, "DB_MAX_CONNS", nil}, // envconfig: out of range of int32
	{"CONTROL_PLANE_RDS_PORT", "1", true, "", nil},
	{"CONTROL_PLANE_RDS_PORT", "0", false, "CONTROL_PLANE_RDS_PORT must be between 1 and 65535, got 0", nil},
	{"CONTROL_PLANE_RDS_PORT", "65535", true, "", nil},
	{"CONTROL_PLANE_RDS_PORT", "65536", false, "CONTROL_PLANE_RDS_PORT must be between 1 and 65535, got 65536", nil},
	{"BASTION_PORT", "1", true, "", nil},
	{"BASTION_PORT", "0", false, "BASTION_PORT must be between 1 and 65535, got 0", nil},
	{"BASTION_PORT", "65535", true, "", nil},
	{"BASTION_PORT", "65536", false, "BASTION_PORT must be between 1 and 65535, got 65536", nil},
	{"NATS_REPLICAS", "1", true, "", nil},
	{"NATS_REPLICAS", "3", true, "", nil},
	{"NATS_REPLICAS", "5", true, "", nil},
	{"NATS_REPLICAS", "0", false, "NATS_REPLICAS must be 1, 3 or 5, got 0", nil},
	{"NATS_REPLICAS", "2", false, "NATS_REPLICAS must be 1, 3 or 5, got 2", nil},
	{"NATS_REPLICAS", "6", false, "NATS_REPLICAS must be 1, 3 or 5, got 6", nil},
	{"NATS_ACK_WAIT", "1s", true, "", nil},
	{"NATS_ACK_WAIT", "999ms", false, "NATS_ACK_WAIT must be between 1s and 1h, got 999ms", nil},
	{"NATS_ACK_WAIT", "1h", true, "", nil},
	{"NATS_ACK_WAIT", "1h1ms", false, "NATS_ACK_WAIT must be between 1s and 1h, got 1h0m0.001s", nil},
	{"DEAD_LETTER_AFTER", "1", true, "", nil},
	{"DEAD_LETTER_AFTER", "0", false, "DEAD_LETTER_AFTER must be between 1 and 100, got 0", nil},
	{"DEAD_LETTER_AFTER", "100", true, "", nil},
	{"DEAD_LETTER_AFTER", "101", false, "DEAD_LETTER_AFTER must be between 1 and 100, got 101", nil},
	{"DRAIN_CHECK_DELAY", "0s", true, "", nil},
	{"DRAIN_CHECK_DELAY", "-1ns", false, "DRAIN_CHECK_DELAY must be between 0s and 24h, got -1ns", nil},
	{"DRAIN_CHECK_DELAY", "24h", true, "", nil},
	{"DRAIN_CHECK_DELAY", "24h1ns", false, "DRAIN_CHECK_DELAY must be between 0s and 24h, got 24h0m0.000000001s", nil},
	{"DRAIN_CHECK_MAX_DELAY", "1s", true, "", nil},
	{"DRAIN_CHECK_MAX_DELAY", "999ms", false, "DRAIN_CHECK_MAX_DELAY must be between 1s and 24h, got 999ms", nil},
	{"DRAIN_CHECK_MAX_DELAY", "24h", true, "", nil},
	{"DRAIN_CHECK_MAX_DELAY", "24h1ns", false, "DRAIN_CHECK_MAX_DELAY must be between 1s and 24h, got 24h0m0.000000001s", nil},
	{"DRAIN_TIMEOUT", "1s", true, "", nil},
	{"DRAIN_TIMEOUT", "999ms", false, "DRAIN_TIMEOUT must be between 1s and 8760h, got 999ms", nil},
	{"DRAIN_TIMEOUT", "-168h", false, "DRAIN_TIMEOUT must be between 1s and 8760h, got -168h0m0s", nil},
	{"DRAIN_TIMEOUT", "8760h", true, "", nil},
	{"DRAIN_TIMEOUT", "8760h1ns", false, "DRAIN_TIMEOUT must be between 1s and 8760h, got 8760h0m0.000000001s", nil},
	{"DRAIN_TIMEOUT", "2562047h", false, "DRAIN_TIMEOUT must be between 1s and 8760h, got 2562047h0m0s", nil},
	{"DRAIN_TIMEOUT", "2562048h", false, "DRAIN_TIMEOUT", nil}, // envconfig: overflows a duration
	{"DRAIN_MAX_LEFTOVER_DOCS", "0", true, "", nil},
	{"DRAIN_MAX_LEFTOVER_DOCS", "-1", false, "DRAIN_MAX_LEFTOVER_DOCS must be between 0 and 10000, got -1", nil},
	{"DRAIN_MAX_LEFTOVER_DOCS", "10000", true, "", nil},
	{"DRAIN_MAX_LEFTOVER_DOCS", "10001", false, "DRAIN_MAX_LEFTOVER_DOCS must be between 0 and 10000, got 10001", nil},
	{"ANALYZER_INTERVAL", "1m", true, "", nil},
	{"ANALYZER_INTERVAL", "59s", false, "ANALYZER_INTERVAL must be between 1m and 720h, got 59s", nil},
	{"ANALYZER_INTERVAL", "720h", true, "", nil},
	{"ANALYZER_INTERVAL", "720h1ns", false, "ANALYZER_INTERVAL must be between 1m and 720h, got 720h0m0.000000001s", nil},
	{"MARKER_CONCURRENCY", "1", true, "", nil},
	{"MARKER_CONCURRENCY", "0", false, "MARKER_CONCURRENCY must be between 1 and 256, got 0", nil},
	{"MARKER_CONCURRENCY", "256", true, "", map[string]string{"DB_MAX_CONNS": "257"}},
	{"MARKER_CONCURRENCY", "257", false, "MARKER_CONCURRENCY must be between 1 and 256, got 257", map[string]string{"DB_MAX_CONNS": "258"}},
	{"CLEANER_CONCURRENCY", "1", true, "", nil},
	{"CLEANER_CONCURRENCY", "0", false, "CLEANER_CONCURRENCY must be between 1 and 256, got 0", nil},
	{"CLEANER_CONCURRENCY", "256", true, "", map[string]string{"DB_MAX_CONNS": "258"}},
	{"CLEANER_CONCURRENCY", "257", false, "CLEANER_CONCURRENCY must be between 1 and 256, got 257", map[string]string{"DB_MAX_CONNS": "258"}},
	{"DDL_LOCK_TIMEOUT", "10ms", true, "", nil},
	{"DDL_LOCK_TIMEOUT", "9ms", false, "DDL_LOCK_TIMEOUT must be between 10ms and 1m, got 9ms", nil},
	{"DDL_LOCK_TIMEOUT", "1m", true, "", nil},
	{"DDL_LOCK_TIMEOUT", "1m1ns", false, "DDL_LOCK_TIMEOUT must be between 10ms and 1m, got 1m0.000000001s", nil},
	{"DROP_CONCURRENCY", "1", true, "", nil},
	{"DROP_CONCURRENCY", "0", false, "DROP_CONCURRENCY must be between 1 and 64, got 0", nil},
	{"DROP_CONCURRENCY", "64", true, "", nil},
	{"DROP_CONCURRENCY", "65", false, "DROP_CONCURRENCY must be between 1 and 64, got 65", nil},
	{"CLEANUP_MAX_PER_HOUR", "0", true, "", nil},
	{"CLEANUP_MAX_PER_HOUR", "-1", false, "CLEANUP_MAX_PER_HOUR must be between 0 and 1000000, got -1", nil},
	{"CLEANUP_MAX_PER_HOUR", "1000000", true, "", nil},
	{"CLEANUP_MAX_PER_HOUR", "1000001", false, "CLEANUP_MAX_PER_HOUR must be between 0 and 1000000, got 1000001", nil},
	{"CLEANUP_MAX_PER_DAY", "0", true, "", nil},
	{"CLEANUP_MAX_PER_DAY", "-1", false, "CLEANUP_MAX_PER_DAY must be between 0 and 10000000, got -1", nil},
	{"CLEANUP_MAX_PER_DAY", "10000000", true, "", nil},
	{"CLEANUP_MAX_PER_DAY", "10000001", false, "CLEANUP_MAX_PER_DAY must be between 0 and 10000000, got 10000001", nil},
	{"BREAKER_WINDOW", "1", true, "", map[string]string{"BREAKER_MIN_FAILURES": "1"}},
	{"BREAKER_WINDOW", "0", false, "BREAKER_WINDOW must be between 1 and 1000, got 0", nil},
	{"BREAKER_WINDOW", "1000", true, "", nil},
	{"BREAKER_WINDOW", "1001", false, "BREAKER_WINDOW must be between 1 and 1000, got 1001", nil},
	{"BREAKER_WINDOW", "4", false, "BREAKER_MIN_FAILURES (5) must be at most BREAKER_WINDOW (4)", nil}, // the breaker could never open
	{"BREAKER_MIN_FAILURES", "1", true, "", nil},
	{"BREAKER_MIN_FAILURES", "0", false, "BREAKER_MIN_FAILURES must be between 1 and 1000, got 0", nil},
	{"BREAKER_MIN_FAILURES", "1000", true, "", map[string]string{"BREAKER_WINDOW": "1000"}},
	{"BREAKER_MIN_FAILURES", "1001", false, "BREAKER_MIN_FAILURES must be between 1 and 1000, got 1001", map[string]string{"BREAKER_WINDOW": "1000"}},
	{"BREAKER_FAILURE_RATE", "0.01", true, "", nil},
	{"BREAKER_FAILURE_RATE", "0.0099", false, "BREAKER_FAILURE_RATE must be between 0.01 and 1, got 0.0099", nil},
	{"BREAKER_FAILURE_RATE", "0", false, "BREAKER_FAILURE_RATE must be between 0.01 and 1, got 0", nil},
	{"BREAKER_FAILURE_RATE", "NaN", false, "BREAKER_FAILURE_RATE must be between 0.01 and 1, got NaN", nil},
	{"BREAKER_FAILURE_RATE", "1", true, "", nil},
	{"BREAKER_FAILURE_RATE", "1.0001", false, "BREAKER_FAILURE_RATE must be between 0.01 and 1, got 1.0001", nil},
	{"BREAKER_COOLDOWN", "1s", true, "", nil},
	{"BREAKER_COOLDOWN", "999ms", false, "BREAKER_COOLDOWN must be between 1s and 24h, got 999ms", nil},
	{"BREAKER_COOLDOWN", "24h", true, "", nil},
	{"BREAKER_COOLDOWN", "24h1ns", false, "BREAKER_COOLDOWN must be between 1s and 24h, got 24h0m0.000000001s", nil},
	{"LOG_LEVEL", "warn", true, "", nil},
	{"LOG_LEVEL", "verbose", false, `LOG_LEVEL must be debug, info, warn or error, got "verbose"`, nil},
}

// TestBounds loads each row with the service that reads the variable and
// checks that a value inside is accepted and a value outside refused with an
// error naming the variable and the allowed range.
func TestBounds(t *testing.T) {
	for _, b := range boundTable {
		t.Run(b.env+"="+b.value, func(t *testing.T) {
			setRequired(t)
			t.Setenv(b.env, b.value)
			for k, v := range b.extra {
				t.Setenv(k, v)
			}
			var spec any = &Cleaner{}
			switch {
			case b.env == "ANALYZER_INTERVAL":
				spec = &Analyzer{}
			case strings.HasPrefix(b.env, "MARKER_"):
				spec = &Marker{}
			}
			err := Load(spec)
			switch {
			case b.ok && err != nil:
				t.Fatalf("%s=%s refused: %v", b.env, b.value, err)
			case !b.ok && err == nil:
				t.Fatalf("%s=%s accepted; want %q", b.env, b.value, b.want)
			case !b.ok && !strings.Contains(err.Error(), b.want):
				t.Fatalf("%s=%s: %v\nwant %q", b.env, b.value, err, b.want)
			}
		})
	}
}

// TestEveryNumberHasBounds checks that every numeric and duration variable
// of every service has a range tag that parses, that the test above covers
// it, and that -h prints its range.
func TestEveryNumberHasBounds(t *testing.T) {
	covered := map[string]bool{}
	for _, b := range boundTable {
		covered[b.env] = true
	}
	for _, spec := range []any{&Analyzer{}, &Marker{}, &Cleaner{}} {
		var buf bytes.Buffer
		Usage(&buf, spec)
		for _, f := range fields(reflect.TypeOf(spec).Elem()) {
			name := f.Tag.Get("envconfig")
			switch f.Type.Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
			default:
				continue
			}
			if _, has := f.Tag.Lookup("range"); !has {
				t.Errorf("%s (%s) has no range tag", name, f.Type)
				continue
			}
			if _, err := parseBounds(f); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			if !covered[name] {
				t.Errorf("%s is not in boundTable", name)
			}
			if line := lineOf(buf.String(), name); !strings.Contains(line, "range ") && !strings.Contains(line, "one of ") {
				t.Errorf("-h does not show the range of %s: %q", name, line)
			}
		}
	}
}

func lineOf(s, prefix string) string {
	for line := range strings.SplitSeq(s, "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			return line
		}
	}
	return ""
}

// TestCheckBoundsRefusesBadTags checks the tag grammar itself.
func TestCheckBoundsRefusesBadTags(t *testing.T) {
	for _, spec := range []any{
		&struct {
			X string `envconfig:"X" range:"1..2"`
		}{},
		&struct {
			X int `envconfig:"X" range:"2..1"`
		}{},
		&struct {
			X int `envconfig:"X" range:"1-2"`
		}{},
		&struct {
			X time.Duration `envconfig:"X" range:"1|2"`
		}{},
		&struct {
			X time.Duration `envconfig:"X" range:"1..2"`
		}{},
	} {
		if err := CheckBounds(spec); err == nil || !strings.Contains(err.Error(), "bad range tag") {
			t.Errorf("CheckBounds(%T) = %v; want a bad range tag", spec, err)
		}
	}
	if err := CheckBounds(Cleaner{}); err == nil {
		t.Error("CheckBounds of a struct value (not a pointer) must fail")
	}
}

func TestNATSCredentialFiles(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "user.creds")
	seed := filepath.Join(dir, "user.nk")
	for _, p := range []string{creds, seed} {
		if err := os.WriteFile(p, []byte("SUACONTENTSNEVERSHOWN"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		creds, seed string
		want        string // "" for accepted
	}{
		{creds, "", ""},
		{"", seed, ""},
		{creds, seed, "set NATS_CREDS or NATS_NKEY_SEED, not both"},
		{filepath.Join(dir, "missing.creds"), "", "NATS_CREDS: open " + filepath.Join(dir, "missing.creds")},
		{"", dir, "NATS_NKEY_SEED: " + dir + " is not a regular file"},
	}
	for _, tt := range tests {
		setRequired(t)
		t.Setenv("NATS_CREDS", tt.creds)
		t.Setenv("NATS_NKEY_SEED", tt.seed)
		var c Cleaner
		err := Load(&c)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("NATS_CREDS=%q NATS_NKEY_SEED=%q: %v", tt.creds, tt.seed, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("NATS_CREDS=%q NATS_NKEY_SEED=%q: %v; want %q", tt.creds, tt.seed, err, tt.want)
		case err != nil && strings.Contains(err.Error(), "CONTENTS"):
			t.Errorf("the error shows the file's contents: %v", err)
		}
		if tt.want == "" && (c.NATSCreds != tt.creds || c.NATSNkeySeed != tt.seed) {
			t.Errorf("loaded %q, %q", c.NATSCreds, c.NATSNkeySeed)
		}
	}
}

func TestUsageHidesSecrets(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DATA_PLANE_DATABASE_URL", "host=db user=app password='dp secret' sslpassword=dp-ssl-secret")
	t.Setenv("CONTROL_PLANE_DATABASE_URL", "postgres://app:cp-url-secret@db/control?sslpassword=cp-ssl-secret")
	t.Setenv("CONTROL_PLANE_RDS_PASSWORD", "cp-secret")
	t.Setenv("BASTION_KEY_PASSPHRASE", "pass-secret")
	t.Setenv("NATS_URL", "nats://nats-token-secret@n1:4222,nats://u:nats-pw-secret@n2:4222, nats-bare-token-secret@n3:4222")
	t.Setenv("NATS_CREDS", filepath.Join(dir, "user.creds"))
	t.Setenv("NATS_NKEY_SEED", filepath.Join(dir, "user.nk"))
	t.Setenv("INACTIVE_DAYS", "90")
	var buf bytes.Buffer
	Usage(&buf, &Cleaner{})
	out := buf.String()
	for _, secret := range []string{"dp secret", "dp-ssl-secret", "cp-url-secret", "cp-ssl-secret", "cp-secret",
		"pass-secret", "nats-token-secret", "nats-pw-secret", "nats-bare-token-secret"} {
		if strings.Contains(out, secret) {
			t.Errorf("usage prints %s:\n%s", secret, out)
		}
	}
	for _, want := range []string{"DATA_PLANE_DATABASE_URL", "(required)", "password=xxxxx", "(set, hidden)",
		"postgres://app:xxxxx@db/control?sslpassword=xxxxx",
		"nats://xxxxx@n1:4222,nats://u:xxxxx@n2:4222, xxxxx@n3:4222",
		filepath.Join(dir, "user.creds"), filepath.Join(dir, "user.nk"), "NATS_CREDS", "NATS_NKEY_SEED",
		"the inactivity window, in days (range 1..3650 days)", "(one of 1, 3 or 5)", "(range 10ms..1m)",
		"DRAIN_MAX_LEFTOVER_DOCS", "CLEANUP_MAX_PER_HOUR", "BASTION_KNOWN_HOSTS"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
}

// TestParseErrorsNameTheVariable: a value that is not a number (or
// overflows its type) is refused by envconfig, whose error names the
// variable.
func TestParseErrorsNameTheVariable(t *testing.T) {
	for env, value := range map[string]string{
		"INACTIVE_DAYS":        "ninety",
		"DRAIN_TIMEOUT":        "soon",
		"DB_MAX_CONNS":         "99999999999",
		"BREAKER_FAILURE_RATE": "half",
		"NATS_ACK_WAIT":        "60",
	} {
		t.Run(env, func(t *testing.T) {
			setRequired(t)
			t.Setenv(env, value)
			var c Cleaner
			if err := Load(&c); err == nil || !strings.Contains(err.Error(), env) {
				t.Fatalf("%s=%s: %v; want an error naming %s", env, value, err, env)
			}
		})
	}
}

// TestDefaultsAreLoadsDefaults: Defaults fills what Load fills from an
// environment that sets only the required variables, and Environ
// round-trips through Load.
func TestDefaultsAreLoadsDefaults(t *testing.T) {
	setRequired(t)
	required := func(c *Common) {
		c.DataPlaneURL, c.RDSHost, c.RDSPassword = "postgres://x@db/onyx", "control.internal", "p@ss/word"
	}
	var a Analyzer
	var m Marker
	var c Cleaner
	Defaults(&a)
	Defaults(&m)
	Defaults(&c)
	required(&a.Common)
	required(&m.Common)
	required(&c.Common)
	for _, built := range []any{&a, &m, &c} {
		loaded := reflect.New(reflect.TypeOf(built).Elem()).Interface()
		if err := Load(loaded); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(loaded, built) {
			t.Errorf("Defaults(%T) = %+v\nLoad gives %+v", built, built, loaded)
		}
		if err := Validate(built); err != nil {
			t.Errorf("Validate(%T): %v", built, err)
		}
	}
	c.Concurrency, c.BreakerRate, c.CheckDelay, c.Pace.CheckpointPressure = 3, 0.25, 3*time.Second, false
	for _, kv := range Environ(&c) {
		name, value, _ := strings.Cut(kv, "=")
		t.Setenv(name, value)
	}
	var again Cleaner
	if err := Load(&again); err != nil || !reflect.DeepEqual(again, c) {
		t.Errorf("Load(Environ(c)) = %+v, %v; want %+v", again, err, c)
	}
}
