package testworld

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// Events lists the events reported so far, oldest first.
func (w *World) Events() []tenant.Event { return w.events.All() }

// Outcomes lists the outcomes reported for id so far, oldest first.
func (w *World) Outcomes(id string) []tenant.Outcome {
	var out []tenant.Outcome
	for _, ev := range w.events.All() {
		if string(ev.TenantID) == id {
			out = append(out, ev.Outcome)
		}
	}
	return out
}

// Has reports whether o was reported for id.
func (w *World) Has(id string, o tenant.Outcome) bool {
	for _, got := range w.Outcomes(id) {
		if got == o {
			return true
		}
	}
	return false
}

// WaitFor waits until o is reported for id, failing the test after timeout.
func (w *World) WaitFor(id string, o tenant.Outcome, timeout time.Duration) {
	w.T.Helper()
	testenv.Eventually(w.T, timeout, func() bool { return w.Has(id, o) }, "%s reported %s (events so far: %v)", id, o, w.Outcomes(id))
}

// EventsWith lists the events reporting o so far.
func (w *World) EventsWith(o tenant.Outcome) []tenant.Event { return w.events.With(o) }

// AssertCleaned checks the end state of a cleaned tenant: schema, public
// rows and control-plane rows gone, exactly one ledger row.
func (w *World) AssertCleaned(id string) {
	w.T.Helper()
	if w.DBs.SchemaExists(w.T, id) {
		w.T.Errorf("%s: schema still exists", id)
	}
	if n := w.DBs.PublicRows(w.T, id); n != 0 {
		w.T.Errorf("%s: %d public rows left", id, n)
	}
	if d := w.DBs.ControlRows(w.T, id); d != "----" {
		w.T.Errorf("%s: control-plane rows left (%s)", id, d)
	}
	if n := w.DBs.CountControl(w.T, "SELECT count(*) FROM tenant_cleanup.ledger WHERE tenant_id = $1", id); n != 1 {
		w.T.Errorf("%s: %d ledger rows; want exactly 1", id, n)
	}
}

// WaitCleaned waits until every one of ids is reported cleaned, failing
// the test after timeout for each, then checks that each is (AssertCleaned).
func (w *World) WaitCleaned(timeout time.Duration, ids ...string) {
	w.T.Helper()
	for _, id := range ids {
		w.WaitFor(id, tenant.OutcomeCleaned, timeout)
	}
	for _, id := range ids {
		w.AssertCleaned(id)
	}
}

// State is what must not change for a tenant the pipeline leaves alone.
type State struct{ Fingerprint, Control string }

// State is id's state now.
func (w *World) State(id string) State {
	return State{w.DBs.Fingerprint(w.T, id), w.DBs.ControlRows(w.T, id)}
}

// StreamLastSeq is the requests stream's last sequence number: it moves
// with every request published.
func (w *World) StreamLastSeq() uint64 {
	w.T.Helper()
	s, err := w.Bus.JetStream().Stream(context.Background(), bus.StreamRequests)
	if err != nil {
		w.T.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		w.T.Fatal(err)
	}
	return info.State.LastSeq
}

// WorkDone reports whether both consumers have nothing pending or in flight.
func (w *World) WorkDone() bool {
	for _, name := range []string{bus.ConsumerMarker, bus.ConsumerCleaner} {
		c, err := w.Bus.JetStream().Consumer(context.Background(), bus.ConsumerStream(name), name)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
			return false
		}
	}
	return true
}

// AssertLogsCarryTenant checks that every log line about an outcome names
// the tenant.
func (w *World) AssertLogsCarryTenant() {
	w.T.Helper()
	for _, line := range strings.Split(strings.TrimSpace(w.Logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			w.T.Errorf("log line is not JSON: %s", line)
			continue
		}
		if _, ok := rec["outcome"]; ok {
			if _, ok := rec["tenant_id"]; !ok {
				w.T.Errorf("outcome log line without tenant_id: %s", line)
			}
		}
	}
}
