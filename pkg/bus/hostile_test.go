package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// hostile is a message published raw on the public subject.
type hostile struct {
	name   string
	header map[string]string
	reply  string // the reply subject (core publishes only)
	body   string
	// refused: the server must refuse to store it (a JetStream publish gets
	// an error back).
	refused bool
}

// hostileMessages are the headers nats-server v2.15 honours on a publish
// (server/stream.go, processJetStreamMsgWithBatch), each aimed at the
// pipeline's other work: tenant idA and idB have pending drain-check
// schedules, tenant_dev a due drain check.
func hostileMessages() []hostile {
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	// A drain check as an attacker would write one, with the facts it wants.
	forged, _ := json.Marshal(map[string]any{"tenant_id": idA, "attempt": 1, "requested_by": "attacker",
		"marked_at": time.Now().Add(-30 * 24 * time.Hour)})
	schedA, drainA := ScheduleSubject(idA), DrainSubject(idA)
	return []hostile{
		{name: "rollup all", header: map[string]string{"Nats-Rollup": "all"}, body: "tenant_dev", refused: true},
		{name: "rollup sub", header: map[string]string{"Nats-Rollup": "sub"}, body: "tenant_dev", refused: true},
		{name: "message TTL", header: map[string]string{"Nats-TTL": "1s"}, body: "tenant_dev", refused: true},
		{name: "message TTL never", header: map[string]string{"Nats-TTL": "never"}, body: "tenant_dev", refused: true},
		{name: "schedule a forged drain check", header: map[string]string{"Nats-Schedule": "@at " + past,
			"Nats-Schedule-Target": drainA}, body: string(forged), refused: true},
		{name: "recurring schedule", header: map[string]string{"Nats-Schedule": "@every 1s",
			"Nats-Schedule-Target": drainA}, body: string(forged), refused: true},
		{name: "schedule from another tenant's schedule", header: map[string]string{"Nats-Schedule": "@at " + past,
			"Nats-Schedule-Target": DrainSubject(idB), "Nats-Schedule-Source": schedA}, refused: true},
		{name: "schedule with TTL and rollup", header: map[string]string{"Nats-Schedule": "@at " + past,
			"Nats-Schedule-Target": drainA, "Nats-Schedule-TTL": "1s", "Nats-Schedule-Rollup": "sub",
			"Nats-Schedule-Time-Zone": "UTC"}, body: string(forged), refused: true},
		{name: "purge a schedule", header: map[string]string{"Nats-Schedule-Next": "purge", "Nats-Scheduler": schedA},
			body: "tenant_dev", refused: true},
		{name: "scheduler alone", header: map[string]string{"Nats-Scheduler": schedA}, body: "tenant_dev", refused: true},
		{name: "counter increment", header: map[string]string{"Nats-Incr": "1"}, refused: true},
		{name: "counter sources", header: map[string]string{"Nats-Counter-Sources": `{"TENANT_CLEANUP":{"x":"1"}}`},
			body: "tenant_dev"},
		{name: "atomic batch", header: map[string]string{"Nats-Batch-Id": "b1", "Nats-Batch-Sequence": "1",
			"Nats-Batch-Commit": "1"}, body: "tenant_dev", refused: true},
		{name: "fast batch (reply subject)", reply: "x.b2.10.ok.1.2.$FI", body: "tenant_dev"},
		{name: "stream source", header: map[string]string{"Nats-Stream-Source": StreamWork + " 1 " + drainA},
			body: "tenant_dev", refused: true},
		{name: "expected stream", header: map[string]string{"Nats-Expected-Stream": StreamWork}, body: "tenant_dev", refused: true},
		{name: "expected last sequence", header: map[string]string{"Nats-Expected-Last-Sequence": "0"}, body: "tenant_dev",
			refused: true},
		{name: "expected last subject sequence of a schedule", header: map[string]string{
			"Nats-Expected-Last-Subject-Sequence": "0", "Nats-Expected-Last-Subject-Sequence-Subject": schedA}, body: "tenant_dev"},
		{name: "expected last message id", header: map[string]string{"Nats-Expected-Last-Msg-Id": "x"}, body: "tenant_dev",
			refused: true},
		{name: "message id", header: map[string]string{"Nats-Msg-Id": "analyzer:" + string(idA)}, body: "tenant_dev"},
		{name: "marker reason", header: map[string]string{"Nats-Marker-Reason": "MaxAge"}, body: "tenant_dev"},
		{name: "trace only", header: map[string]string{"Nats-Trace-Dest": "_INBOX.trace", "Nats-Trace-Only": "true"},
			body: "tenant_dev", refused: true},
		{name: "forged request info", header: map[string]string{"Nats-Request-Info": `{"acc":"SYS","rply":"x.$FI"}`},
			body: "tenant_dev"},
		{name: "required API level", header: map[string]string{"Nats-Required-Api-Level": "99"}, body: "tenant_dev"},
		{name: "status header", header: map[string]string{"Status": "409", "Description": "Consumer Deleted"}, body: "tenant_dev"},
		{name: "a drain check as a request", body: string(forged)},
		{name: "oversized body", body: strings.Repeat("tenant_", MaxRequestSize/7+1), refused: true},
		{name: "oversized headers", header: map[string]string{"X-Filler": strings.Repeat("x", 70_000)}, body: "tenant_dev",
			refused: true},
	}
}

func (h hostile) msg() *nats.Msg {
	m := &nats.Msg{Subject: SubjectCandidate, Reply: h.reply, Data: []byte(h.body), Header: nats.Header{}}
	for k, v := range h.header {
		m.Header.Set(k, v)
	}
	return m
}

