package dataplane

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

const (
	idA = "tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745"
	idB = "tenant_1bcd62e7-9fbf-4bb6-8894-f1441fca6745"
	idC = "tenant_i-00ff"
)

func setup(t *testing.T, opts Options) (*testenv.Databases, *Store) {
	t.Helper()
	dbs := testenv.NewDatabases(t)
	s, err := New(context.Background(), dbs.Data, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ensure(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	return dbs, s
}

func lock(t *testing.T, s *Store, id tenant.ID) *TenantSession {
	t.Helper()
	tt, err := s.Lock(context.Background(), id)
	if err != nil {
		t.Fatalf("lock %s: %v", id, err)
	}
	return tt
}

// locked runs fn with the tenant locked.
func locked[T any](t *testing.T, s *Store, id tenant.ID, fn func(*TenantSession) (T, error)) (T, error) {
	t.Helper()
	tt := lock(t, s, id)
	defer tt.Release()
	return fn(tt)
}

func inspectOf(t *testing.T, s *Store, id tenant.ID) (Snapshot, error) {
	return locked(t, s, id, func(tt *TenantSession) (Snapshot, error) { return tt.Inspect(context.Background()) })
}

func noCheck(Facts) error { return nil }

// inQuarantineAfter is an afterDropTx hook: after drop transaction n it runs
// stmt, as someone else would, with %I in it naming the quarantined schema
// (the tenant's schema, renamed by then).
func inQuarantineAfter(dbs *testenv.Databases, n int, stmt string) func(int) error {
	return func(i int) error {
		if i != n {
			return nil
		}
		_, err := dbs.Data.Exec(context.Background(), `DO $$ BEGIN EXECUTE format('`+stmt+`',
			(SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\_cleanup\_dropping\_%')); END $$`)
		return err
	}
}

func TestInspect(t *testing.T) {
	dbs, s := setup(t, Options{})
	lastQuery := testenv.DaysAgo(200).Truncate(time.Microsecond)
	lastCraft := testenv.DaysAgo(120).Truncate(time.Microsecond)
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Users: 3, Pairs: 2, DocsPerPair: 10, LastQuery: lastQuery, LastCraft: lastCraft})
	dbs.CreateTenant(t, testenv.Tenant{ID: idB, Pairs: 1, DocsPerPair: 4})
	dbs.ExecData(t, "INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ($1, 'shard_7')", idB)

	snap, err := inspectOf(t, s, idA)
	if err != nil {
		t.Fatal(err)
	}
	if !snap.SchemaExists || !snap.HasCraft || len(snap.MissingTables) != 0 || snap.ShardName != "" {
		t.Fatalf("snapshot of %s = %+v", idA, snap)
	}
	if !snap.Activity.LastQuery.Equal(lastQuery) || !snap.Activity.LastCraft.Equal(lastCraft) ||
		!snap.Activity.Last().Equal(lastCraft) || snap.Activity.Documents != 20 || snap.Activity.Users != 3 {
		t.Fatalf("activity of %s = %+v; want last query %s, last craft %s, 20 documents, 3 users",
			idA, snap.Activity, lastQuery, lastCraft)
	}

	snap, err = inspectOf(t, s, idB)
	if err != nil {
		t.Fatal(err)
	}
	if snap.HasCraft || !snap.Activity.LastCraft.IsZero() || snap.ShardName != "shard_7" || snap.Activity.Documents != 4 {
		t.Fatalf("snapshot of %s = %+v", idB, snap)
	}

	snap, err = inspectOf(t, s, idC)
	if err != nil || snap.SchemaExists {
		t.Fatalf("snapshot of a tenant without schema = %+v, %v", snap, err)
	}

	dbs.ExecData(t, `DROP TABLE "`+idB+`".chat_message`)
	snap, err = inspectOf(t, s, idB)
	if err != nil || len(snap.MissingTables) != 1 || snap.MissingTables[0] != "chat_message" {
		t.Fatalf("snapshot of a schema without chat_message = %+v, %v", snap, err)
	}
}

