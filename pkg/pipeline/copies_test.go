package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// Tests of the pipeline's record against other copies of a tenant's schema:
// one restored or recreated after its marking, during or after its drop, or
// after an operator confirmed its completion; a data plane dumped and
// restored (oids renumbered) while a drop was under way.

// quarantines lists the schemas a drop under way renamed.
func (e *env) quarantines(t *testing.T) []string {
	t.Helper()
	rows, err := e.DBs.Data.Query(context.Background(),
		`SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\_cleanup\_dropping\_%' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// record reads the pipeline's record of id.
func (e *env) record(t *testing.T, id string) dataplane.Record {
	t.Helper()
	rec, err := e.cleaner.Data.Record(context.Background(), tenant.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// interruptDrop leaves the drop of a marked, drained, eligible tenant id
// under way: with a budget of 60 locks its drop takes many transactions, and
// another session holds a lock on one of its last tables, so the
// transaction that reaches it gives up (lock_timeout) after the look
// transaction has quarantined the schema. It returns the quarantine's name.
func (e *env) interruptDrop(t *testing.T, id string) string {
	t.Helper()
	ctx := context.Background()
	e.DBs.CreateTenant(t, testenv.Tenant{ID: id, Filler: 20, Users: 2, Pairs: 2, DocsPerPair: 10, LastQuery: testenv.DaysAgo(200),
		Status: tenant.StatusGatedAccess})
	if err := e.mark(t, id); err != nil {
		t.Fatal(err)
	}
	e.drain(t, id)
	small, err := dataplane.New(ctx, e.DBs.Data, dataplane.Options{LockBudget: 60, LockTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.marker.Data, e.cleaner.Data = small, small
	blocker, err := e.DBs.Data.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blocker.Exec(ctx, "LOCK TABLE "+pgx.Identifier{id, "filler_9"}.Sanitize()+" IN ACCESS SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	err = e.check(t, tenant.DrainCheck{ID: tenant.ID(id)})
	_ = blocker.Rollback(ctx)
	if !errors.Is(err, tenant.ErrLater) {
		t.Fatalf("drain check with a table locked: %v; want later", err)
	}
	q := e.record(t, id).Quarantine()
	if q == "" || !e.DBs.SchemaExists(t, q) || e.DBs.SchemaExists(t, id) {
		t.Fatalf("after an interrupted drop: quarantine %q (schemas %v), schema of its name exists %v; want the schema quarantined",
			q, e.quarantines(t), e.DBs.SchemaExists(t, id))
	}
	return q
}

// restore brings back a copy of tenant id, as a restore from a backup would:
// its schema with 2 users and no connectors, and its public rows.
func (e *env) restore(t *testing.T, id string, lastQuery time.Time) {
	t.Helper()
	for _, table := range []string{"user_tenant_mapping_oauth_account", "user_tenant_mapping", "tenant_anonymous_user_path",
		"tenant_invite_counter", "tenant_sso_domain", "tenant_shard"} {
		e.DBs.ExecData(t, "DELETE FROM public."+table+" WHERE tenant_id = $1", id)
	}
	e.DBs.ExecData(t, "SELECT fixture.create_tenant($1, 0)", id)
	e.DBs.ExecData(t, "SELECT fixture.seed_tenant($1, 2, 0, 0, $2, NULL)", id, lastQuery)
}

// The quarantine name is random, kept in the record: nobody can take it
// beforehand (a schema named after the oid changes nothing).
func TestQuarantineNameIsRandom(t *testing.T) {
	e := setup(t)
	oidName := "tenant_cleanup_dropping_" + fmt.Sprint(e.DBs.CountData(t, "SELECT max(oid::int8) + 1 FROM pg_namespace"))
	e.DBs.ExecData(t, "CREATE SCHEMA "+pgx.Identifier{oidName}.Sanitize())
	q := e.interruptDrop(t, idA)
	rec := e.record(t, idA)
	if q != dataplane.QuarantinePrefix+rec.DropToken || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(rec.DropToken) {
		t.Fatalf("quarantine %q, record's token %q; want the prefix and 32 random hex digits", q, rec.DropToken)
	}
	// The drop completes under its random name.
	if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	e.AssertCleaned(idA)
	if got := e.quarantines(t); len(got) != 1 || got[0] != oidName {
		t.Fatalf("quarantines after the cleanup: %v; want only the squatter's %s, untouched", got, oidName)
	}
}

// A tenant restored while its drop is under way: the drain check completes
// the drop of the earlier copy and nothing else. The restored copy, its
// public rows and its control-plane rows stay; it is a tenant the pipeline
// never marked.
func TestRestoredWhileDropUnderway(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.interruptDrop(t, idA)
	e.restore(t, idA, testenv.DaysAgo(200))
	restored := e.State(idA)
	public := e.DBs.PublicRows(t, idA)

	err := e.check(t, tenant.DrainCheck{ID: idA})
	if !errors.Is(err, tenant.ErrLater) || !strings.Contains(err.Error(), "completed the drop of an earlier copy") {
		t.Fatalf("drain check after the restore: %v; want the earlier copy's drop completed, then later", err)
	}
	if q := e.quarantines(t); len(q) != 0 {
		t.Fatalf("quarantines left: %v", q)
	}
	if e.State(idA) != restored || e.DBs.PublicRows(t, idA) != public {
		t.Fatal("the restored copy, its public rows or its control-plane rows changed")
	}
	if _, found, _ := e.cleaner.Control.LedgerEntry(ctx, idA); found {
		t.Fatal("a ledger row was written for a tenant whose restored copy is alive")
	}
	// The next drain check forgets the earlier copy's record and refuses.
	err = e.check(t, tenant.DrainCheck{ID: idA})
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "another copy") {
		t.Fatalf("next drain check: %v; want refused: another copy", err)
	}
	if rec := e.record(t, idA); rec.Marked() || rec.DropStarted() || rec.ForgottenAt.IsZero() {
		t.Fatalf("record after the restored copy was seen: %+v; want forgotten", rec)
	}
	if e.State(idA) != restored {
		t.Fatal("the restored copy changed")
	}
}

// A copy restored after the drop (a crash before the control plane
// committed), active again, then renamed away for maintenance: the drop's
// record was forgotten when the copy was seen, so nothing completes the
// cleanup by itself, neither a lost-work scan nor a request.
func TestRestoredAfterDropIsNotCompleted(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.markedAndDrained(t, idA)
	e.crashAfter(t, idA, "dropped")
	e.restore(t, idA, time.Now().Add(-time.Hour))
	e.DBs.ExecControl(t, "UPDATE tenant SET application_status = 'ACTIVE' WHERE tenant_id = $1", idA)
	if err := e.check(t, tenant.DrainCheck{ID: idA}); !errors.Is(err, tenant.ErrRefused) {
		t.Fatalf("redelivery after the restore: %v; want refused", err)
	}
	// Gated again, and renamed away for maintenance: only the evidence
	// stands between it and a cleanup.
	e.DBs.ExecControl(t, "UPDATE tenant SET application_status = 'GATED_ACCESS' WHERE tenant_id = $1", idA)
	public, control := e.DBs.PublicRows(t, idA), e.DBs.ControlRows(t, idA)
	e.DBs.ExecData(t, `ALTER SCHEMA `+pgx.Identifier{idA}.Sanitize()+` RENAME TO maintenance_copy`)

	r := &Reconciler{Stores: e.cleaner.Stores, Bus: e.Bus, Now: time.Now, Log: slog.New(slog.DiscardHandler)}
	if n, err := r.Reconcile(ctx); err != nil || n != 0 {
		t.Fatalf("lost-work scan scheduled %d, %v; want nothing (the record was forgotten)", n, err)
	}
	if err := e.check(t, tenant.DrainCheck{ID: idA}); !errors.Is(err, tenant.ErrRefused) {
		t.Fatalf("drain check of the renamed copy: %v; want refused", err)
	}
	if err := e.mark(t, idA); !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "nothing shows that a cleanup of it began") {
		t.Fatalf("request for the renamed copy: %v; want refused: no evidence", err)
	}
	if e.DBs.PublicRows(t, idA) != public || e.DBs.ControlRows(t, idA) != control {
		t.Fatal("the restored tenant's public or control-plane rows changed")
	}
	if _, found, _ := e.cleaner.Control.LedgerEntry(ctx, idA); found {
		t.Fatal("ledger row written")
	}
}

// An operator's confirmation is about the schema that was gone then: a copy
// of the schema seen later voids it, and it expires after ConfirmationTTL.
func TestConfirmationIsVoidedByTheSchemaReturning(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.DBs.CreateTenant(t, testenv.Tenant{ID: idA, Users: 2, Pairs: 1, DocsPerPair: 3, Status: tenant.StatusGatedAccess,
		LastQuery: testenv.DaysAgo(200)})
	schema := pgx.Identifier{idA}.Sanitize()
	e.DBs.ExecData(t, "ALTER SCHEMA "+schema+" RENAME TO maint")
	if err := e.cleaner.Data.ConfirmCompletion(ctx, idA, "tenantctl:ops@vm"); err != nil {
		t.Fatal(err)
	}
	// It comes back and a request sees it (it is not drained: marked).
	e.DBs.ExecData(t, "ALTER SCHEMA maint RENAME TO "+schema)
	if err := e.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	if rec := e.record(t, idA); !rec.CompletionRequestedAt.IsZero() || rec.ForgottenAt.IsZero() {
		t.Fatalf("record after the schema came back: %+v; want the confirmation forgotten", rec)
	}
	// Used again, then renamed away again: no evidence any more.
	e.DBs.ExecData(t, "UPDATE "+schema+".connector_credential_pair SET status = 'ACTIVE'")
	e.DBs.ExecData(t, "ALTER SCHEMA "+schema+" RENAME TO maint")
	public := e.DBs.PublicRows(t, idA)
	if err := e.check(t, tenant.DrainCheck{ID: idA}); !errors.Is(err, tenant.ErrRefused) {
		t.Fatalf("drain check with the schema renamed away: %v; want refused", err)
	}
	if e.DBs.PublicRows(t, idA) != public {
		t.Fatal("public rows deleted")
	}

	// An expired confirmation is no evidence either.
	e.DBs.ExecData(t, "DROP SCHEMA maint CASCADE")
	if err := e.cleaner.Data.ConfirmCompletion(ctx, idA, "tenantctl:ops@vm"); err != nil {
		t.Fatal(err)
	}
	e.DBs.ExecData(t, "UPDATE tenant_cleanup.progress SET completion_requested_at = now() - $2::interval WHERE tenant_id = $1",
		idA, (dataplane.ConfirmationTTL + time.Minute).String())
	if err := e.check(t, tenant.DrainCheck{ID: idA}); !errors.Is(err, tenant.ErrRefused) ||
		!strings.Contains(err.Error(), "nothing shows that a cleanup of it began") {
		t.Fatalf("drain check with an expired confirmation: %v; want refused: no evidence", err)
	}
	if e.DBs.PublicRows(t, idA) != public {
		t.Fatal("public rows deleted")
	}
}

// The data plane is dumped and restored into a fresh database while a drop
// is under way: schemas get new oids (the record's may now name another
// tenant's schema). The drop is completed by its quarantine name, and
// nothing else is touched. A quarantine that did not survive is refused for
// review, not taken for done.
func TestDumpAndRestoreWhileDropUnderway(t *testing.T) {
	for _, lose := range []bool{false, true} {
		t.Run(fmt.Sprintf("quarantine lost %v", lose), func(t *testing.T) {
			e := setup(t)
			ctx := context.Background()
			q := e.interruptDrop(t, idA)
			e.DBs.CreateTenant(t, testenv.Tenant{ID: idB, Users: 2, Pairs: 1, DocsPerPair: 3, LastQuery: time.Now(), Status: "ACTIVE"})
			url := testenv.CloneDatabase(t, "template0")
			dump := exec.Command("sh", "-c", `pg_dump -Fc "$1" | pg_restore --no-owner --exit-on-error -d "$2"`, "sh", e.DBs.DataURL, url)
			if out, err := dump.CombinedOutput(); err != nil {
				t.Fatalf("dump and restore: %v\n%s", err, out)
			}
			e.DBs.Data = testenv.Pool(t, url)
			data, err := dataplane.New(ctx, e.DBs.Data, dataplane.Options{LockBudget: 60})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := data.Ensure(ctx, true); err != nil {
				t.Fatal(err)
			}
			e.marker.Data, e.cleaner.Data = data, data
			// The recorded oid is now tenant B's schema's.
			e.DBs.ExecData(t, "UPDATE tenant_cleanup.progress SET schema_oid = $2::regnamespace::oid::int8 WHERE tenant_id = $1",
				idA, pgx.Identifier{idB}.Sanitize())
			if lose {
				e.DBs.ExecData(t, "DROP SCHEMA "+pgx.Identifier{q}.Sanitize()+" CASCADE")
			}
			other := e.State(idB)
			err = e.check(t, tenant.DrainCheck{ID: idA})
			if e.State(idB) != other || !e.DBs.SchemaExists(t, idB) {
				t.Fatal("tenant B changed")
			}
			_, found, _ := e.cleaner.Control.LedgerEntry(ctx, idA)
			if lose {
				if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "gone without this pipeline finishing it") || found {
					t.Fatalf("drain check with the quarantine lost: %v, ledger %v; want refused for review", err, found)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(e.quarantines(t)) != 0 || e.DBs.PublicRows(t, idA) != 0 || !found {
				t.Fatalf("after the restored drop: quarantines %v, public rows %d, ledger %v", e.quarantines(t), e.DBs.PublicRows(t, idA), found)
			}
		})
	}
}

// The control-plane session that locks the tenant's row dies while a drop
// transaction waits for a lock: the drop does not commit (a hold or a status
// change could come in the moment the row lock is gone).
func TestControlPlaneSessionDiesDuringDrop(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.markedAndDrained(t, idA)
	slow, err := dataplane.New(ctx, e.DBs.Data, dataplane.Options{LockTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	e.cleaner.Data = slow
	blocker, err := e.DBs.Data.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = blocker.Rollback(ctx) }()
	if _, err := blocker.Exec(ctx, "LOCK TABLE "+pgx.Identifier{idA, "document"}.Sanitize()+" IN ACCESS SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.check(t, tenant.DrainCheck{ID: idA}) }()
	testenv.Eventually(t, 30*time.Second, func() bool {
		return e.DBs.CountData(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'`) == 1
	}, "the drop waits for the table lock")
	// Its control-plane transaction (the tenant's row, FOR UPDATE) dies.
	if n := e.DBs.CountControl(t, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%') k`); n != 1 {
		t.Fatalf("terminated %d control-plane sessions; want the cleaner's one", n)
	}
	_ = blocker.Rollback(ctx)
	if err := <-done; err == nil {
		t.Fatal("the drop committed after the control-plane transaction died")
	}
	if !e.DBs.SchemaExists(t, idA) || e.DBs.PublicRows(t, idA) == 0 {
		t.Fatal("the schema or the public rows are gone")
	}
}

