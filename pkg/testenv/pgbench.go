package testenv

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Pgbench is a foreground load: pgbench's TPC-B-like transactions at a
// fixed rate on a database of the test's own, every transaction logged, so
// that the latencies of any window of time can be read afterwards.
type Pgbench struct {
	prefix string
	proc   *Process
	t      testing.TB
}

// StartPgbench creates a database on the server of AdminURL, initializes it
// at scale (pgbench -i) and checkpoints, then runs pgbench -c clients -j 2
// -R rate on it until t ends. With -R a transaction's latency counts from
// its scheduled start, so a foreground held up shows it even when it
// catches up.
func StartPgbench(t testing.TB, scale, clients, rate int) *Pgbench {
	t.Helper()
	url := CloneDatabase(t, "template0")
	if out, err := exec.Command("pgbench", "-i", "-q", "-s", strconv.Itoa(scale), url).CombinedOutput(); err != nil {
		t.Fatalf("testenv: pgbench -i: %v\n%s", err, out)
	}
	conn, err := pgx.Connect(context.Background(), url)
	if err == nil {
		_, err = conn.Exec(context.Background(), "CHECKPOINT")
		conn.Close(context.Background())
	}
	if err != nil {
		t.Fatalf("testenv: checkpoint after pgbench -i: %v", err)
	}
	p := &Pgbench{prefix: filepath.Join(t.TempDir(), "fg"), t: t}
	p.proc = StartProcess(t, exec.Command("pgbench", "-n", "-c", strconv.Itoa(clients), "-j", "2", "-R", strconv.Itoa(rate),
		"-T", "86400", "-l", "--log-prefix", p.prefix, url))
	return p
}

// Window returns the latencies of the transactions that ended in [from,
// to). pgbench buffers its logs, so it first waits (up to a minute) until
// every log has reached to; it fails the test if pgbench has exited.
func (p *Pgbench) Window(from, to time.Time) []time.Duration {
	p.t.Helper()
	var lat []time.Duration
	Eventually(p.t, time.Minute, func() bool {
		if p.proc.Exited() {
			p.t.Fatal(p.proc.Failure())
		}
		files, _ := filepath.Glob(p.prefix + ".*")
		lat = lat[:0]
		for _, file := range files {
			f, err := os.Open(file)
			if err != nil {
				p.t.Fatal(err)
			}
			got, last, err := ParsePgbenchLog(f, from, to)
			f.Close()
			if err != nil {
				p.t.Fatal(err)
			}
			if last.Before(to) {
				return false
			}
			lat = append(lat, got...)
		}
		return len(files) > 0
	}, "pgbench's logs reaching %s", to.Format(time.TimeOnly))
	return lat
}

// ParsePgbenchLog reads a pgbench transaction log (pgbench -l: "client_id
// transaction_no time script_no time_epoch time_us [schedule_lag]", time in
// microseconds, the epoch of the transaction's end) and returns the
// latencies of the transactions that ended in [from, to), and the end of
// the last one logged.
func ParsePgbenchLog(r io.Reader, from, to time.Time) ([]time.Duration, time.Time, error) {
	var (
		lat  []time.Duration
		last time.Time
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue // a line pgbench has not finished writing
		}
		us, err1 := strconv.ParseInt(f[2], 10, 64)
		sec, err2 := strconv.ParseInt(f[4], 10, 64)
		usec, err3 := strconv.ParseInt(f[5], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			if f[2] == "skipped" {
				continue
			}
			return nil, last, fmt.Errorf("pgbench log: cannot read %q", sc.Text())
		}
		last = time.Unix(sec, usec*1000)
		if !last.Before(from) && last.Before(to) {
			lat = append(lat, time.Duration(us)*time.Microsecond)
		}
	}
	return lat, last, sc.Err()
}

// Percentile is the nearest-rank p-th percentile (0 < p <= 100) of xs.
func Percentile(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}
