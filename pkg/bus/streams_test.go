package bus

import (
	"context"
	"log/slog"
	"slices"
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
	srv := testenv.StartJetStream(t)
	b := connect(t, srv.URL)
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
	work, err := js.Stream(ctx, StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	info, err := work.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
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
