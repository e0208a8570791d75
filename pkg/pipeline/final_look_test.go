package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// lockRow locks the tenant's control-plane row FOR UPDATE in a session of
// its own (as billing updating it would), until the returned function
// commits that session.
func (e *env) lockRow(t *testing.T, id string) (tx pgx.Tx, release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := e.DBs.Control.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1 FROM tenant WHERE tenant_id = $1 FOR UPDATE", id); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(release)
	return tx, release
}

// waitForRowLock waits until a session of the pipeline waits for a row lock
// on the control plane.
func (e *env) waitForRowLock(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() bool {
		return e.DBs.CountControl(t, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`) > 0
	}, "the handler waits for the tenant's control-plane row")
}

// race runs handle while the tenant's control-plane row is locked by
// another session, makes change (from yet another session) once handle
// waits for that row, releases the row, and returns handle's error. The
// change therefore happens after every earlier look of the handler and
// before its final look.
func (e *env) race(t *testing.T, id string, handle func() error, change func(row pgx.Tx)) error {
	t.Helper()
	row, release := e.lockRow(t, id)
	result := make(chan error, 1)
	go func() { result <- handle() }()
	e.waitForRowLock(t)
	change(row)
	release()
	select {
	case err := <-result:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("the handler did not finish")
		return nil
	}
}

// Changes that make a marked, drained tenant not cleanable, made while the
// cleaner waits for the tenant's control-plane row: after its earlier looks,
// before its final one. The tenant must be left in place.
func TestCleanerFinalLookIsAtomicWithTheDrop(t *testing.T) {
	q := func(id string) string { return `"` + id + `"` }
	for _, c := range []struct {
		name    string
		change  func(e *env, id string, row pgx.Tx)
		outcome tenant.Outcome
	}{
		{"Craft started: build_session created now", func(e *env, id string, _ pgx.Tx) {
			e.DBs.ExecData(t, `CREATE TABLE `+q(id)+`.build_session (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
				user_id uuid REFERENCES `+q(id)+`."user" (id), last_activity_at timestamptz NOT NULL DEFAULT now());
				INSERT INTO `+q(id)+`.build_session DEFAULT VALUES`)
		}, tenant.OutcomeRefused},
		{"a question asked now", func(e *env, id string, _ pgx.Tx) {
			e.DBs.ExecData(t, `INSERT INTO `+q(id)+`.chat_session DEFAULT VALUES;
				INSERT INTO `+q(id)+`.chat_message (chat_session_id, message, message_type)
				SELECT id, 'back again', 'USER' FROM `+q(id)+`.chat_session LIMIT 1`)
		}, tenant.OutcomeRefused},
		{"a new connector", func(e *env, id string, _ pgx.Tx) {
			e.DBs.ExecData(t, `INSERT INTO `+q(id)+`.connector (id, name) VALUES (77, 'new');
				INSERT INTO `+q(id)+`.credential (id, name) VALUES (77, 'new');
				INSERT INTO `+q(id)+`.connector_credential_pair (name, status, connector_id, credential_id) VALUES ('new', 'ACTIVE', 77, 77)`)
		}, tenant.OutcomeDraining},
		{"new documents", func(e *env, id string, _ pgx.Tx) {
			e.DBs.ExecData(t, `INSERT INTO `+q(id)+`.document (id) SELECT 'late-' || g FROM generate_series(1, 50) g`)
		}, tenant.OutcomeDraining},
		{"status changed", func(e *env, id string, row pgx.Tx) {
			// Billing, in the session locking the row, reactivates the tenant.
			if _, err := row.Exec(context.Background(), "UPDATE tenant SET application_status = 'ACTIVE' WHERE tenant_id = $1", id); err != nil {
				t.Fatal(err)
			}
		}, tenant.OutcomeRefused},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := setup(t)
			e.markedAndDrained(t, idA)
			public := e.DBs.PublicRows(t, idA)
			err := e.race(t, idA, func() error { return e.check(t, tenant.DrainCheck{ID: idA}) }, func(row pgx.Tx) { c.change(e, idA, row) })
			if c.outcome == tenant.OutcomeRefused && !errors.Is(err, tenant.ErrRefused) {
				t.Fatalf("drain check: %v; want refused", err)
			}
			if c.outcome == tenant.OutcomeDraining {
				if err != nil {
					t.Fatal(err)
				}
				e.waitOutcome(t, idA, tenant.OutcomeDraining)
			}
			if !e.DBs.SchemaExists(t, idA) || e.DBs.PublicRows(t, idA) != public ||
				e.DBs.CountControl(t, "SELECT count(*) FROM tenant WHERE tenant_id = $1", idA) != 1 ||
				e.DBs.CountControl(t, "SELECT count(*) FROM tenant_cleanup.ledger") != 0 {
				t.Fatal("a tenant that changed at the last moment was cleaned")
			}
		})
	}
}

// The marker's irreversible step gets the same treatment: a tenant that
// starts using the product while the marker waits for its row is not marked.
func TestMarkerFinalLookIsAtomicWithTheMarking(t *testing.T) {
	for _, craft := range []bool{true, false} {
		t.Run(map[bool]string{true: "build_session created now", false: "a question asked now"}[craft], func(t *testing.T) {
			e := setup(t)
			e.eligible(t, idA)
			before := e.DBs.CountData(t, `SELECT count(*) FROM "`+idA+`".connector_credential_pair WHERE status = 'DELETING'`)
			err := e.race(t, idA, func() error { return e.mark(t, idA) }, func(pgx.Tx) {
				if craft {
					e.DBs.ExecData(t, `CREATE TABLE "`+idA+`".build_session (id int, last_activity_at timestamptz DEFAULT now());
						INSERT INTO "`+idA+`".build_session (id) VALUES (1)`)
				} else {
					e.DBs.ExecData(t, `INSERT INTO "`+idA+`".chat_message (chat_session_id, message, message_type)
						SELECT id, 'back again', 'USER' FROM "`+idA+`".chat_session LIMIT 1`)
				}
			})
			if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "active") {
				t.Fatalf("mark: %v; want refused as active", err)
			}
			if n := e.DBs.CountData(t, `SELECT count(*) FROM "`+idA+`".connector_credential_pair WHERE status = 'DELETING'`); n != before {
				t.Fatalf("%d pairs DELETING after a refused marking; want %d", n, before)
			}
			if rec, err := e.cleaner.Data.Record(context.Background(), idA); err != nil || rec.Marked() {
				t.Fatalf("a refused marking was recorded: %+v, %v", rec, err)
			}
		})
	}
}

// A drain check nobody scheduled (published by hand on an internal subject)
// cleans nothing; one carrying forged facts for a tenant the pipeline did
// mark is honoured only as a request to check, and the ledger reports the
// pipeline's own record, not the message.
func TestForgedDrainChecks(t *testing.T) {
	e := setup(t)
	e.eligible(t, idA)
	e.eligible(t, idB)
	before := e.State(idA)
	forged := func(id string, extra string) error {
		body := `{"tenant_id":"` + id + `","attempt":0` + extra + `}`
		return e.deliverCheck(t, bus.Delivery{Subject: bus.DrainSubject(tenant.ID(id)), Data: []byte(body)})
	}
	err := forged(idA, `,"marked_at":"2020-01-01T00:00:00Z","requested_by":"attacker"`)
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "no record that this pipeline marked it") {
		t.Fatalf("a drain check for a tenant never marked: %v; want refused", err)
	}
	if e.State(idA) != before {
		t.Fatal("a forged drain check changed the tenant")
	}

	if err := e.mark(t, idB); err != nil {
		t.Fatal(err)
	}
	e.drain(t, idB)
	err = forged(idB, `,"marked_at":"2020-01-01T00:00:00Z","requested_by":"attacker","documents_at_marking":999999,"users_at_marking":7`)
	if err != nil {
		t.Fatal(err)
	}
	e.AssertCleaned(idB)
	entry, _, err := e.cleaner.Control.LedgerEntry(context.Background(), idB)
	if err != nil || entry.RequestedBy != "nats" || entry.DocumentsAtMarking != 20 || entry.UsersAtMarking != 2 ||
		entry.MarkedAt.Before(time.Now().Add(-time.Hour)) {
		t.Fatalf("ledger entry %+v, %v; want the facts of the pipeline's record", entry, err)
	}
}

// A control-plane table the pipeline does not know, holding rows that
// reference the tenant, refuses the tenant before anything irreversible: its
// schema and public rows stay.
func TestUnknownControlPlaneTableRefusesBeforeTheDrop(t *testing.T) {
	e := setup(t)
	e.markedAndDrained(t, idA)
	e.DBs.ExecControl(t, "CREATE TABLE invoice (id serial PRIMARY KEY, tenant_id varchar REFERENCES tenant (tenant_id) ON DELETE RESTRICT)")
	e.DBs.ExecControl(t, "INSERT INTO invoice (tenant_id) VALUES ($1)", idA)
	public := e.DBs.PublicRows(t, idA)
	err := e.check(t, tenant.DrainCheck{ID: idA})
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "public.invoice") {
		t.Fatalf("drain check: %v; want refused naming public.invoice", err)
	}
	if !e.DBs.SchemaExists(t, idA) || e.DBs.PublicRows(t, idA) != public ||
		e.DBs.CountControl(t, "SELECT count(*) FROM tenant WHERE tenant_id = $1", idA) != 1 {
		t.Fatal("a refused tenant was half-deleted")
	}
	if rec, _ := e.cleaner.Data.Record(context.Background(), idA); rec.DropStarted() {
		t.Fatal("the drop began")
	}
}

// A tenant with a materialized view (and other relation kinds) is cleaned
// like any other: LOCK TABLE takes no materialized view, and must not be
// asked to.
func TestTenantWithMaterializedViewIsCleaned(t *testing.T) {
	e := setup(t)
	e.eligible(t, idA)
	e.DBs.ExecData(t, `CREATE MATERIALIZED VIEW "`+idA+`".stats AS SELECT count(*) FROM "`+idA+`".document;
		CREATE TABLE "`+idA+`".events (id int, at date) PARTITION BY RANGE (at);
		CREATE TABLE "`+idA+`".events_2026 PARTITION OF "`+idA+`".events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`)
	e.markDrainAndClean(t, idA)
}

// The message body of a drain check is parsed for its tenant id and attempt
// only: the old fields are ignored, never trusted.
func TestDrainCheckCarriesNoFacts(t *testing.T) {
	body, _ := json.Marshal(tenant.DrainCheck{ID: idA, Attempt: 3})
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil || len(fields) != 2 {
		t.Fatalf("a drain check carries %v; want the tenant id and the attempt only", fields)
	}
}

// A schema restored after an interrupted cleanup (its drop committed, then
// a crash; then someone restores the tenant) is a new schema: it gets a full
// look, and a tenant active again is refused, not dropped without a look.
func TestRestoredSchemaGetsItsOwnLook(t *testing.T) {
	e := setup(t)
	e.markedAndDrained(t, idA)
	e.crashAfter(t, idA, "dropped")
	// Restored, and in use again (a question an hour ago); still GATED_ACCESS.
	e.DBs.ExecData(t, "SELECT fixture.create_tenant($1, 2)", idA)
	e.DBs.ExecData(t, "SELECT fixture.seed_tenant($1, 2, 2, 10, now() - interval '1 hour', NULL)", idA)
	err := e.check(t, tenant.DrainCheck{ID: idA})
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "active") {
		t.Fatalf("drain check of a restored tenant in use: %v; want refused as active", err)
	}
	if !e.DBs.SchemaExists(t, idA) {
		t.Fatal("the restored schema was dropped")
	}
}

// The control-plane transaction that locks the tenant's row dies during the
// cleanup (a bastion cut, a failover, an idle timeout): the row lock is gone,
// so a hold or a status change may come in; nothing more is dropped.
func TestControlPlaneSessionLostMidCleanup(t *testing.T) {
	e := setup(t)
	e.markedAndDrained(t, idA)
	e.cleaner.afterStep = func(s string) error {
		if s == "control-plane-prepared" { // kill the cleaner's control-plane session
			_, err := e.DBs.Control.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle in transaction'`)
			return err
		}
		return nil
	}
	err := e.check(t, tenant.DrainCheck{ID: idA})
	e.cleaner.afterStep = nil
	if !errors.Is(err, tenant.ErrLater) && !errors.Is(err, tenant.ErrUnavailable) {
		t.Fatalf("cleanup with its control-plane session gone: %v; want later", err)
	}
	if !e.DBs.SchemaExists(t, idA) {
		t.Fatal("the schema was dropped after the tenant's row lock was lost")
	}
	until := time.Now().Add(time.Hour)
	if err := e.placeHold(t, tenant.Hold{ID: idA, Reason: "legal", By: "ops", Until: &until}); err != nil {
		t.Fatal(err)
	}
	if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	if !e.DBs.SchemaExists(t, idA) {
		t.Fatal("a tenant held after the lost session was dropped")
	}
	e.waitOutcome(t, idA, tenant.OutcomeHeld)
}