func TestLockIsExclusive(t *testing.T) {
	_, s := setup(t, Options{})
	ctx := context.Background()
	first, err := s.Lock(ctx, idA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(ctx, idA); !errors.Is(err, ErrBusy) {
		t.Fatalf("second lock of the same tenant: %v; want ErrBusy", err)
	}
	other, err := s.Lock(ctx, idB)
	if err != nil {
		t.Fatalf("lock of another tenant: %v", err)
	}
	other.Release()
	first.Release()
	again, err := s.Lock(ctx, idA)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again.Release()
}

func TestOutsideDependents(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	for _, id := range []string{idA, idB} {
		dbs.CreateTenant(t, testenv.Tenant{ID: id, Filler: 3, Pairs: 1, DocsPerPair: 2})
	}
	if _, err := locked(t, s, idA, func(tt *TenantSession) (bool, error) { return true, tt.CheckContained(ctx) }); err != nil {
		t.Fatalf("a plain tenant is not contained: %v", err)
	}

	cases := []struct {
		name, sql, want string
	}{
		{"view in public", `CREATE VIEW public.docs AS SELECT id FROM "` + idA + `".document`, "view public.docs"},
		{"view in another tenant", `CREATE VIEW "` + idB + `".theirs AS SELECT id FROM "` + idA + `".document`, "theirs"},
		{"foreign key from public", `CREATE TABLE public.refs (d varchar REFERENCES "` + idA + `".document (id))`, "refs"},
		{"column of a tenant type", `CREATE TABLE public.typed (x "` + idA + `".connector)`, "typed"},
		{"trigger on public calling a tenant function", `
			CREATE FUNCTION "` + idA + `".f() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
			CREATE TABLE public.trig (x int);
			CREATE TRIGGER t BEFORE INSERT ON public.trig FOR EACH ROW EXECUTE FUNCTION "` + idA + `".f()`, "trig"},
		{"default from a tenant sequence", `CREATE TABLE public.seqd (x int DEFAULT nextval('"` + idA + `".connector_credential_pair_id_seq'))`, "seqd"},
		{"statistics object in public", `CREATE STATISTICS public.st ON id, name FROM "` + idA + `".connector`, "statistics object public.st"},
		{"index of a public table on a tenant function", `
			CREATE FUNCTION "` + idA + `".lower2(text) RETURNS text IMMUTABLE LANGUAGE sql AS 'SELECT lower($1)';
			CREATE TABLE public.ix (t text);
			CREATE INDEX ix_lower ON public.ix ("` + idA + `".lower2(t))`, "ix_lower"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tx, err := dbs.Data.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx) //nolint:errcheck
			if _, err := tx.Exec(ctx, c.sql); err != nil {
				t.Fatal(err)
			}
			oid := func(id string) (n int64) {
				if err := tx.QueryRow(ctx, "SELECT oid::int8 FROM pg_namespace WHERE nspname = $1", id).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			c1, err := walkClosure(ctx, tx, oid(idA))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(c1.outside, "\n"), c.want) {
				t.Fatalf("outside dependents = %q; want one mentioning %q", c1.outside, c.want)
			}
			// The dependency is on idA only.
			if c2, _ := walkClosure(ctx, tx, oid(idB)); len(c2.outside) != 0 && c.name != "view in another tenant" {
				t.Fatalf("%s has outside dependents %q", idB, c2.outside)
			}
		})
	}
}

