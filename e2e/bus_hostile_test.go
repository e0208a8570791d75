package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// TestHostileHeadersLeaveTheWorkIntact runs the pipeline while hostile
// messages arrive raw on the public subject (through the core connection
// and as JetStream publishes): headers that would roll up, expire, schedule,
// purge a schedule, batch, count or deduplicate, aimed at the tenants whose
// drain checks are pending, at the requests still queued, at tenants nobody
// requested and at the analyzer's next pass. Every requested tenant is
// cleaned, the others hear nothing, and the analyzer's pass is not taken for
// a duplicate.
func TestHostileHeadersLeaveTheWorkIntact(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.SetCheckDelay(2 * time.Second)
	ids := w.fleet(3, 2, "5")
	others := w.bystanders()
	var target string // a tenant nobody requests
	for id := range others {
		target = id
	}
	w.startServices()
	w.request(ids[0], ids[1])
	for _, id := range ids[:2] {
		w.WaitFor(id, tenant.OutcomeMarked, 30*time.Second)
	}

	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	forged, _ := json.Marshal(map[string]any{"tenant_id": target, "attempt": 1, "marked_at": time.Now().Add(-30 * 24 * time.Hour)})
	schedule := bus.ScheduleSubject(tenant.ID(ids[0]))
	headers := []nats.Header{
		{"Nats-Rollup": {"all"}},
		{"Nats-Rollup": {"sub"}},
		{"Nats-TTL": {"1s"}},
		{"Nats-Schedule": {"@at " + past}, "Nats-Schedule-Target": {bus.DrainSubject(tenant.ID(target))}},
		{"Nats-Schedule": {"@every 1s"}, "Nats-Schedule-Target": {bus.DrainSubject(tenant.ID(target))}},
		{"Nats-Schedule": {"@at " + past}, "Nats-Schedule-Target": {bus.DrainSubject(tenant.ID(target))},
			"Nats-Schedule-Source": {schedule}},
		{"Nats-Schedule-Next": {"purge"}, "Nats-Scheduler": {schedule}},
		{"Nats-Msg-Id": {"analyzer:" + ids[2]}},
		{"Nats-Expected-Last-Subject-Sequence": {"0"}, "Nats-Expected-Last-Subject-Sequence-Subject": {schedule}},
		{"Nats-Batch-Id": {"b"}, "Nats-Batch-Sequence": {"1"}, "Nats-Batch-Commit": {"1"}},
		{"Nats-Incr": {"1"}},
		{"Nats-Stream-Source": {bus.StreamWork + " 1 " + bus.DrainSubject(tenant.ID(target))}},
	}
	js := w.Bus.JetStream()
	for _, body := range [][]byte{forged, []byte("garbage"), nil} {
		for _, h := range headers {
			if err := w.Bus.Conn().PublishMsg(&nats.Msg{Subject: bus.SubjectCandidate, Header: h, Data: body}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = js.PublishMsg(ctx, &nats.Msg{Subject: bus.SubjectCandidate, Header: h, Data: body})
			cancel()
		}
	}
	// A request among them, and the analyzer's pass after them.
	w.request(ids[1])
	w.DrainTenants(true, ids...)
	w.analyze()
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, ev := range w.EventsWith(tenant.OutcomeRequested) {
			if ev.TenantID == tenant.ID(ids[2]) && ev.RequestedBy == "analyzer" {
				return true
			}
		}
		return false
	}, "the analyzer published %s despite a message carrying its old message id", ids[2])
	for _, id := range ids {
		w.WaitFor(id, tenant.OutcomeCleaned, 60*time.Second)
		w.AssertCleaned(id)
	}
	testenv.Eventually(t, 20*time.Second, w.WorkDone, "every message handled")
	w.assertUntouched(others)
	for id := range others {
		// The forged drain check's body is also a request for it (anybody
		// may request any tenant): refused by the marker, nothing more.
		for _, o := range w.Outcomes(id) {
			if o != tenant.OutcomeRefused {
				t.Errorf("%s, never requested by the pipeline, has outcomes %v: a forged step reached it", id, w.Outcomes(id))
				break
			}
		}
	}
}
