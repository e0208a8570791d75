package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

const (
	idA = "tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745"
	idB = "tenant_1bcd62e7-9fbf-4bb6-8894-f1441fca6745"
)

// env is a test world (internal/testworld) with a marker and a cleaner
// built on its databases, called directly by the tests.
type env struct {
	*testworld.World
	marker  *Marker
	cleaner *Cleaner
	breaker *Breaker               // nil: none
	stores  *testworld.OtherStores // nil: none (withStores)
}

// setup builds the env of a test, which then runs in parallel with the
// others (each has a world of its own).
func setup(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	ctx := context.Background()
	w := testworld.New(t, testworld.Options{})
	data, err := dataplane.New(ctx, w.DBs.Data, dataplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := data.Ensure(ctx, true); err != nil {
		t.Fatal(err)
	}
	control := controlplane.New(w.DBs.Control)
	if err := control.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	stores := Stores{Data: data, Control: control}
	rules := Rules{Window: tenant.Window(90), RowLockTimeout: 2 * time.Second}
	return &env{World: w,
		marker: &Marker{Stores: stores, Rules: rules, Pending: w.Bus, CheckDelay: time.Hour, Now: time.Now},
		cleaner: &Cleaner{Stores: stores, Rules: rules, CheckDelay: time.Minute, CheckMaxDelay: time.Hour,
			Timeout: 24 * time.Hour, MaxLeftoverDocs: 5, Identity: "test", Now: time.Now},
	}
}

// eligible creates a gated tenant, inactive for 200 days, with documents.
func (e *env) eligible(t *testing.T, id string) {
	t.Helper()
	e.DBs.CreateTenant(t, testenv.Tenant{ID: id, Pairs: 2, DocsPerPair: 10, LastQuery: testenv.DaysAgo(200),
		Status: tenant.StatusGatedAccess})
}

// markedAndDrained creates id eligible, marks it and drains it.
func (e *env) markedAndDrained(t *testing.T, id string) {
	t.Helper()
	e.eligible(t, id)
	if err := e.mark(t, id); err != nil {
		t.Fatal(err)
	}
	e.drain(t, id)
}

// markDrainAndClean marks id (an eligible tenant), lets it drain, runs its
// drain check and asserts that it was cleaned.
func (e *env) markDrainAndClean(t *testing.T, id string) {
	t.Helper()
	if err := e.mark(t, id); err != nil {
		t.Fatal(err)
	}
	e.drain(t, id)
	if err := e.check(t, tenant.DrainCheck{ID: tenant.ID(id)}); err != nil {
		t.Fatal(err)
	}
	e.AssertCleaned(id)
}

// crashAfter delivers a drain check of id that stops right after step, as
// a crash there would.
func (e *env) crashAfter(t *testing.T, id, step string) {
	t.Helper()
	crash := errors.New("crash")
	e.cleaner.afterStep = func(s string) error {
		if s == step {
			return crash
		}
		return nil
	}
	defer func() { e.cleaner.afterStep = nil }()
	if err := e.check(t, tenant.DrainCheck{ID: tenant.ID(id)}); !errors.Is(err, crash) {
		t.Fatalf("first delivery: %v", err)
	}
}

// deliver hands d to h and carries out its outcome as the consume loop
// would (schedules, pause, reports); it returns the handler's error.
func (e *env) deliver(t *testing.T, h bus.Handler, d bus.Delivery) error {
	t.Helper()
	ctx := context.Background()
	out, err := h(ctx, d)
	if perr := e.Bus.Perform(ctx, d, out, err); perr != nil {
		t.Fatalf("perform the outcome of %s: %v", d.Data, perr)
	}
	return err
}

// mark delivers a cleanup request for id to the marker.
func (e *env) mark(t *testing.T, id string) error {
	t.Helper()
	return e.deliver(t, e.marker.Handle, bus.Delivery{Subject: bus.SubjectCandidate, Data: []byte(id)})
}

// check delivers a drain check to the cleaner (behind the breaker, if any).
func (e *env) check(t *testing.T, dc tenant.DrainCheck) error {
	t.Helper()
	body, _ := json.Marshal(dc)
	return e.deliverCheck(t, bus.Delivery{Subject: bus.DrainSubject(dc.ID), Data: body})
}

func (e *env) deliverCheck(t *testing.T, d bus.Delivery) error {
	t.Helper()
	return e.deliver(t, bus.Chain(e.cleaner.Handle, e.breaker.Middleware("test", time.Now)), d)
}

func (e *env) drain(t *testing.T, id string) {
	t.Helper()
	for i := 0; i < 20; i++ {
		if e.DBs.DrainStep(t, id, 1000) == 0 && e.DBs.CountData(t, `SELECT count(*) FROM "`+id+`".connector_credential_pair`) == 0 {
			return
		}
	}
	t.Fatalf("%s did not drain", id)
}

func (e *env) waitOutcome(t *testing.T, id tenant.ID, o tenant.Outcome) {
	t.Helper()
	e.WaitFor(string(id), o, 5*time.Second)
}

// placeHold places a hold as tenantctl hold does.
func (e *env) placeHold(t *testing.T, h tenant.Hold) error {
	t.Helper()
	_, _, err := e.cleaner.Control.PlaceHold(context.Background(), h, time.Second)
	return err
}

func pendingChecks(t *testing.T, e *env, id tenant.ID) bool {
	t.Helper()
	p, err := e.Bus.DrainPending(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMarkerRefuses(t *testing.T) {
	old := testenv.DaysAgo(200)
	cases := []struct {
		name   string
		tn     testenv.Tenant
		extra  func(e *env)
		reason string
	}{
		{"active status", testenv.Tenant{Status: "ACTIVE", LastQuery: old}, nil, `status is "ACTIVE"`},
		{"grace period", testenv.Tenant{Status: "GRACE_PERIOD", LastQuery: old}, nil, "GRACE_PERIOD"},
		{"no control-plane row", testenv.Tenant{LastQuery: old}, nil, "no control-plane tenant row"},
		{"queried recently", testenv.Tenant{Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(3)}, nil, "active"},
		{"Craft recently", testenv.Tenant{Status: tenant.StatusGatedAccess, LastQuery: old, LastCraft: testenv.DaysAgo(3)}, nil, "active"},
		{"created recently", testenv.Tenant{Status: tenant.StatusGatedAccess, Created: testenv.DaysAgo(20)}, nil, "created"},
		{"view in public", testenv.Tenant{Status: tenant.StatusGatedAccess, LastQuery: old}, func(e *env) {
			e.DBs.ExecData(t, `CREATE VIEW public.v AS SELECT id FROM "`+idA+`".document`)
		}, "view public.v"},
		{"foreign key from public", testenv.Tenant{Status: tenant.StatusGatedAccess, LastQuery: old}, func(e *env) {
			e.DBs.ExecData(t, `CREATE TABLE public.r (d varchar REFERENCES "`+idA+`".document (id))`)
		}, "public.r"},
		{"schema without chat_message", testenv.Tenant{Status: tenant.StatusGatedAccess, LastQuery: old}, func(e *env) {
			e.DBs.ExecData(t, `DROP TABLE "`+idA+`".chat_message`)
		}, "lacks table(s) chat_message"},
		{"other shard", testenv.Tenant{Status: tenant.StatusGatedAccess, LastQuery: old}, func(e *env) {
			e.DBs.ExecData(t, `INSERT INTO public.tenant_shard VALUES ($1, 'shard_2')`, idA)
			e.marker.ShardName = "shard_1"
		}, `shard "shard_2"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := setup(t)
			c.tn.ID, c.tn.Pairs, c.tn.DocsPerPair = idA, 1, 3
			e.DBs.CreateTenant(t, c.tn)
			if c.extra != nil {
				c.extra(e)
			}
			before := e.State(idA)
			err := e.mark(t, idA)
			var refused *tenant.RefusedError
			if !errors.As(err, &refused) || !strings.Contains(refused.Reason, c.reason) {
				t.Fatalf("mark: %v; want a refusal mentioning %q", err, c.reason)
			}
			if after := e.State(idA); after != before {
				t.Fatal("a refused tenant was changed")
			}
			if pendingChecks(t, e, idA) {
				t.Fatal("a drain check was scheduled for a refused tenant")
			}
		})
	}
}

func TestMarkerMarksOnceAndSchedulesOnce(t *testing.T) {
	e := setup(t)
	e.eligible(t, idA)
	e.eligible(t, idB)
	otherBefore := e.State(idB)
	if err := e.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	if n := e.DBs.CountData(t, `SELECT count(*) FROM "`+idA+`".connector_credential_pair WHERE status <> 'DELETING'`); n != 0 {
		t.Fatalf("%d pairs not DELETING", n)
	}
	if !pendingChecks(t, e, idA) {
		t.Fatal("no drain check scheduled")
	}
	after := e.State(idA)
	// A duplicate request changes nothing and adds no second schedule.
	if err := e.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	if again := e.State(idA); again != after {
		t.Fatal("a second request changed the marked tenant")
	}
	info, err := e.Bus.JetStream().Stream(context.Background(), bus.StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	si, err := info.Info(context.Background(), jetstream.WithSubjectFilter(bus.ScheduleSubject(idA)))
	if err != nil {
		t.Fatal(err)
	}
	if n := si.State.Subjects[bus.ScheduleSubject(idA)]; n != 1 {
		t.Fatalf("%d schedules for the tenant; want 1", n)
	}
	if e.State(idB) != otherBefore {
		t.Fatal("marking one tenant changed another")
	}
	e.waitOutcome(t, idA, tenant.OutcomeMarked)
}

func TestCleanerDrainChecks(t *testing.T) {
	e := setup(t)
	e.eligible(t, idA)
	if err := e.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	// Not drained: reported, and the next check scheduled with backoff.
	if err := e.check(t, tenant.DrainCheck{ID: idA, Attempt: 2}); err != nil {
		t.Fatal(err)
	}
	e.waitOutcome(t, idA, tenant.OutcomeDraining)
	var draining tenant.Event
	if evs := e.EventsWith(tenant.OutcomeDraining); len(evs) > 0 {
		draining = evs[len(evs)-1]
	}
	docs := e.DBs.CountData(t, `SELECT count(*) FROM "`+idA+`".document`)
	if draining.DocumentsLeft == nil || *draining.DocumentsLeft != docs || draining.NextCheckAt == nil ||
		time.Until(*draining.NextCheckAt) < 7*time.Minute { // attempt 3: 1m·2³ = 8m
		t.Fatalf("draining event %+v; want the %d documents left and the next check in about 8m", draining, docs)
	}
	if want := fmt.Sprintf("%d documents left", docs); !strings.Contains(draining.Reason, want) {
		t.Fatalf("draining reason %q; want it to say %q", draining.Reason, want)
	}
	// Past the timeout (counted from the latest marking in the pipeline's
	// record): stuck, left in place, no further check.
	e.DBs.ExecData(t, "UPDATE tenant_cleanup.progress SET last_marked_at = now() - interval '25 hours' WHERE tenant_id = $1", idA)
	before := e.State(idA)
	if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	e.waitOutcome(t, idA, tenant.OutcomeStuck)
	if e.State(idA) != before {
		t.Fatal("a stuck tenant was changed")
	}
	// Drained: cleaned.
	e.DBs.ExecData(t, "UPDATE tenant_cleanup.progress SET last_marked_at = now() WHERE tenant_id = $1", idA)
	e.drain(t, idA)
	if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	e.AssertCleaned(idA)
	e.waitOutcome(t, idA, tenant.OutcomeCleaned)
	entry, found, err := e.cleaner.Control.LedgerEntry(context.Background(), idA)
	if err != nil || !found || entry.RequestedBy != "nats" || entry.DocumentsAtMarking != 20 || !entry.SchemaExisted ||
		entry.RelationsDropped == 0 || entry.PublicRowsDeleted != 5 || entry.LastActivityAt.IsZero() || entry.MarkedAt.IsZero() {
		t.Fatalf("ledger entry %+v, %v, %v", entry, found, err)
	}
	// A duplicate drain check after the cleanup is a no-op.
	if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatalf("duplicate drain check: %v", err)
	}
	e.AssertCleaned(idA)
}

func TestCleanerRefusesTenantsThatChanged(t *testing.T) {
	for _, change := range []struct {
		name string
		do   func(e *env)
	}{
		{"reactivated", func(e *env) {
			e.DBs.ExecData(t, `INSERT INTO "`+idA+`".chat_message (chat_session_id, message, message_type)
				SELECT id, 'back again', 'USER' FROM "`+idA+`".chat_session LIMIT 1`)
		}},
		{"un-gated", func(e *env) {
			e.DBs.ExecControl(t, "UPDATE tenant SET application_status = 'ACTIVE' WHERE tenant_id = $1", idA)
		}},
		{"control-plane row gone", func(e *env) {
			for _, table := range []string{"tenant_notification", "tenant_config", "subscription", "tenant"} {
				e.DBs.ExecControl(t, "DELETE FROM "+table+" WHERE tenant_id = $1", idA)
			}
		}},
		{"outside dependency added", func(e *env) {
			e.DBs.ExecData(t, `CREATE VIEW public.late_report AS SELECT id FROM "`+idA+`".document`)
		}},
	} {
		t.Run(change.name, func(t *testing.T) {
			e := setup(t)
			e.markedAndDrained(t, idA)
			change.do(e)
			publicBefore := e.DBs.PublicRows(t, idA)
			err := e.check(t, tenant.DrainCheck{ID: idA})
			if !errors.Is(err, tenant.ErrRefused) {
				t.Fatalf("drain check of a tenant that changed: %v; want refused", err)
			}
			if !e.DBs.SchemaExists(t, idA) || e.DBs.PublicRows(t, idA) != publicBefore {
				t.Fatal("a refused tenant lost its schema or public rows")
			}
		})
	}
}

// A tenant whose schema is gone is completed only with evidence that its
// cleanup began: this pipeline's record of its drop, or an operator's
// confirmation. Without it (a schema renamed for maintenance, say) it is
// refused and left as it is.
func TestSchemaGoneNeedsEvidence(t *testing.T) {
	e := setup(t)
	e.DBs.CreateTenant(t, testenv.Tenant{ID: idA, Pairs: 1, DocsPerPair: 3, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(5)})
	e.DBs.ExecData(t, `ALTER SCHEMA "`+idA+`" RENAME TO maintenance_copy`)
	before := e.State(idA)
	public := e.DBs.PublicRows(t, idA)
	err := e.mark(t, idA)
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "nothing shows that a cleanup of it began") {
		t.Fatalf("mark of a tenant whose schema was renamed: %v; want refused for review", err)
	}
	if err := e.check(t, tenant.DrainCheck{ID: idA}); !errors.Is(err, tenant.ErrRefused) {
		t.Fatalf("a drain check of it: %v; want refused", err)
	}
	if e.State(idA) != before || e.DBs.PublicRows(t, idA) != public || pendingChecks(t, e, idA) {
		t.Fatal("a tenant without evidence was changed")
	}

	// An operator confirms it (tenantctl cleanup does this after asking): completed.
	e.DBs.CreateTenant(t, testenv.Tenant{ID: idB, Pairs: 1, DocsPerPair: 3, Status: tenant.StatusGatedAccess, NoSchema: true})
	if err := e.cleaner.Data.ConfirmCompletion(context.Background(), idB, "tenantctl:ops@vm"); err != nil {
		t.Fatal(err)
	}
	if err := e.mark(t, idB); err != nil {
		t.Fatal(err)
	}
	if err := e.check(t, tenant.DrainCheck{ID: idB}); err != nil {
		t.Fatal(err)
	}
	e.AssertCleaned(idB)
	entry, _, err := e.cleaner.Control.LedgerEntry(context.Background(), idB)
	if err != nil || entry.SchemaExisted || !strings.Contains(entry.Evidence, "tenantctl:ops@vm") || entry.RequestedBy != "tenantctl:ops@vm" {
		t.Fatalf("ledger entry %+v, %v; want no schema and the operator's confirmation as evidence", entry, err)
	}
}

// TestStopBetweenSteps stops the handlers after each step (as a crash there
// would: open transactions roll back, the message is redelivered) and checks
// that the redelivery ends in the state of an undisturbed run. "scheduled"
// and "reported" stop the consume loop after it carried out part or all of
// the handler's outcome, before the acknowledgement.
func TestStopBetweenSteps(t *testing.T) {
	crash := errors.New("crash")
	// firstDelivery delivers d to h, crashing at step.
	firstDelivery := func(t *testing.T, e *env, h bus.Handler, d bus.Delivery, step string, hook *stepHook) {
		t.Helper()
		ctx := context.Background()
		switch step {
		case "scheduled":
			out, err := h(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range out.Schedule {
				if err := e.Bus.ScheduleDrainCheck(ctx, s.Check, s.At); err != nil {
					t.Fatal(err)
				}
			}
		case "reported":
			if err := e.deliver(t, h, d); err != nil {
				t.Fatal(err)
			}
		default:
			*hook = func(s string) error {
				if s == step {
					return crash
				}
				return nil
			}
			if err := e.deliver(t, h, d); !errors.Is(err, crash) {
				t.Fatalf("first delivery: %v", err)
			}
			*hook = nil
		}
	}
	for _, step := range []string{"preflight", "marked", "scheduled", "reported"} {
		t.Run("marker after "+step, func(t *testing.T) {
			e := setup(t)
			e.eligible(t, idA)
			firstDelivery(t, e, e.marker.Handle, bus.Delivery{Subject: bus.SubjectCandidate, Data: []byte(idA)}, step, &e.marker.afterStep)
			if err := e.mark(t, idA); err != nil {
				t.Fatalf("redelivery: %v", err)
			}
			if !pendingChecks(t, e, idA) {
				t.Fatal("no drain check scheduled after redelivery")
			}
			e.drain(t, idA)
			if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
				t.Fatal(err)
			}
			e.AssertCleaned(idA)
		})
	}
	for _, step := range []string{"drain-checked", "control-plane-prepared", "dropped", "public-rows-deleted", "control-plane-deleted", "reported"} {
		t.Run("cleaner after "+step, func(t *testing.T) {
			e := setup(t)
			e.eligible(t, idA)
			e.eligible(t, idB)
			if err := e.mark(t, idA); err != nil {
				t.Fatal(err)
			}
			e.drain(t, idA)
			other := e.State(idB)
			dc := tenant.DrainCheck{ID: idA}
			body, _ := json.Marshal(dc)
			firstDelivery(t, e, e.cleaner.Handle, bus.Delivery{Subject: bus.DrainSubject(idA), Data: body}, step, &e.cleaner.afterStep)
			if err := e.check(t, dc); err != nil {
				t.Fatalf("redelivery: %v", err)
			}
			e.AssertCleaned(idA)
			// The ledger says what was removed, whichever attempt removed it.
			entry, _, err := e.cleaner.Control.LedgerEntry(context.Background(), idA)
			if err != nil || !entry.SchemaExisted || entry.RelationsDropped == 0 || entry.PublicRowsDeleted != 5 ||
				entry.DocumentsAtMarking != 20 || entry.UsersAtMarking != 2 || entry.LastActivityAt.IsZero() ||
				entry.SchemaDroppedAt.IsZero() || entry.PublicRowsDeletedAt.IsZero() || entry.RequestedBy != "nats" {
				t.Fatalf("ledger entry after a crash %s: %+v, %v", step, entry, err)
			}
			if e.State(idB) != other {
				t.Fatal("another tenant changed")
			}
		})
	}
}

func TestBadDrainChecks(t *testing.T) {
	e := setup(t)
	e.eligible(t, idA)
	before := e.State(idA)
	for _, d := range []bus.Delivery{
		{Subject: bus.DrainSubject(idA), Data: []byte(`{"tenant_id":"public"}`)},
		{Subject: bus.DrainSubject(idA), Data: []byte(`not json`)},
		{Subject: bus.DrainSubject(idB), Data: []byte(`{"tenant_id":"` + idA + `"}`)}, // subject and body disagree
	} {
		err := e.deliverCheck(t, d)
		if !errors.Is(err, tenant.ErrInvalidID) {
			t.Errorf("drain check %s on %s: %v; want ErrInvalidID", d.Data, d.Subject, err)
		}
	}
	if e.State(idA) != before {
		t.Fatal("a bad drain check changed the tenant")
	}
}

func TestOneWorkerPerTenant(t *testing.T) {
	e := setup(t)
	e.eligible(t, idA)
	held, err := e.cleaner.Data.Lock(context.Background(), idA)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	err = e.mark(t, idA)
	var later *tenant.LaterError
	if !errors.As(err, &later) {
		t.Fatalf("mark while another worker has the tenant locked: %v; want later", err)
	}
	if fmt.Sprint(e.Outcomes(idA)) != "[]" {
		t.Fatalf("events %v for a tenant that was only retried", e.Outcomes(idA))
	}
}

func TestHolds(t *testing.T) {
	e := setup(t)
	e.eligible(t, idA)
	ctx := context.Background()
	until := time.Now().Add(30 * time.Minute)
	if err := e.placeHold(t, tenant.Hold{ID: idA, Reason: "legal hold", Until: &until, By: "ops", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	before := e.State(idA)
	err := e.mark(t, idA)
	var refused *tenant.RefusedError
	if !errors.As(err, &refused) || refused.Outcome != tenant.OutcomeHeld || !strings.Contains(refused.Reason, "legal hold") {
		t.Fatalf("mark of a held tenant: %v; want refused as held", err)
	}
	if e.State(idA) != before {
		t.Fatal("a held tenant was marked")
	}

	// Held after marking: drained, but not cleaned; its next check is when the hold ends.
	if _, _, err := e.cleaner.Control.RemoveHold(ctx, idA); err != nil {
		t.Fatal(err)
	}
	if err := e.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	e.drain(t, idA)
	if err := e.placeHold(t, tenant.Hold{ID: idA, Reason: "customer in negotiation", Until: &until, By: "ops", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	if !e.DBs.SchemaExists(t, idA) {
		t.Fatal("a held tenant was cleaned")
	}
	e.waitOutcome(t, idA, tenant.OutcomeHeld)
	state, _, err := e.Bus.TenantState(ctx, idA)
	if err != nil || state.Phase != tenant.PhaseHeld || state.NextCheckAt == nil || state.NextCheckAt.Sub(until).Abs() > time.Second {
		t.Fatalf("state of a held tenant = %+v, %v; want held, next check when the hold ends", state, err)
	}
	// An expired hold no longer holds.
	past := time.Now().Add(-time.Minute)
	if err := e.placeHold(t, tenant.Hold{ID: idA, Reason: "over", Until: &past, By: "ops", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	e.AssertCleaned(idA)
}

func TestHoldPlacedMidwayIsHonoured(t *testing.T) {
	e := setup(t)
	e.eligible(t, idA)
	ctx := context.Background()
	until := time.Now().Add(30 * time.Minute)
	holdNow := func(step string) func(string) error {
		return func(s string) error {
			if s != step {
				return nil
			}
			return e.placeHold(t, tenant.Hold{ID: idA, Reason: "legal hold", Until: &until, By: "ops", At: time.Now()})
		}
	}

	// The marker saw no hold at first; the hold arrives after its preflight.
	before := e.State(idA)
	e.marker.afterStep = holdNow("preflight")
	err := e.mark(t, idA)
	e.marker.afterStep = nil
	var refused *tenant.RefusedError
	if !errors.As(err, &refused) || refused.Outcome != tenant.OutcomeHeld {
		t.Fatalf("mark with a hold placed after preflight: %v; want refused as held", err)
	}
	if e.State(idA) != before {
		t.Fatal("a tenant held before its marking was marked")
	}

	// The cleaner saw no hold at first; the hold arrives after the drain check.
	if _, _, err := e.cleaner.Control.RemoveHold(ctx, idA); err != nil {
		t.Fatal(err)
	}
	if err := e.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	e.drain(t, idA)
	e.cleaner.afterStep = holdNow("drain-checked")
	err = e.check(t, tenant.DrainCheck{ID: idA})
	e.cleaner.afterStep = nil
	if err != nil {
		t.Fatal(err)
	}
	if !e.DBs.SchemaExists(t, idA) {
		t.Fatal("a tenant held before its drop was cleaned")
	}
	e.waitOutcome(t, idA, tenant.OutcomeHeld)
}

func TestCleanupCap(t *testing.T) {
	e := setup(t)
	e.eligible(t, idA)
	e.eligible(t, idB)
	e.cleaner.MaxPerHour = 1
	for _, id := range []string{idA, idB} {
		if err := e.mark(t, id); err != nil {
			t.Fatal(err)
		}
		e.drain(t, id)
	}
	if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	e.AssertCleaned(idA)
	before := e.State(idB)
	err := e.check(t, tenant.DrainCheck{ID: idB})
	var later *tenant.LaterError
	if !errors.As(err, &later) || later.Delay < 59*time.Minute {
		t.Fatalf("second cleanup under a cap of 1 per hour: %v; want to wait about an hour", err)
	}
	if e.State(idB) != before {
		t.Fatal("a capped tenant was changed")
	}
	e.waitOutcome(t, idB, tenant.OutcomeCapped)
	pauses, err := e.Bus.Pauses(context.Background(), time.Now())
	if err != nil || len(pauses) != 1 || pauses[0].Kind != "capped" || !strings.Contains(pauses[0].Reason, "hourly cap of 1") {
		t.Fatalf("pauses = %+v, %v; want the cap recorded for status", pauses, err)
	}
	// The work is kept: with the cap lifted the same drain check cleans it.
	e.cleaner.MaxPerHour = 0
	if err := e.check(t, tenant.DrainCheck{ID: idB}); err != nil {
		t.Fatal(err)
	}
	e.AssertCleaned(idB)
}

func TestBreakerPausesCleaning(t *testing.T) {
	e := setup(t)
	ids := []string{idA, idB, "tenant_i-0c", "tenant_i-0d"}
	for _, id := range ids {
		e.markedAndDrained(t, id)
	}
	e.breaker = &Breaker{Window: 10, MinFailures: 2, Rate: 0.5, Cooldown: time.Hour}
	broken := errors.New("could not delete public rows")
	e.cleaner.afterStep = func(s string) error {
		if s == "dropped" {
			return broken
		}
		return nil
	}
	for _, id := range ids[:2] {
		if err := e.check(t, tenant.DrainCheck{ID: tenant.ID(id)}); !errors.Is(err, broken) {
			t.Fatalf("%s: %v", id, err)
		}
	}
	before := e.State(ids[2])
	err := e.check(t, tenant.DrainCheck{ID: tenant.ID(ids[2])})
	var later *tenant.LaterError
	if !errors.As(err, &later) || !strings.Contains(later.Reason, "circuit breaker open: the latest cleanup of 2 of the last 2 tenants failed") {
		t.Fatalf("after two failures: %v; want the breaker to hold the tenant back", err)
	}
	if e.State(ids[2]) != before {
		t.Fatal("a paused replica changed a tenant")
	}
	e.waitOutcome(t, tenant.ID(ids[2]), tenant.OutcomePaused)
	if p, err := e.Bus.Pauses(context.Background(), time.Now()); err != nil || len(p) != 1 || p[0].Kind != "paused" {
		t.Fatalf("pauses = %+v, %v", p, err)
	}
}