func TestMark(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Pairs: 2, DocsPerPair: 5})
	dbs.CreateTenant(t, testenv.Tenant{ID: idB, Pairs: 2, DocsPerPair: 5})
	before := dbs.Fingerprint(t, idB)

	tt := lock(t, s, idA)
	defer tt.Release()
	res, err := tt.Mark(ctx, "test", noCheck)
	if err != nil {
		t.Fatal(err)
	}
	// seed_tenant: per extra pair a SUCCESS and a NOT_STARTED attempt, the first pair
	// also an IN_PROGRESS one; plus the default pair.
	if res.CanceledAttempts != 2 || res.StoppingAttempts != 1 || res.DeletingPairs != 3 || res.Pairs != 3 ||
		res.Facts.Activity.Documents != 10 || res.Facts.Pairs != 3 {
		t.Fatalf("mark = %+v", res)
	}
	rec, err := tt.Record(ctx)
	if err != nil || !rec.Marked() || rec.RequestedBy != "test" || rec.DocumentsAtMarking != 10 || rec.UsersAtMarking != 2 {
		t.Fatalf("record after marking = %+v, %v", rec, err)
	}
	q := `"` + idA + `"`
	if n := dbs.CountData(t, "SELECT count(*) FROM "+q+".connector_credential_pair WHERE status <> 'DELETING'"); n != 0 {
		t.Fatalf("%d pairs not DELETING", n)
	}
	if n := dbs.CountData(t, "SELECT count(*) FROM "+q+".index_attempt WHERE status = 'NOT_STARTED'"); n != 0 {
		t.Fatalf("%d attempts still NOT_STARTED", n)
	}
	if n := dbs.CountData(t, "SELECT count(*) FROM "+q+".index_attempt WHERE status = 'IN_PROGRESS' AND cancellation_requested"); n != 1 {
		t.Fatalf("%d running attempts asked to stop; want 1", n)
	}
	if n := dbs.CountData(t, "SELECT count(*) FROM "+q+".index_attempt WHERE status = 'SUCCESS'"); n != 2 {
		t.Fatalf("%d finished attempts; they must stay as they were", n)
	}

	// Idempotent: marking again changes nothing.
	res, err = tt.Mark(ctx, "someone else", noCheck)
	if err != nil || res.CanceledAttempts+res.StoppingAttempts+res.DeletingPairs != 0 || res.Pairs != 3 {
		t.Fatalf("second mark = %+v, %v; want no changes", res, err)
	}
	if again, _ := tt.Record(ctx); !again.MarkedAt.Equal(rec.MarkedAt) || again.RequestedBy != "test" || !again.LastMarkedAt.After(rec.LastMarkedAt) {
		t.Fatalf("record after marking again = %+v; want the first marking kept, the last one moved on", again)
	}
	if after := dbs.Fingerprint(t, idB); after != before {
		t.Fatalf("marking %s changed %s", idA, idB)
	}

	// Onyx's deletion can now run: the watchdog cancels the running attempt.
	for i := 0; i < 10 && dbs.DrainStep(t, idA, 1000) > 0; i++ {
	}
	if d := snapOf(t, tt).Drain(); !d.Drained(5) {
		t.Fatalf("after draining: %+v", d)
	}

	// A refusing recheck rolls the marking back.
	tb := lock(t, s, idB)
	defer tb.Release()
	refusal := tenant.Refuse(idB, "active")
	if _, err := tb.Mark(ctx, "test", func(Facts) error { return refusal }); !errors.Is(err, tenant.ErrRefused) {
		t.Fatalf("mark with refusing recheck: %v", err)
	}
	if after := dbs.Fingerprint(t, idB); after != before {
		t.Fatalf("a refused mark changed %s", idB)
	}
}

func TestDrain(t *testing.T) {
	dbs, s := setup(t, Options{})
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Pairs: 1, DocsPerPair: 8})
	tt := lock(t, s, idA)
	defer tt.Release()
	d := snapOf(t, tt).Drain()
	if d.Pairs != 2 || d.Documents != 8 || d.Drained(5) {
		t.Fatalf("drain of an unmarked tenant = %+v; want 2 pairs, 8 documents", d)
	}
	dbs.ExecData(t, `DROP SCHEMA "`+idA+`" CASCADE`)
	if d := snapOf(t, tt).Drain(); d.SchemaExists || !d.Drained(5) {
		t.Fatalf("drain of a dropped tenant = %+v; want drained", d)
	}
}

func TestDeletePublicRows(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Users: 3})
	dbs.CreateTenant(t, testenv.Tenant{ID: idB, Users: 2})
	for _, id := range []string{idA, idB} {
		dbs.ExecData(t, "INSERT INTO public.tenant_shard (tenant_id, shard_name) VALUES ($1, 'default')", id)
		dbs.ExecData(t, "INSERT INTO public.tenant_sso_domain (domain, tenant_id) VALUES ($1, $1)", id)
	}
	before := dbs.PublicRows(t, idB)
	deletePublic := func() (PublicRows, error) {
		return locked(t, s, idA, func(tt *TenantSession) (PublicRows, error) { return tt.DeletePublicRows(ctx) })
	}
	rows, err := deletePublic()
	if err != nil {
		t.Fatal(err)
	}
	if rows != (PublicRows{OAuthAccounts: 1, UserMappings: 3, Shard: 1, AnonymousPath: 1, InviteCounter: 1, SSODomains: 1}) {
		t.Fatalf("deleted %+v", rows)
	}
	if n := dbs.PublicRows(t, idA); n != 0 {
		t.Fatalf("%d public rows of %s left", n, idA)
	}
	if after := dbs.PublicRows(t, idB); after != before {
		t.Fatalf("public rows of %s: %d before, %d after", idB, before, after)
	}
	rows, err = deletePublic()
	if err != nil || rows.Total() != 0 {
		t.Fatalf("second delete = %+v, %v", rows, err)
	}
	// The record counts what was deleted over both attempts.
	if rec, err := s.Record(ctx, idA); err != nil || rec.PublicRowsDeleted != 8 || rec.PublicRowsDeletedAt.IsZero() {
		t.Fatalf("record = %+v, %v; want 8 public rows deleted", rec, err)
	}
}