// A drop begun by an earlier version, which dropped the batches under the
// tenant's own name, is refused with what to do; done by hand, the cleanup
// completes.
func TestLegacyDropUnderway(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.markedAndDrained(t, idA)
	schema := pgx.Identifier{idA}.Sanitize()
	e.DBs.ExecData(t, "DROP TABLE "+schema+".chat_message CASCADE")
	e.DBs.ExecData(t, "UPDATE tenant_cleanup.progress SET drop_started_at = now(), schema_oid = NULL WHERE tenant_id = $1", idA)
	err := e.check(t, tenant.DrainCheck{ID: idA})
	if !errors.Is(err, tenant.ErrRefused) || !strings.Contains(err.Error(), "earlier version of this tool") {
		t.Fatalf("drain check of a legacy half-dropped schema: %v; want refused with what to do", err)
	}
	if !e.DBs.SchemaExists(t, idA) {
		t.Fatal("the half-dropped schema was dropped")
	}
	e.DBs.ExecData(t, "DROP SCHEMA "+schema+" CASCADE")
	if err := e.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	e.AssertCleaned(idA)
	if entry, _, _ := e.cleaner.Control.LedgerEntry(ctx, idA); !entry.SchemaExisted {
		t.Fatalf("ledger %+v; want the schema recorded as dropped", entry)
	}
}

