package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPercentileIsNearestRank(t *testing.T) {
	var xs []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		xs = append(xs, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond,
		100: 100 * time.Millisecond, 0.1: time.Millisecond} {
		if got := percentile(xs, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if xs[0] != 100*time.Millisecond || percentile(nil, 99) != 0 {
		t.Error("percentile sorted its argument, or the p99 of nothing is not 0")
	}
}

func TestParsePgbenchLogKeepsTheWindow(t *testing.T) {
	log := `0 1 2100 0 1700000000 500000 120
1 1 3500 0 1700000001 000100 80
0 2 skipped 0 1700000001 200000 9000
1 2 9000 0 1700000002 000000 10
0 3 1200 0 17000`
	from, to := time.Unix(1700000000, 600_000_000), time.Unix(1700000002, 0)
	lat, last, err := parsePgbenchLog(strings.NewReader(log), from, to)
	// Only the second transaction ended in [from, to): the first before,
	// the skipped one does not count, the fourth at to, the last is torn.
	if err != nil || !slices.Equal(lat, []time.Duration{3500 * time.Microsecond}) || !last.Equal(to) {
		t.Errorf("latencies %v, last logged end %v, %v", lat, last, err)
	}
	if _, _, err := parsePgbenchLog(strings.NewReader("0 1 x 0 1 2"), from, to); err == nil {
		t.Error("a line that is not pgbench's log was accepted")
	}
}

func TestParseFlagsDefaultsAndPhases(t *testing.T) {
	o, err := parseFlags([]string{"-phases", "load,memory", "-tenants", "30"})
	if err != nil || !o.phases["load"] || !o.phases["memory"] || o.phases["throughput"] || o.loadTenants != 30 {
		t.Fatalf("%+v, %v", o, err)
	}
	for _, args := range [][]string{{"-phases", "nope"}, {"-files", "10", "-keys", "5"}} {
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