func TestDrop(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 20, Pairs: 2, DocsPerPair: 3, LastCraft: testenv.DaysAgo(300)})
	dbs.CreateTenant(t, testenv.Tenant{ID: idB, Filler: 2, Pairs: 1, DocsPerPair: 3})
	fpB := dbs.Fingerprint(t, idB)
	publicB := dbs.PublicRows(t, idB)

	var seen Activity
	drop := func(check func(Facts) error) (DropResult, error) {
		return locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: check}) })
	}
	res, err := drop(func(f Facts) error { seen = f.Activity; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.AlreadyGone || res.Relations < 20*4 || res.Transactions != 1 {
		t.Fatalf("drop = %+v", res)
	}
	if seen.Documents != 6 || seen.LastCraft.IsZero() {
		t.Fatalf("recheck saw %+v; want the tenant's activity", seen)
	}
	if dbs.SchemaExists(t, idA) {
		t.Fatal("schema still exists")
	}
	if dbs.Fingerprint(t, idB) != fpB || dbs.PublicRows(t, idB) != publicB {
		t.Fatalf("dropping %s changed %s", idA, idB)
	}
	if n := dbs.CountData(t, "SELECT count(*) FROM pg_namespace WHERE nspname IN ('public', 'fixture')"); n != 2 {
		t.Fatal("public or fixture schema gone")
	}
	rec, err := s.Record(ctx, idA)
	if err != nil || !rec.DropStarted() || rec.DropFinishedAt.IsZero() || rec.RelationsDropped != int64(res.Relations) ||
		!rec.LastActivityAt.Equal(seen.Last().Truncate(time.Microsecond)) {
		t.Fatalf("record after the drop = %+v, %v; want the drop and its final look recorded", rec, err)
	}
	res, err = drop(noCheck)
	if err != nil || !res.AlreadyGone {
		t.Fatalf("second drop = %+v, %v; want already gone", res, err)
	}
}

func TestDropRefusesOutsideDependents(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 2, Pairs: 1, DocsPerPair: 3})
	dbs.ExecData(t, `CREATE VIEW public.tenant_docs AS SELECT id FROM "`+idA+`".document`)
	before := dbs.Fingerprint(t, idA)
	_, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) })
	var refused *tenant.RefusedError
	if !errors.As(err, &refused) || !strings.Contains(refused.Reason, "view public.tenant_docs") {
		t.Fatalf("drop with a public view over the tenant: %v; want a refusal naming the view", err)
	}
	if dbs.Fingerprint(t, idA) != before {
		t.Fatal("a refused drop changed the tenant")
	}
	if n := dbs.CountData(t, "SELECT count(*) FROM pg_views WHERE viewname = 'tenant_docs'"); n != 1 {
		t.Fatal("the outside view is gone")
	}
}

func TestDropRecheckRefusal(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Pairs: 1, DocsPerPair: 3, LastQuery: testenv.DaysAgo(1)})
	before := dbs.Fingerprint(t, idA)
	_, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) {
		return tt.Drop(ctx, DropChecks{Look: func(f Facts) error {
			if time.Since(f.Activity.Last()) < 90*24*time.Hour {
				return tenant.Refuse(idA, "active")
			}
			return nil
		}})
	})
	if !errors.Is(err, tenant.ErrRefused) {
		t.Fatalf("drop of an active tenant: %v; want refused", err)
	}
	if dbs.Fingerprint(t, idA) != before {
		t.Fatal("a refused drop changed the tenant")
	}
}

