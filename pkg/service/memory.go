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
// creep with the length of the pass. The limit is floor, raised to the
// runtime's memory other than the heap's objects plus twice the live heap as
// those grow (a large fleet's list of schema names, goroutine stacks): the
// heap may then grow by its live part between collections, as with the
// default GOGC, and the collector never runs back to back. An operator's GOGC
// or GOMEMLIMIT is left as it is.
func capHeap(ctx context.Context, floor int64) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(floor)
	debug.SetGCPercent(-1)
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		limit := floor
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if want := heapLimit(floor); want != limit {
				limit = want
				debug.SetMemoryLimit(limit)
			}
		}
	}()
}

// heapLimit is the memory limit capHeap sets now: floor, or the runtime's
// memory that is not the heap's objects (what the limit counts: all it has
// mapped but what it released) plus twice the live heap, whichever is
// larger.
func heapLimit(floor int64) int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	for _, m := range s {
		if m.Value.Kind() != metrics.KindUint64 {
			return floor
		}
	}
	live, total, released, objects := s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64(), s[3].Value.Uint64()
	other := int64(total) - int64(released) - int64(objects)
	return max(floor, other+2*int64(live))
}
