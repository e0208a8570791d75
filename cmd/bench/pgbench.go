package main

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
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// foreground is a pgbench load at a fixed rate (TPC-B-like transactions)
// on a database of its own on the same server, logging every transaction,
// so that the latencies of any window of time can be read afterwards.
type foreground struct {
	cmd    *exec.Cmd
	prefix string
	done   chan struct{}
}

func (b *bench) startForeground(ctx context.Context, t *tb) *foreground {
	name := b.newDatabase(t)
	b.exec(ctx, "CREATE DATABASE "+ident(name))
	out, err := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(b.o.scale), testenv.DatabaseURL(name)).CombinedOutput()
	check(err, "pgbench -i", string(out))
	b.exec(ctx, "CHECKPOINT")
	fg := &foreground{prefix: filepath.Join(t.TempDir(), "fg"), done: make(chan struct{})}
	// -R: latency counts from each transaction's scheduled start, so a
	// foreground held up by the cleanup shows it even when it catches up.
	fg.cmd = exec.CommandContext(ctx, "pgbench", "-n", "-c", strconv.Itoa(b.o.clients), "-j", "2",
		"-R", strconv.Itoa(b.o.rate), "-T", "86400", "-l", "--log-prefix", fg.prefix, testenv.DatabaseURL(name))
	check(fg.cmd.Start())
	go func() { _ = fg.cmd.Wait(); close(fg.done) }()
	t.Cleanup(func() { _ = fg.cmd.Process.Kill(); <-fg.done })
	return fg
}

// window is the foreground's transactions that ended between from and to.
// pgbench buffers its logs, so it first waits until every log file has
// reached to.
func (fg *foreground) window(ctx context.Context, from, to time.Time) (lat []time.Duration) {
	until(ctx, time.Minute, "pgbench's logs reaching the window's end", func() bool {
		files, _ := filepath.Glob(fg.prefix + ".*")
		lat = lat[:0]
		for _, file := range files {
			f := must(os.Open(file))
			got, last, err := parsePgbenchLog(f, from, to)
			f.Close()
			check(err)
			if last.Before(to) {
				select {
				case <-fg.done:
					check(fmt.Errorf("pgbench exited: %v", fg.cmd.ProcessState))
				default:
				}
				return false
			}
			lat = append(lat, got...)
		}
		return len(files) > 0
	})
	return lat
}

// parsePgbenchLog reads a pgbench transaction log (pgbench -l: "client_id
// transaction_no time script_no time_epoch time_us [schedule_lag]", time in
// microseconds, the epoch of the transaction's end) and returns the
// latencies of the transactions that ended in [from, to), and the end of
// the last one logged.
func parsePgbenchLog(r io.Reader, from, to time.Time) ([]time.Duration, time.Time, error) {
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

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of xs.
func percentile(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// latency summarises a window of the foreground.
type latency struct {
	p50, p99 time.Duration
	tps      float64
}

func summarise(xs []time.Duration, window time.Duration) latency {
	return latency{p50: percentile(xs, 50), p99: percentile(xs, 99), tps: float64(len(xs)) / window.Seconds()}
}
