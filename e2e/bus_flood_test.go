//go:build flood

package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
)

// floodSize is how many hostile requests TestFlood publishes (FLOOD_SIZE
// overrides it).
const floodSize = 100_000

// TestFlood measures what a flood of hostile requests costs: it publishes
// floodSize raw messages on the public subject (half invalid bodies, half
// valid-looking ids of tenants that do not exist) against a running marker
// (bin/marker, a process of its own, on a nats-server v2.15 process), and
// reports the marker's RSS and the bytes JetStream stores in each stream and
// bucket, before, at the peak and once the marker has drained the flood.
// Run it with `make flood` (docs/flood.md has the figures).
func TestFlood(t *testing.T) {
	n := floodSize
	if v, err := strconv.Atoi(os.Getenv("FLOOD_SIZE")); err == nil && v > 0 {
		n = v
	}
	bin := binaries(t)
	addr := freeAddr(t)
	nats := startNATSServer(t, bin, addr, t.TempDir())
	w := newWorldWith(t, testworld.Options{NATSURL: "nats://" + addr})
	http := freeAddr(t)
	marker := start(t, filepath.Join(bin, "marker"), append(w.Environ(), "HTTP_ADDR="+http))
	eventually(t, 30*time.Second, func() bool { return ready(http) }, "marker ready")

	js := w.Bus.JetStream()
	ctx := context.Background()
	before := measure(t, js, marker.cmd.Process.Pid, nats.cmd.Process.Pid)

	// Sample while the flood is published and drained.
	var (
		mu        sync.Mutex
		peak      = before
		peakTotal = before.total() // at one instant, unlike the sum of each stream's peak
	)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			s := measure(t, js, marker.cmd.Process.Pid, nats.cmd.Process.Pid)
			mu.Lock()
			peak, peakTotal = peak.max(s), max(peakTotal, s.total())
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()

	started := time.Now()
	published := flood(t, w.Bus.Conn(), n)
	took := time.Since(started)
	cons, err := js.Consumer(ctx, bus.StreamRequests, bus.ConsumerMarker)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Minute, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "the marker drained the flood")
	drained := time.Since(started)
	close(stop)
	<-sampled
	after := measure(t, js, marker.cmd.Process.Pid, nats.cmd.Process.Pid)

	info, err := js.Stream(ctx, bus.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	stored := int(info.CachedInfo().State.LastSeq)
	t.Logf("%d hostile requests published in %s (%d stored, %d refused by the server), drained after %s",
		published, took.Round(time.Millisecond), stored, published-stored, drained.Round(time.Second))
	t.Logf("%-32s %12s %12s %12s", "", "before", "peak", "after")
	row := func(name string, f func(sample) int64, unit float64) {
		t.Logf("%-32s %12.1f %12.1f %12.1f", name, float64(f(before))/unit, float64(f(peak))/unit, float64(f(after))/unit)
	}
	row("marker RSS (MiB)", func(s sample) int64 { return s.markerRSS }, 1<<20)
	row("nats-server RSS (MiB)", func(s sample) int64 { return s.serverRSS }, 1<<20)
	for _, name := range pipelineStreams {
		row(name+" (MiB)", func(s sample) int64 { return s.bytes[name] }, 1<<20)
		row(name+" (messages)", func(s sample) int64 { return s.msgs[name] }, 1)
	}
	t.Logf("%-32s %12.1f %12.1f %12.1f", "JetStream total (MiB)", float64(before.total())/(1<<20),
		float64(peakTotal)/(1<<20), float64(after.total())/(1<<20))
	t.Logf("marker peak RSS (VmHWM): %.1f MiB", float64(after.markerHWM)/(1<<20))
}

// flood publishes n hostile requests raw on the public subject, half
// invalid bodies, half ids of tenants that do not exist, each different.
func flood(t *testing.T, nc *nats.Conn, n int) int {
	t.Helper()
	invalid := []string{"public", "pg_catalog", "information_schema", "TENANT_DEV", "tenant_dev; DROP SCHEMA public CASCADE",
		`{"tenant_id":"public","requested_by":"x"}`, `{"tenant_id":`, "tenant_i-XYZ", "\x00\x1b[31mtenant", ""}
	for i := 0; i < n; i++ {
		var body string
		if i%2 == 0 {
			body = fmt.Sprintf("%s %d", invalid[i/2%len(invalid)], i)
		} else {
			body = "tenant_" + uuid()
		}
		if i%20 == 19 { // one in twenty a JSON request with a long requester
			body = fmt.Sprintf(`{"tenant_id":%q,"requested_by":%q}`, body, strings.Repeat("x", 3000))
		}
		if err := nc.Publish(bus.SubjectCandidate, []byte(body)); err != nil {
			t.Fatal(err)
		}
		if i%500 == 499 {
			if err := nc.Flush(); err != nil { // keeps the publisher from outrunning the server
				t.Fatal(err)
			}
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return n
}

func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// sample is one measurement.
type sample struct {
	markerRSS, markerHWM, serverRSS int64
	bytes, msgs                     map[string]int64
}

func (s sample) total() int64 {
	var n int64
	for _, b := range s.bytes {
		n += b
	}
	return n
}

// max is the larger of each figure (the total's peak is taken whole).
func (s sample) max(o sample) sample {
	out := sample{markerRSS: max(s.markerRSS, o.markerRSS), markerHWM: max(s.markerHWM, o.markerHWM),
		serverRSS: max(s.serverRSS, o.serverRSS), bytes: map[string]int64{}, msgs: map[string]int64{}}
	for _, name := range pipelineStreams {
		out.bytes[name] = max(s.bytes[name], o.bytes[name])
		out.msgs[name] = max(s.msgs[name], o.msgs[name])
	}
	return out
}

func measure(t *testing.T, js jetstream.JetStream, marker, server int) sample {
	s := sample{bytes: map[string]int64{}, msgs: map[string]int64{}}
	s.markerRSS, s.markerHWM = procMemory(marker)
	s.serverRSS, _ = procMemory(server)
	for _, name := range pipelineStreams {
		st, err := js.Stream(context.Background(), name)
		if err != nil {
			t.Logf("stream %s: %v", name, err)
			continue
		}
		s.bytes[name] = int64(st.CachedInfo().State.Bytes)
		s.msgs[name] = int64(st.CachedInfo().State.Msgs)
	}
	return s
}

// procMemory reads VmRSS and VmHWM (bytes) of a process.
func procMemory(pid int) (rss, hwm int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm
}
