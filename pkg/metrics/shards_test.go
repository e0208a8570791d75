package metrics_test

import (
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/metrics"
)

// TestShardLabelIsBounded: per-shard step timings of a sharded fleet carry
// the shard's name when it is a configured shard, "other" otherwise, in a
// histogram of their own; the step histogram is unchanged.
func TestShardLabelIsBounded(t *testing.T) {
	m := metrics.New("cleaner")
	m.SetShards([]string{"default", "b"})
	m.ObserveShardStep("drop_schema", "b", time.Second)
	m.ObserveShardStep("drop_schema", "x'; injected", time.Second)
	m.ObserveStep("drop_schema", time.Second)
	base, _ := server(t, m, nil)
	fams := scrape(t, base)
	for _, shard := range []string{"b", "other"} {
		h := find(t, fams, metrics.ShardStepDurationSeconds, map[string]string{"step": "drop_schema", "shard": shard}).GetHistogram()
		if h.GetSampleCount() != 1 {
			t.Errorf("shard %q: %d samples; want 1", shard, h.GetSampleCount())
		}
	}
	for _, s := range fams[metrics.ShardStepDurationSeconds].GetMetric() {
		if l := labels(s)["shard"]; l != "b" && l != "other" {
			t.Errorf("shard label %q exposed", l)
		}
	}
	for _, s := range fams[metrics.StepDurationSeconds].GetMetric() {
		if _, has := labels(s)["shard"]; has {
			t.Errorf("the step histogram got a shard label: %v", labels(s))
		}
	}

	// One shard: nothing new is exposed.
	one := metrics.New("cleaner")
	one.SetShards([]string{"default"})
	one.ObserveShardStep("drop_schema", "default", time.Second)
	base, _ = server(t, one, nil)
	if _, ok := scrape(t, base)[metrics.ShardStepDurationSeconds]; ok {
		t.Error("a one-shard cleaner exposes the per-shard histogram")
	}
}
