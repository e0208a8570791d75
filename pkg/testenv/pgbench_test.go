package testenv

import (
	"os/exec"
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
		if got := Percentile(xs, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if xs[0] != 100*time.Millisecond || Percentile(nil, 99) != 0 {
		t.Error("Percentile sorted its argument, or the p99 of nothing is not 0")
	}
}

func TestParsePgbenchLogKeepsTheWindow(t *testing.T) {
	log := `0 1 2100 0 1700000000 500000 120
1 1 3500 0 1700000001 000100 80
0 2 skipped 0 1700000001 200000 9000
1 2 9000 0 1700000002 000000 10
0 3 1200 0 17000`
	from, to := time.Unix(1700000000, 600_000_000), time.Unix(1700000002, 0)
	lat, last, err := ParsePgbenchLog(strings.NewReader(log), from, to)
	// Only the second transaction ended in [from, to): the first before,
	// the skipped one does not count, the fourth at to, the last is torn.
	if err != nil || !slices.Equal(lat, []time.Duration{3500 * time.Microsecond}) || !last.Equal(to) {
		t.Errorf("latencies %v, last logged end %v, %v", lat, last, err)
	}
	if _, _, err := ParsePgbenchLog(strings.NewReader("0 1 x 0 1 2"), from, to); err == nil {
		t.Error("a line that is not pgbench's log was accepted")
	}
}

// TestPgbenchWindowHasTheTransactionsAtTheRate: a real pgbench at 100
// transactions per second logs about as many in a second's window.
func TestPgbenchWindowHasTheTransactionsAtTheRate(t *testing.T) {
	if _, err := exec.LookPath("pgbench"); err != nil {
		t.Skip("pgbench is not installed (apt-get install postgresql-client-15)")
	}
	p := StartPgbench(t, 1, 1, 100)
	from := time.Now().Add(500 * time.Millisecond)
	lat := p.Window(from, from.Add(time.Second))
	if len(lat) < 20 || len(lat) > 200 || Percentile(lat, 50) <= 0 {
		t.Errorf("%d transactions in a second at 100/s, p50 %v", len(lat), Percentile(lat, 50))
	}
}

func TestOutsideFailsByPanicAndCleansUpLastFirst(t *testing.T) {
	var order []int
	err := Try(func() {
		Scope(func(o *Outside) {
			o.Cleanup(func() { order = append(order, 1) })
			o.Cleanup(func() { order = append(order, 2) })
			o.Fatalf("no %s", "luck")
		})
	})
	if err == nil || err.Error() != "no luck" || !slices.Equal(order, []int{2, 1}) {
		t.Errorf("Try returned %v; cleanups ran in order %v, want [2 1]", err, order)
	}
	if Try(func() {}) != nil {
		t.Error("Try of a function that did not fail returned an error")
	}
}
