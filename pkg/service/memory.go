package service

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// analyzerHeap is the heap (with the rest of the Go runtime's memory) the
// analyzer collects at, as long as its live heap is under a third of it.
const analyzerHeap = 16 << 20

// capHeap has the collector run when the process's memory reaches a limit,
// instead of each time the heap doubles its live part: for a process whose
// work holds little but makes much garbage (the analyzer: about 17 KiB per
// tenant read and published, dropped at once), the default makes the peak
// depend on how that garbage happens to line up with the collections, and
// creep with the length of the pass. The limit is floor, raised to three
// times the live heap as that grows (a large fleet's list of schema names),
// so that the collector never runs back to back. An operator's GOGC or
// GOMEMLIMIT is left as it is.
func capHeap(ctx context.Context, floor int64) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(floor)
	debug.SetGCPercent(-1)
	go func() {
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		limit := floor
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			metrics.Read(live)
			if live[0].Value.Kind() != metrics.KindUint64 {
				continue
			}
			if want := max(floor, 3*int64(live[0].Value.Uint64())); want != limit {
				limit = want
				debug.SetMemoryLimit(limit)
			}
		}
	}()
}