func TestDropInBatchesAndResume(t *testing.T) {
	// A lock budget far below the schema's size forces many transactions; an
	// interruption after the second leaves a half-dropped schema that is
	// recognised (the record says the drop began) and completed by the next
	// Drop, without a final look.
	dbs, s := setup(t, Options{LockBudget: 60})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 30, Pairs: 2, DocsPerPair: 3})
	if _, err := locked(t, s, idA, func(tt *TenantSession) (MarkResult, error) { return tt.Mark(ctx, "test", noCheck) }); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10 && dbs.DrainStep(t, idA, 1000) > 0; i++ {
	}
	crash := errors.New("crash")
	s.afterDropTx = func(n int) error {
		if n == 2 {
			return crash
		}
		return nil
	}
	if _, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) }); !errors.Is(err, crash) {
		t.Fatalf("interrupted drop: %v", err)
	}
	// After its look transaction the schema is quarantined: out of reach
	// under the tenant's name, found by its random quarantine name.
	if dbs.SchemaExists(t, idA) || dbs.CountData(t, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\\_cleanup\\_dropping\\_%'") != 1 {
		t.Fatal("after two batches, the schema is not quarantined")
	}
	s.afterDropTx = nil
	tt := lock(t, s, idA)
	defer tt.Release()
	snap, err := tt.Inspect(ctx)
	if err != nil || !snap.Underway || snap.SchemaExists {
		t.Fatalf("half-dropped schema: %+v, %v; want its drop under way", snap, err)
	}
	if d := snap.Drain(); !d.Drained(5) {
		t.Fatalf("half-dropped schema drain: %+v; want drained", d)
	}
	looked := false
	res, err := tt.Drop(ctx, DropChecks{Look: func(Facts) error { looked = true; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Transactions < 5 || looked || res.Looked {
		t.Fatalf("resumed drop took %d transactions, looked %v; want many under a budget of 60 locks, and no second look", res.Transactions, looked)
	}
	rec, err := tt.Record(ctx)
	if err != nil || rec.RelationsDropped < int64(res.Relations)+10 || rec.DropFinishedAt.IsZero() {
		t.Fatalf("record = %+v, %v; want the relations of both attempts", rec, err)
	}
	if dbs.SchemaExists(t, idA) || dbs.CountData(t, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\\_cleanup\\_dropping\\_%'") != 0 {
		t.Fatal("schema still exists")
	}
}

func TestPlanBatches(t *testing.T) {
	rels := []dropRel{
		{name: "user", kind: "r", relations: 3, referencedBy: []string{"a", "b", "c"}},
		{name: "a", kind: "r", relations: 2},
		{name: "b", kind: "r", relations: 2, referencedBy: []string{"c"}},
		{name: "c", kind: "r", relations: 2},
		{name: "v", kind: "v", relations: 1},
		{name: "x", kind: "r", relations: 1, referencedBy: []string{"y"}},
		{name: "y", kind: "r", relations: 1, referencedBy: []string{"x"}},
	}
	batches := planBatches(rels, 7, nil)
	var order []string
	for _, b := range batches {
		cost := 0
		for _, r := range b {
			order = append(order, r.name)
			cost += r.relations * locksPerRelation
		}
		if cost > 7 && len(b) > 1 && b[len(b)-1].name != "y" && b[len(b)-1].name != "x" {
			t.Errorf("batch %v over budget", b)
		}
	}
	pos := map[string]int{}
	for i, n := range order {
		pos[n] = i
	}
	if len(order) != len(rels) {
		t.Fatalf("order %v misses relations", order)
	}
	for _, before := range [][2]string{{"v", "a"}, {"c", "b"}, {"b", "user"}, {"a", "user"}} {
		if pos[before[0]] > pos[before[1]] {
			t.Errorf("order %v drops %s after %s", order, before[0], before[1])
		}
	}
}

func TestListAndActivities(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	ids := []string{idA, idB, idC}
	for i, id := range ids {
		dbs.CreateTenant(t, testenv.Tenant{ID: id, Users: i + 1, Pairs: 1, DocsPerPair: i + 1, LastQuery: testenv.DaysAgo(10 * (i + 1))})
	}
	for _, name := range []string{"tenant_FOO", "tenant_x y", "tenant_cleanup_notes", "other"} {
		dbs.ExecData(t, `CREATE SCHEMA "`+name+`"`)
	}
	schemas, skipped, err := s.ListTenantSchemas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(schemas) != 3 || len(skipped) != 3 {
		t.Fatalf("schemas %v, skipped %v; want 3 tenants and the 3 invalid tenant_ names skipped", schemas, skipped)
	}
	// A schema that vanished meanwhile is reported gone, not an error.
	schemas = append(schemas, SchemaInfo{ID: "tenant_dev"})
	acts, err := s.Activities(ctx, schemas, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		if a.ID == "tenant_dev" {
			if !a.Gone {
				t.Errorf("tenant_dev (no schema) not reported gone: %+v", a)
			}
			continue
		}
		snap, err := inspectOf(t, s, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if a.Gone || !a.Activity.LastQuery.Equal(snap.Activity.LastQuery) || a.Activity.Documents != snap.Activity.Documents ||
			a.Activity.Users != snap.Activity.Users {
			t.Errorf("bulk activity %+v differs from single read %+v", a, snap.Activity)
		}
	}
	withRows, err := s.TenantsWithPublicRows(ctx)
	if err != nil || len(withRows) != 3 {
		t.Fatalf("tenants with public rows: %v, %v", withRows, err)
	}
}

func TestLaterBatchesNeverCascadeOutside(t *testing.T) {
	dbs, s := setup(t, Options{LockBudget: 30})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 6, Pairs: 1, DocsPerPair: 2})
	// After the first batch, someone creates a view over a table dropped
	// later (the schema is quarantined by then: found by its new name).
	s.afterDropTx = inQuarantineAfter(dbs, 1, `CREATE VIEW public.late AS SELECT id FROM %I."user"`)
	_, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) })
	var refused *tenant.RefusedError
	if !errors.As(err, &refused) || !strings.Contains(refused.Reason, "view public.late") {
		t.Fatalf("drop with an outside view created mid-way: %v; want a refusal naming it", err)
	}
	if n := dbs.CountData(t, "SELECT count(*) FROM pg_views WHERE viewname = 'late'"); n != 1 {
		t.Fatal("the outside view was dropped")
	}
}