// Repeated requests for a tenant whose drain check is pending take no lock
// (its drain check needs it) and do not move its drain timeout.
func TestRepeatedRequestsLeaveAMarkedTenantAlone(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.eligible(t, idA)
	if err := e.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	before := e.record(t, idA)
	held, err := e.cleaner.Data.Lock(ctx, idA)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	for range 3 {
		if err := e.mark(t, idA); err != nil {
			t.Fatalf("repeated request while another worker has the tenant locked: %v; want nothing to do", err)
		}
	}
	if after := e.record(t, idA); !after.LastMarkedAt.Equal(before.LastMarkedAt) {
		t.Fatalf("last marking moved from %v to %v", before.LastMarkedAt, after.LastMarkedAt)
	}
	// A pair that is not DELETING (a connector added since) is marked by the
	// next request.
	held.Release()
	e.DBs.ExecData(t, "UPDATE "+pgx.Identifier{idA}.Sanitize()+".connector_credential_pair SET status = 'ACTIVE'")
	if err := e.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	if n := e.DBs.CountData(t, "SELECT count(*) FROM "+pgx.Identifier{idA}.Sanitize()+".connector_credential_pair WHERE status <> 'DELETING'"); n != 0 {
		t.Fatalf("%d pairs not DELETING after the request", n)
	}
}

// A cleaned tenant's stored files (large objects, PostgreSQL file store)
// are gone and counted in its ledger row; another tenant's stay.
func TestCleanupRemovesLargeObjects(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.eligible(t, idA)
	e.eligible(t, idB)
	files := func(id string, n int) {
		e.DBs.ExecData(t, "SELECT count(*) FROM fixture.add_files($1, $2, 'postgres')", id, n)
	}
	files(idA, 4)
	files(idB, 2)
	count := func(id string) int64 {
		return e.DBs.CountData(t, "SELECT count(*) FROM pg_largeobject_metadata m WHERE convert_from(lo_get(m.oid), 'UTF8') LIKE $1 || ' %'", id)
	}
	e.markDrainAndClean(t, idA)
	entry, _, err := e.cleaner.Control.LedgerEntry(ctx, idA)
	if err != nil || entry.StoresRemoved["large_objects"] != 4 || count(idA) != 0 || count(idB) != 2 {
		t.Fatalf("ledger %+v, %v; large objects left: %d of the tenant's, %d of 2 of the other's", entry.StoresRemoved, err, count(idA), count(idB))
	}
}
