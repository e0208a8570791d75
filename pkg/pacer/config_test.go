package pacer_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/pacer"
)

// TestConfigDefaults reads Config from an environment without PACE_*
// variables: the tags' defaults are DefaultConfig, within their ranges and
// valid; a variable set is read.
func TestConfigDefaults(t *testing.T) {
	var c pacer.Config
	if err := envconfig.Process("", &c); err != nil {
		t.Fatal(err)
	}
	if c != pacer.DefaultConfig() {
		t.Fatalf("tags' defaults %+v\ndiffer from DefaultConfig %+v", c, pacer.DefaultConfig())
	}
	if err := config.CheckBounds(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PACE", "off")
	t.Setenv("PACE_MAX_REPLICATION_LAG", "2s")
	if err := envconfig.Process("", &c); err != nil {
		t.Fatal(err)
	}
	if c.Mode != pacer.ModeOff || c.MaxReplicationLag != 2*time.Second {
		t.Fatalf("from the environment: %+v", c)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		set  func(*pacer.Config)
		want string // "" for valid
	}{
		{"defaults", func(*pacer.Config) {}, ""},
		{"mode", func(c *pacer.Config) { c.Mode = "fast" }, `PACE must be auto or off, got "fast"`},
		{"probe ratios", func(c *pacer.Config) { c.CriticalProbeRatio = 1.5 }, "PACE_CRITICAL_PROBE_RATIO"},
		{"commit latencies", func(c *pacer.Config) { c.CriticalCommitLatency = time.Second }, "PACE_MAX_COMMIT_LATENCY below PACE_CRITICAL_COMMIT_LATENCY"},
		{"replication lags", func(c *pacer.Config) { c.CriticalReplicationLag = c.MaxReplicationLag }, "PACE_MAX_REPLICATION_LAG below"},
		{"active sessions", func(c *pacer.Config) { c.MaxActiveBackends, c.CriticalActiveBackends = 20, 10 }, "PACE_MAX_ACTIVE_BACKENDS below"},
		{"a critical threshold alone", func(c *pacer.Config) { c.MaxCommitLatency = 0 }, ""},
		{"zero interval", func(c *pacer.Config) { c.Interval = 0 }, "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := pacer.DefaultConfig()
			tc.set(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestConfigBounds(t *testing.T) {
	t.Parallel()
	c := pacer.DefaultConfig()
	c.Interval, c.MaxProbeRatio = time.Millisecond, 1
	err := config.CheckBounds(&c)
	if err == nil || !strings.Contains(err.Error(), "PACE_INTERVAL must be between 100ms and 1m") ||
		!strings.Contains(err.Error(), "PACE_MAX_PROBE_RATIO must be between 1.1 and 1000") {
		t.Fatalf("bounds: %v", err)
	}
}
