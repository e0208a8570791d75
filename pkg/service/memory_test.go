package service

import (
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
)

func TestHeapLimitLeavesRoomAboveWhatIsMapped(t *testing.T) {
	if got := heapLimit(1 << 40); got != 1<<40 {
		t.Errorf("heapLimit with a floor above everything = %d, want the floor", got)
	}
	// Memory the limit counts that is not the heap's objects: goroutine
	// stacks, 200 × about 256 KiB.
	var started, release sync.WaitGroup
	release.Add(1)
	var deep func(n int) int
	deep = func(n int) int {
		var pad [1024]byte
		if n == 0 {
			started.Done()
			release.Wait()
			return int(pad[0])
		}
		return deep(n-1) + int(pad[n%len(pad)])
	}
	for range 200 {
		started.Add(1)
		go deep(200)
	}
	started.Wait()
	defer release.Done()
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	live, mapped := int64(s[0].Value.Uint64()), int64(s[1].Value.Uint64()-s[2].Value.Uint64())
	// The limit must be above what is mapped now (the heap's objects are
	// the live ones, just collected), else the collector runs back to back.
	if got := heapLimit(0); got <= mapped {
		t.Errorf("heapLimit(0) = %.1f MiB with %.1f MiB mapped and %.1f MiB live: no room for the heap to grow",
			float64(got)/(1<<20), float64(mapped)/(1<<20), float64(live)/(1<<20))
	}
}
