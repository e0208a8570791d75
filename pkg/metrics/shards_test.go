package metrics_test

import (
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/metrics"
)

// TestShardLabelIsBounded: per-shard step timings carry the shard's name
// when it is a configured shard, "other" otherwise; the other steps carry
// no shard.
func TestShardLabelIsBounded(t *testing.T) {
	m := metrics.New("cleaner")
	m.SetShards([]string{"default", "b"})
	m.ObserveShardStep("drop_schema", "b", time.Second)
	m.ObserveShardStep("drop_schema", "x'; injected", time.Second)
	m.ObserveStep("drop_schema", time.Second)
	base, _ := server(t, m, nil)
	fams := scrape(t, base)
	for _, shard := range []string{"b", "other", ""} {
		h := find(t, fams, metrics.StepDurationSeconds, map[string]string{"step": "drop_schema", "shard": shard}).GetHistogram()
		if h.GetSampleCount() != 1 {
			t.Errorf("shard %q: %d samples; want 1", shard, h.GetSampleCount())
		}
	}
	for _, s := range fams[metrics.StepDurationSeconds].GetMetric() {
		if l := labels(s)["shard"]; l != "b" && l != "other" && l != "" {
			t.Errorf("shard label %q exposed", l)
		}
	}
}
