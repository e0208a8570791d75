package testenv

import (
	"slices"
	"sync"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Events collects reported events (pass Add to bus.WatchEvents); it is safe
// for concurrent use. The zero value is empty and ready.
type Events struct {
	mu  sync.Mutex
	all []tenant.Event
}

// Add records ev.
func (e *Events) Add(ev tenant.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

// All lists the events recorded so far, oldest first.
func (e *Events) All() []tenant.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.all)
}

// With lists the events reporting o so far, oldest first.
func (e *Events) With(o tenant.Outcome) []tenant.Event {
	var out []tenant.Event
	for _, ev := range e.All() {
		if ev.Outcome == o {
			out = append(out, ev)
		}
	}
	return out
}