// Once its drop began, a tenant is completed whatever happens to its status:
// its data is gone, and the ledger must say so.
func TestStatusChangeAfterTheDropDoesNotStrandTheTenant(t *testing.T) {
	for _, step := range []string{"dropped", "public-rows-deleted"} {
		t.Run(step, func(t *testing.T) {
			e := setup(t)
			e.markedAndDrained(t, idA)
			e.crashAfter(t, idA, step)
			e.DBs.ExecControl(t, "UPDATE tenant SET application_status = 'ACTIVE' WHERE tenant_id = $1", idA)
			if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
				t.Fatalf("redelivery after the status changed: %v", err)
			}
			e.AssertCleaned(idA)
			entry, _, err := e.cleaner.Control.LedgerEntry(context.Background(), idA)
			if err != nil || entry.ApplicationStatus != "ACTIVE" || !entry.SchemaExisted || entry.PublicRowsDeleted != 5 {
				t.Fatalf("ledger entry %+v, %v; want the status at completion and what was removed", entry, err)
			}
		})
	}
}

// A data-plane table the pipeline does not know, holding rows that
// reference the tenant's public rows, refuses the tenant before anything is
// dropped (its foreign key would make the delete fail after the drop, or
// cascade into it).
func TestUnknownDataPlaneTableRefusesBeforeTheDrop(t *testing.T) {
	for _, action := range []string{"RESTRICT", "CASCADE"} {
		t.Run(action, func(t *testing.T) {
			e := setup(t)
			e.markedAndDrained(t, idA)
			e.DBs.ExecData(t, `CREATE TABLE public.user_audit (email varchar, tenant_id varchar,
				FOREIGN KEY (email, tenant_id) REFERENCES public.user_tenant_mapping (email, tenant_id) ON DELETE `+action+`)`)
			e.DBs.ExecData(t, `INSERT INTO public.user_audit SELECT email, tenant_id FROM public.user_tenant_mapping WHERE tenant_id = $1`, idA)
			err := e.check(t, tenant.DrainCheck{ID: idA})
			if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "public.user_audit") {
				t.Fatalf("drain check: %v; want refused naming public.user_audit", err)
			}
			if !e.DBs.SchemaExists(t, idA) || e.DBs.CountData(t, "SELECT count(*) FROM public.user_audit") != 2 {
				t.Fatal("the tenant or the unknown table was changed")
			}
		})
	}
}

// A tenant placed on a shard this pipeline is not configured for is refused
// and left alone, also when no shard name is configured (this data plane is
// then the default shard).
func TestTenantOnAnotherShardIsRefused(t *testing.T) {
	e := setup(t)
	e.eligible(t, idA)
	e.DBs.ExecData(t, `INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ($1, 'shard_7')`, idA)
	before := e.State(idA)
	err := e.mark(t, idA)
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), `shard "shard_7"`) {
		t.Fatalf("mark of a tenant on shard_7: %v; want refused", err)
	}
	if e.State(idA) != before {
		t.Fatal("a tenant of another shard was changed")
	}
}
