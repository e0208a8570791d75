package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

func TestStreamOf(t *testing.T) {
	for subject, want := range map[string]string{
		SubjectCandidate:         StreamRequests,
		DrainSubjects:            StreamWork,
		DrainSubject(idA):        StreamWork,
		ScheduleSubject(idA):     StreamWork,
		EventSubject("cleaned"):  StreamEvents,
		EventSubjects:            StreamEvents,
		subjectDeadPrefix + "x":  StreamDead,
		"tenant.cleanup.>":       "",
		"tenant.cleanup.drain":   "",
		"tenant.cleanup.drain.>": "",
		"tenant.cleanup.other":   "",
	} {
		if got := StreamOf(subject); got != want {
			t.Errorf("StreamOf(%q) = %q; want %q", subject, got, want)
		}
	}
	if ConsumerStream(ConsumerMarker) != StreamRequests || ConsumerStream(ConsumerCleaner) != StreamWork {
		t.Error("the consumers read the wrong streams")
	}
}

// TestStreamLayout: the requests stream honours nothing but queuing, and is
// bounded; the work stream no longer holds the public subject.
func TestStreamLayout(t *testing.T) {
	b := newBus(t)
	ctx := context.Background()
	s, err := b.js.Stream(ctx, StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if !slices.Equal(c.Subjects, []string{SubjectCandidate}) || c.Retention != jetstream.WorkQueuePolicy || c.AllowRollup ||
		!c.DenyPurge || !c.DenyDelete || c.AllowMsgSchedules || c.AllowMsgTTL || c.AllowMsgCounter || c.AllowAtomicPublish ||
		c.AllowBatchPublish || c.MaxMsgSize != MaxRequestSize || c.MaxMsgs <= 0 || c.MaxBytes <= 0 ||
		c.Discard != jetstream.DiscardNew || c.Duplicates > 2*time.Minute {
		t.Errorf("requests stream: %+v", c)
	}
	w, err := b.js.Stream(ctx, StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(w.CachedInfo().Config.Subjects, SubjectCandidate) {
		t.Errorf("work stream subjects %v", w.CachedInfo().Config.Subjects)
	}
	e, err := b.js.Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if ec := e.CachedInfo().Config; ec.MaxBytes <= 0 || ec.MaxMsgs <= 0 || ec.MaxAge != EventRetention {
		t.Errorf("events stream is not bounded: %+v", ec)
	}
}

// TestMoveRequestsFromTheOldLayout starts on a server set up by the previous
// version (the public subject inside the work stream, the marker's consumer
// there, requests and a schedule pending): the requests move to the requests
// stream, in order and once, the schedule stays, and the old consumer goes.
func TestMoveRequestsFromTheOldLayout(t *testing.T) {
	srv := testenv.StartJetStream(t)
	ctx := context.Background()
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: StreamWork, Subjects: []string{SubjectCandidate,
		subjectSchedulePrefix + "*", DrainSubjects}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
		Duplicates: 7 * 24 * time.Hour, AllowMsgSchedules: true, AllowRollup: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, StreamWork, jetstream.ConsumerConfig{Durable: ConsumerMarker,
		FilterSubject: SubjectCandidate, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	bodies := []string{"tenant_i-0001", `{"tenant_id":"tenant_i-0002","requested_by":"ops"}`, "tenant_i-0003"}
	for i, body := range bodies {
		if _, err := js.Publish(ctx, SubjectCandidate, []byte(body)); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if _, err := js.Publish(ctx, ScheduleSubject(idA), []byte(`{"tenant_id":"`+idA+`"}`),
				jetstream.WithScheduleAt(time.Now().Add(time.Hour)), jetstream.WithScheduleTarget(DrainSubject(idA))); err != nil {
				t.Fatal(err)
			}
		}
	}

	// tenantctl (NoUpdate) before the services moved anything: it works and changes nothing.
	ctl, err := Connect(ctx, srv.URL, Options{Name: "tenantctl", NoUpdate: true, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("tenantctl on the old layout: %v", err)
	}
	ctl.Close()

	for range 2 { // a second start moves nothing twice
		connect(t, srv.URL)
	}
	_, info := workStream(t, js)
	if slices.Contains(info.Config.Subjects, SubjectCandidate) || len(info.State.Subjects) != 1 ||
		info.State.Subjects[ScheduleSubject(idA)] != 1 {
		t.Fatalf("work stream after the move: subjects %v, holding %v; want only the schedule", info.Config.Subjects, info.State.Subjects)
	}
	if _, err := js.Consumer(ctx, StreamWork, ConsumerMarker); err == nil {
		t.Error("the marker's old consumer is still there")
	}
	requests, err := js.Stream(ctx, StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	if n := requests.CachedInfo().State.Msgs; n != uint64(len(bodies)) {
		t.Fatalf("%d requests in %s; want %d", n, StreamRequests, len(bodies))
	}
	for i, body := range bodies {
		m, err := requests.GetMsg(ctx, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data) != body {
			t.Errorf("request %d is %s; want %s", i+1, m.Data, body)
		}
	}
}

// workStream returns the work stream and its info, counting every subject.
func workStream(t *testing.T, js jetstream.JetStream) (jetstream.Stream, *jetstream.StreamInfo) {
	t.Helper()
	work, err := js.Stream(context.Background(), StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	info, err := work.Info(context.Background(), jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	return work, info
}

// TestRefusedStateExpires: the state of a refused tenant (requested, then
// refused) goes after its TTL; the state of a tenant in the pipeline stays.
func TestRefusedStateExpires(t *testing.T) {
	srv := testenv.StartJetStream(t)
	b, err := Connect(context.Background(), srv.URL, Options{Name: "test", RefusedStateTTL: time.Second, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ctx := context.Background()
	now := time.Now().UTC()
	b.Report(ctx, tenant.Event{TenantID: idA, Outcome: tenant.OutcomeRequested, RequestedBy: "ops", Time: now})
	b.Report(ctx, tenant.Event{TenantID: idA, Outcome: tenant.OutcomeRefused, Reason: "no control-plane row", Time: now.Add(time.Millisecond)})
	b.Report(ctx, tenant.Event{TenantID: "tenant_dev", Outcome: tenant.OutcomeRefused, Reason: "unknown", Time: now})
	b.Report(ctx, tenant.Event{TenantID: idB, Outcome: tenant.OutcomeMarked, Time: now})
	for _, id := range []tenant.ID{idA, "tenant_dev"} {
		if s, found, err := b.TenantState(ctx, id); err != nil || !found || s.Phase != tenant.PhaseRefused {
			t.Fatalf("state of %s right after its refusal: %+v, %v, %v", id, s, found, err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, foundA, errA := b.TenantState(ctx, idA)
		_, foundDev, errDev := b.TenantState(ctx, "tenant_dev")
		return errA == nil && errDev == nil && !foundA && !foundDev
	}, "the refused tenants' state expired")
	if s, found, err := b.TenantState(ctx, idB); err != nil || !found || s.Phase != tenant.PhaseMarked {
		t.Fatalf("state of a marked tenant: %+v, %v, %v; want it kept", s, found, err)
	}
	if all, err := b.States(ctx); err != nil || len(all) != 1 {
		t.Fatalf("states = %+v, %v; want the marked tenant's only", all, err)
	}
}

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
	b := newBus(t)
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
	work, info := workStream(t, js)
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
	seen := consumed(t, b, 1)
	testenv.Eventually(t, 20*time.Second, func() bool { return slices.Contains(seen(), later) },
		"the request published after the hostile messages delivered")
	if got := seen(); len(got) < 2 || !slices.Equal(got[:2], before) {
		t.Fatalf("delivered %v; want the pending requests %v first", got, before)
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
	b := newBus(t)
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