func TestLaterBatchesCascadeInsideTheSchema(t *testing.T) {
	dbs, s := setup(t, Options{LockBudget: 30})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 6, Pairs: 1, DocsPerPair: 2})
	dbs.CreateTenant(t, testenv.Tenant{ID: idB, Filler: 1})
	other := dbs.Fingerprint(t, idB)
	// A dependency that is not a foreign key: sync_record (dropped late) has
	// a column of filler_1's row type (dropped earlier, RESTRICT fails).
	dbs.ExecData(t, `ALTER TABLE "`+idA+`".sync_record ADD COLUMN f "`+idA+`".filler_1`)
	res, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) })
	if err != nil {
		t.Fatal(err)
	}
	if dbs.SchemaExists(t, idA) || res.Transactions < 4 {
		t.Fatalf("drop = %+v; want the schema gone over several transactions", res)
	}
	if dbs.Fingerprint(t, idB) != other {
		t.Fatal("another tenant changed")
	}
}

// snapOf is the tenant as Inspect reads it, which Mark and Drop start from.
func snapOf(t *testing.T, tt *TenantSession) Snapshot {
	t.Helper()
	snap, err := tt.Inspect(context.Background())
	if err != nil {
		t.Fatalf("inspect %s: %v", tt.id, err)
	}
	return snap
}

