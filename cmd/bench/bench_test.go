package main

import (
	"slices"
	"testing"
)

func TestParseFlagsDefaultsAndPhases(t *testing.T) {
	o, err := parseFlags([]string{"-phases", "load,memory,shards", "-tenants", "30"})
	if err != nil || !o.phases["load"] || !o.phases["shards"] || o.phases["throughput"] || o.loadTenants != 30 || o.shardTenants != 40 {
		t.Fatalf("%+v, %v", o, err)
	}
	if o, err := parseFlags([]string{"-service-env", " DROP_CONCURRENCY=3  PACE=off "}); err != nil {
		t.Errorf("-service-env: %v", err)
	} else if want := []string{"DROP_CONCURRENCY=3", "PACE=off"}; !slices.Equal(o.serviceEnv, want) {
		t.Errorf("-service-env: %q, want %q", o.serviceEnv, want)
	}
	for _, args := range [][]string{{"-phases", "nope"}, {"-files", "10", "-keys", "5"}, {"-shard-tenants", "1"},
		{"-service-env", "PACE"}, {"-service-env", "=off"}, {"-memory-tenants", "10"}} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("%v was accepted", args)
		}
	}
}

func TestStepSumsReadFromTheMetrics(t *testing.T) {
	body := `tenant_cleanup_step_duration_seconds_bucket{component="cleaner",step="drop_schema",le="+Inf"} 3
tenant_cleanup_step_duration_seconds_sum{component="cleaner",step="drop_schema"} 1.25
tenant_cleanup_step_duration_seconds_sum{component="cleaner",step="remove_s3_files"} 2e-05
`
	got := reStepSum.FindAllStringSubmatch(body, -1)
	if len(got) != 2 || got[0][1] != "drop_schema" || got[0][2] != "1.25" || got[1][2] != "2e-05" {
		t.Errorf("step sums %v", got)
	}
}

func TestTableHeaderTakesTheWidthsOfTheRows(t *testing.T) {
	s := (&report{}).section("T").table("  %-8s %7.2f %.0f", "run", "× floor", "rounds")
	s.row("floor", 1.0, []float64{3})
	if want := []string{"  run      × floor rounds", "  floor       1.00 [3]"}; !slices.Equal(s.lines, want) {
		t.Errorf("%q, want %q", s.lines, want)
	}
}
