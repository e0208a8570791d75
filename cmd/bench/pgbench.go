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

func (b *bench) startForeground(ctx context.Context) (*foreground, error) {
	name := b.newDatabase()
	if err := execOn(ctx, testenv.AdminURL(), "CREATE DATABASE "+ident(name)); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(b.o.scale), dbURL(name)).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgbench -i: %v\n%s", err, out)
	}
	if err := execOn(ctx, testenv.AdminURL(), "CHECKPOINT"); err != nil {
		return nil, err
	}
	fg := &foreground{prefix: filepath.Join(b.t.TempDir(), "fg"), done: make(chan struct{})}
	// -R: latency counts from each transaction's scheduled start, so a
	// foreground held up by the cleanup shows it even when it catches up.
	fg.cmd = exec.CommandContext(ctx, "pgbench", "-n", "-c", strconv.Itoa(b.o.clients), "-j", "2",
		"-R", strconv.Itoa(b.o.rate), "-T", "86400", "-l", "--log-prefix", fg.prefix, dbURL(name))
	if err := fg.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = fg.cmd.Wait(); close(fg.done) }()
	b.t.Cleanup(fg.stop)
	return fg, nil
}

func (fg *foreground) stop() {
	select {
	case <-fg.done:
	default:
		_ = fg.cmd.Process.Kill()
		<-fg.done
	}
}

// window is the foreground's transactions that ended between from and to.
// pgbench buffers its logs, so it first waits until every log file has
// reached to.
func (fg *foreground) window(ctx context.Context, from, to time.Time) ([]time.Duration, error) {
	var lat []time.Duration
	err := poll(ctx, time.Minute, func() (bool, error) {
		files, _ := filepath.Glob(fg.prefix + ".*")
		if len(files) == 0 {
			return false, nil
		}
		lat = lat[:0]
		for _, file := range files {
			f, err := os.Open(file)
			if err != nil {
				return false, err
			}
			got, last, err := parsePgbenchLog(f, from, to)
			f.Close()
			if err != nil {
				return false, err
			}
			if last.Before(to) {
				select {
				case <-fg.done:
					return false, fmt.Errorf("pgbench exited: %v", fg.cmd.ProcessState)
				default:
					return false, nil
				}
			}
			lat = append(lat, got...)
		}
		return true, nil
	})
	return lat, err
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
	n        int
	p50, p99 time.Duration
	tps      float64
}

func summarise(xs []time.Duration, window time.Duration) latency {
	return latency{n: len(xs), p50: percentile(xs, 50), p99: percentile(xs, 99), tps: float64(len(xs)) / window.Seconds()}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