// TestHostileMessagesOnThePublicSubject publishes every hostile message raw
// on the public subject, through the core connection and as a JetStream
// publish, while drain checks and requests are pending: the pending work is
// intact and delivered, nothing reaches the work stream, and a later request
// is delivered too.
func TestHostileMessagesOnThePublicSubject(t *testing.T) {
	srv := testenv.StartJetStream(t)
	b := connect(t, srv.URL)
	ctx := context.Background()

	// Pending work: two schedules, one due drain check, two requests.
	checks := map[tenant.ID]tenant.DrainCheck{
		idA:          {ID: idA, Attempt: 1},
		idB:          {ID: idB, Attempt: 2},
		"tenant_dev": {ID: "tenant_dev", Attempt: 3},
	}
	for id, dc := range checks {
		at := time.Now().Add(time.Hour)
		if id == "tenant_dev" {
			at = time.Now() // due: delivered on the drain subject at once
		}
		if err := b.ScheduleDrainCheck(ctx, dc, at); err != nil {
			t.Fatal(err)
		}
	}
	before := []tenant.ID{"tenant_i-0a01", "tenant_i-0a02"}
	for _, id := range before {
		if err := b.PublishRequest(ctx, tenant.Request{ID: id, RequestedBy: "ops"}); err != nil {
			t.Fatal(err)
		}
	}

	// Every hostile message, through the core connection and as a JetStream publish.
	js := b.JetStream()
	for _, h := range hostileMessages() {
		if err := b.Conn().PublishMsg(h.msg()); err != nil && !h.refused {
			t.Errorf("%s: core publish: %v", h.name, err)
		}
		if h.reply != "" {
			continue // a JetStream publish chooses its own reply subject
		}
		pubCtx, cancel := context.WithTimeout(ctx, time.Second) // a trace-only message is never acknowledged
		ack, err := js.PublishMsg(pubCtx, h.msg())
		cancel()
		t.Logf("%-45s server: %v", h.name, outcome(ack, err))
		if h.refused && err == nil {
			t.Errorf("%s: stored (seq %d); want it refused", h.name, ack.Sequence)
		}
	}
	if err := b.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	later := tenant.ID("tenant_i-0a03")
	if err := b.PublishRequest(ctx, tenant.Request{ID: later, RequestedBy: "ops"}); err != nil {
		t.Fatal(err)
	}

	// The work stream holds exactly the pipeline's own messages.
	work, err := js.Stream(ctx, StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	info, err := work.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{ScheduleSubject(idA): 1, ScheduleSubject(idB): 1, DrainSubject("tenant_dev"): 1}
	if fmt.Sprint(info.State.Subjects) != fmt.Sprint(want) {
		t.Fatalf("work stream holds %v; want exactly %v", info.State.Subjects, want)
	}
	for subj := range want {
		m, err := work.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			t.Fatal(err)
		}
		dc, err := tenant.ParseDrainCheck(m.Data)
		if err != nil || dc != checks[dc.ID] {
			t.Errorf("%s holds %s; want the drain check scheduled (%+v)", subj, m.Data, checks[dc.ID])
		}
	}

	// Every request is delivered, the pending ones first, in order.
	var (
		mu   sync.Mutex
		seen []tenant.ID
	)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_ = b.Consume(cctx, ConsumeOptions{Consumer: ConsumerMarker, FilterSubject: SubjectCandidate},
			func(_ context.Context, d Delivery) (Outcome, error) {
				var out Outcome
				req, err := tenant.ParseRequest(d.Data)
				if err != nil {
					return out, err
				}
				mu.Lock()
				seen = append(seen, req.ID)
				mu.Unlock()
				return out, nil
			})
	}()
	testenv.Eventually(t, 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(seen, later)
	}, "the request published after the hostile messages delivered")
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 || !slices.Equal(seen[:2], before) {
		t.Fatalf("delivered %v; want the pending requests %v first", seen, before)
	}
}

func outcome(ack *jetstream.PubAck, err error) string {
	if err != nil {
		return "refused: " + err.Error()
	}
	if ack.Duplicate {
		return fmt.Sprintf("dropped, a duplicate of %s #%d", ack.Stream, ack.Sequence)
	}
	return fmt.Sprintf("stored as %s #%d", ack.Stream, ack.Sequence)
}

// TestForgedMessageIDSuppressesNoRequest publishes raw requests carrying the
// message ids a publisher might use; the pipeline's own requests for the same
// tenant are stored and delivered all the same.
func TestForgedMessageIDSuppressesNoRequest(t *testing.T) {
	srv := testenv.StartJetStream(t)
	b := connect(t, srv.URL)
	ctx := context.Background()
	for _, id := range []string{"analyzer:" + string(idA), string(idA), "tenantctl:" + string(idA), "request." + string(idA)} {
		m := &nats.Msg{Subject: SubjectCandidate, Data: []byte("garbage"), Header: nats.Header{"Nats-Msg-Id": {id}}}
		if _, err := b.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.PublishRequest(ctx, tenant.Request{ID: idA, RequestedBy: "ops"}); err != nil {
		t.Fatal(err)
	}
	var got []Published
	if err := b.PublishRequests(ctx, []tenant.Request{{ID: idA, RequestedBy: "analyzer"}}, func(p Published) { got = append(got, p) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Duplicate {
		t.Fatalf("the analyzer's request was taken for a duplicate: %+v", got)
	}
	s, err := b.JetStream().Stream(ctx, StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 6 {
		t.Fatalf("%d requests stored; want the 4 forged ones and both of the pipeline's", n)
	}
	for _, seq := range []uint64{5, 6} {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if req, err := tenant.ParseRequest(m.Data); err != nil || req.ID != idA {
			t.Errorf("message %d: %s; want the request for %s", seq, m.Data, idA)
		}
	}
}