// TestDropPlanCostIgnoresTheFleet guards the drop plan's cost: it must reach
// the tenant's relations and foreign keys through catalog indexes, so that
// the catalog pages it reads do not grow with the number of other tenants
// (scanning pg_class, or pg_constraint once per table, made it take seconds
// per tenant on a large data plane).
func TestDropPlanCostIgnoresTheFleet(t *testing.T) {
	dbs, _ := setup(t, Options{})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 5})
	pages := func() int {
		t.Helper()
		var plan []struct {
			Plan struct {
				Hit  int `json:"Shared Hit Blocks"`
				Read int `json:"Shared Read Blocks"`
			} `json:"Plan"`
		}
		if err := dbs.Data.QueryRow(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+query("drop_plan", ""),
			dbs.CountData(t, "SELECT oid::int8 FROM pg_namespace WHERE nspname = $1", idA)).Scan(&plan); err != nil {
			t.Fatal(err)
		}
		return plan[0].Plan.Hit + plan[0].Plan.Read
	}
	pages() // warm the caches
	alone := pages()
	for i := range 15 {
		dbs.CreateTenant(t, testenv.Tenant{ID: fmt.Sprintf("tenant_%08d-0000-4000-8000-000000000000", i), Filler: 5})
	}
	dbs.ExecData(t, "ANALYZE pg_catalog.pg_class, pg_catalog.pg_constraint, pg_catalog.pg_depend")
	pages()
	inFleet := pages()
	if inFleet > alone*3/2 {
		t.Fatalf("the drop plan of one tenant read %d catalog pages alone and %d among 15 more tenants: its cost grows with the fleet", alone, inFleet)
	}
}

// TestBatchedDropLeavesNothing drops, in batches, a schema that also holds a
// sequence no table owns (as Onyx's connector_credential_pair_id_seq) and a
// type: the sequence goes with the last batch, and the type, which the last
// batch's DROP SCHEMA RESTRICT finds, is dropped after a fresh check.
func TestBatchedDropLeavesNothing(t *testing.T) {
	dbs, s := setup(t, Options{LockBudget: 60})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 8})
	dbs.CreateTenant(t, testenv.Tenant{ID: idB, Filler: 1})
	other := dbs.Fingerprint(t, idB)
	dbs.ExecData(t, `CREATE TYPE "`+idA+`".mood AS ENUM ('happy', 'sad')`)
	res, err := locked(t, s, idA, func(tt *TenantSession) (DropResult, error) { return tt.Drop(ctx, DropChecks{Look: noCheck}) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Transactions < 3 || dbs.SchemaExists(t, idA) {
		t.Fatalf("drop = %+v, schema exists %v; want it gone over several transactions", res, dbs.SchemaExists(t, idA))
	}
	if dbs.Fingerprint(t, idB) != other {
		t.Fatal("another tenant changed")
	}
}

func TestDropSlotsBoundConcurrentDrops(t *testing.T) {
	dbs, s := setup(t, Options{DropSlots: 2})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Filler: 2})
	// Other replicas' drops hold both slots.
	others, err := dbs.Data.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer others.Release()
	if _, err := others.Exec(ctx, "SELECT pg_advisory_lock($1, 0), pg_advisory_lock($1, 1)", lockKeyDropSlot); err != nil {
		t.Fatal(err)
	}
	tt := lock(t, s, idA)
	defer tt.Release()
	done := make(chan error, 1)
	go func() {
		_, err := tt.Drop(ctx, DropChecks{Look: noCheck})
		done <- err
	}()
	// The drop waits for a slot: its backend's advisory lock request is not granted.
	testenv.Eventually(t, 10*time.Second, func() bool {
		return dbs.CountData(t, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND classid = $1::bigint::oid`, int64(lockKeyDropSlot)) == 1
	}, "the drop waits for a drop slot")
	select {
	case err := <-done:
		t.Fatalf("the drop finished (%v) while every drop slot was taken", err)
	default:
	}
	if !dbs.SchemaExists(t, idA) {
		t.Fatal("the schema was dropped while every drop slot was taken")
	}
	// A slot frees up: the drop goes ahead.
	if _, err := others.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the drop did not go ahead once a slot was free")
	}
	if dbs.SchemaExists(t, idA) {
		t.Fatal("schema still exists")
	}
}

func TestLockTimeoutMeansLater(t *testing.T) {
	dbs, s := setup(t, Options{LockTimeout: 200 * time.Millisecond})
	ctx := context.Background()
	dbs.CreateTenant(t, testenv.Tenant{ID: idA, Pairs: 1, DocsPerPair: 2})
	before := dbs.Fingerprint(t, idA)
	tt := lock(t, s, idA)
	defer tt.Release()
	// Live traffic (or anything else) holds a lock on one of the tenant's tables.
	traffic, err := dbs.Data.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = traffic.Rollback(ctx) }()
	if _, err := traffic.Exec(ctx, `LOCK TABLE "`+idA+`".connector_credential_pair IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	if _, err := tt.Mark(ctx, "test", noCheck); !errors.Is(err, tenant.ErrLater) {
		t.Fatalf("mark while a table is locked: %v; want try again later", err)
	}
	if _, err := tt.Drop(ctx, DropChecks{Look: noCheck}); !errors.Is(err, tenant.ErrLater) {
		t.Fatalf("drop while a table is locked: %v; want try again later", err)
	}
	// The lock goes away: nothing changed, and the retry goes through.
	if err := traffic.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if !dbs.SchemaExists(t, idA) || dbs.Fingerprint(t, idA) != before {
		t.Fatal("a mark or drop that timed out on a lock changed the tenant")
	}
	if _, err := tt.Mark(ctx, "test", noCheck); err != nil {
		t.Fatal(err)
	}
	if _, err := tt.Drop(ctx, DropChecks{Look: noCheck}); err != nil {
		t.Fatal(err)
	}
	if dbs.SchemaExists(t, idA) {
		t.Fatal("schema still exists")
	}
}

func TestPlanBatchesTreesAndFirst(t *testing.T) {
	rels := []dropRel{
		{name: "big", kind: "p", relations: 1},
		{name: "big_1", kind: "p", relations: 1, parent: "big"},
		{name: "big_1_a", kind: "r", relations: 5, parent: "big_1"},
		{name: "big_1_b", kind: "r", relations: 5, parent: "big_1"},
		{name: "big_2", kind: "r", relations: 5, parent: "big"},
		{name: "small", kind: "p", relations: 1},
		{name: "small_1", kind: "r", relations: 1, parent: "small"},
		{name: "chat_message", kind: "r", relations: 2},
	}
	var order []string
	for _, b := range planBatches(rels, 6*locksPerRelation, []string{"chat_message"}) {
		for _, r := range b {
			order = append(order, fmt.Sprintf("%s:%d", r.name, r.relations))
		}
	}
	// The first table comes first; a tree that fits goes whole (its
	// partitions counted in); a tree that does not is dropped leaves first.
	want := "[chat_message:2 big_1_a:5 big_1_b:5 big_1:1 big_2:5 big:1 small:2]"
	if fmt.Sprint(order) != want {
		t.Fatalf("order %v; want %s", order, want)
	}
}

// TestActivitiesReadFarTimes: the analyzer's bulk read decodes an activity
// time beyond 2292 (a clock gone wrong) or 'infinity' as the latest there
// is, never as a time long past that would make an active tenant look
// inactive; the single read (the marker's and the cleaner's) agrees or
// refuses to read it.
func TestActivitiesReadFarTimes(t *testing.T) {
	dbs, s := setup(t, Options{})
	ctx := context.Background()
	for id, ts := range map[string]string{idA: "2400-01-01 00:00:00+00", idB: "infinity", idC: "1990-06-01 12:00:00.123456+00"} {
		dbs.CreateTenant(t, testenv.Tenant{ID: id, Users: 1, Pairs: 1, DocsPerPair: 1, LastQuery: testenv.DaysAgo(400)})
		dbs.ExecData(t, `UPDATE "`+id+`".chat_message SET time_sent = $1::timestamptz WHERE message_type = 'USER'`, ts)
	}
	schemas, _, err := s.ListTenantSchemas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	acts, err := s.Activities(ctx, schemas, 1)
	if err != nil {
		t.Fatal(err)
	}
	cutoff := time.Now().AddDate(0, 0, -90)
	for _, a := range acts {
		last := a.Activity.Last()
		switch a.ID {
		case idA, idB:
			if !last.After(time.Date(2292, 1, 1, 0, 0, 0, 0, time.UTC)) {
				t.Errorf("%s: bulk read's last activity %s; want after 2292 (active: not before the window's cutoff %s)",
					a.ID, last, cutoff.Format(time.RFC3339))
			}
		case idC:
			if want := time.Date(1990, 6, 1, 12, 0, 0, 123456000, time.UTC); !last.Equal(want) {
				t.Errorf("%s: last activity %s; want %s", a.ID, last, want)
			}
		}
		if a.ID == idA {
			snap, err := inspectOf(t, s, a.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !snap.Activity.LastQuery.Equal(last) {
				t.Errorf("%s: bulk read %s, single read %s", a.ID, last, snap.Activity.LastQuery)
			}
		}
	}
}
