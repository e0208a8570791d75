package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// The raw statements of one cleanup, in the fewest round trips that still do
// every piece of work of a cleanup: 2 on the control plane, 5 on the data
// plane (6 for a tenant with Craft), each its own implicit transaction.
// %[1]s is the quoted schema.
const (
	floorLedger = `CREATE TABLE IF NOT EXISTS public.bench_floor_ledger (tenant_id text PRIMARY KEY,
    cleaned_at timestamptz NOT NULL DEFAULT now(), documents bigint, users bigint, last_activity_at timestamptz,
    tenant_created_at timestamptz, application_status text, stripe_customer_id text, public_rows_deleted bigint,
    control_rows_deleted jsonb)`
	floorStatus   = `SELECT application_status, created_at FROM public.tenant WHERE tenant_id = $1`
	floorActivity = `SELECT (SELECT max(time_sent) FROM %[1]s.chat_message WHERE message_type = 'USER'),
       (SELECT count(*) FROM %[1]s.document), (SELECT count(*) FROM %[1]s."user"), to_regclass($1) IS NOT NULL`
	floorCraft = `SELECT max(last_activity_at) FROM %[1]s.build_session`
	floorMark  = `WITH canceled AS (
    UPDATE %[1]s.index_attempt SET status = 'CANCELED', time_updated = now() WHERE status = 'NOT_STARTED' RETURNING 1
), stopping AS (
    UPDATE %[1]s.index_attempt SET cancellation_requested = true, time_updated = now()
    WHERE status = 'IN_PROGRESS' AND cancellation_requested IS NOT TRUE RETURNING 1
), deleting AS (
    UPDATE %[1]s.connector_credential_pair SET status = 'DELETING' WHERE status <> 'DELETING' RETURNING 1
) SELECT (SELECT count(*) FROM canceled) + (SELECT count(*) FROM stopping) + (SELECT count(*) FROM deleting)`
	floorDrain = `SELECT (SELECT count(*) FROM %[1]s.connector_credential_pair),
       (SELECT count(*) FROM (SELECT 1 FROM %[1]s.document LIMIT 6) d)`
	floorDrop    = `DROP SCHEMA %[1]s CASCADE`
	floorControl = `WITH n AS (DELETE FROM public.tenant_notification WHERE tenant_id = $1 RETURNING 1),
     c AS (DELETE FROM public.tenant_config WHERE tenant_id = $1 RETURNING 1),
     s AS (DELETE FROM public.subscription WHERE tenant_id = $1 RETURNING 1),
     t AS (DELETE FROM public.tenant WHERE tenant_id = $1 RETURNING created_at, application_status, stripe_customer_id)
INSERT INTO public.bench_floor_ledger (tenant_id, documents, users, last_activity_at, tenant_created_at,
    application_status, stripe_customer_id, public_rows_deleted, control_rows_deleted)
SELECT $1, $2, $3, $4, t.created_at, t.application_status, t.stripe_customer_id, $5, jsonb_build_object(
    'tenant_notification', (SELECT count(*) FROM n), 'tenant_config', (SELECT count(*) FROM c),
    'subscription', (SELECT count(*) FROM s), 'tenant', 1) FROM t`
)

// floorPublic deletes the tenant's rows of public in one statement.
var floorPublic = func() string {
	var with, sum []string
	for i, t := range []string{"user_tenant_mapping_oauth_account", "user_tenant_mapping", "tenant_shard",
		"tenant_anonymous_user_path", "tenant_invite_counter", "tenant_sso_domain"} {
		with = append(with, fmt.Sprintf("d%d AS (DELETE FROM public.%s WHERE tenant_id = $1 RETURNING 1)", i, t))
		sum = append(sum, fmt.Sprintf("(SELECT count(*) FROM d%d)", i))
	}
	return "WITH " + strings.Join(with, ", ") + " SELECT " + strings.Join(sum, " + ")
}()

// runFloor cleans ids from d with the raw SQL of a cleanup on two sessions
// (a data-plane and a control-plane connection each) taking tenants from a
// shared queue, and returns how long that took.
func runFloor(ctx context.Context, t *tb, d *testenv.Databases, ids []string) time.Duration {
	_, err := d.Control.Exec(ctx, floorLedger)
	check(err)
	oneTrip := func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeExec } // the statements differ per tenant
	var conns [2][2]*pgx.Conn
	for i := range conns {
		conns[i] = [2]*pgx.Conn{connect(ctx, t, d.DataURL, oneTrip), connect(ctx, t, d.ControlURL, oneTrip)}
	}
	start := time.Now()
	parallel(len(conns), len(ids), func(w, i int) { floorCleanup(ctx, conns[w][0], conns[w][1], ids[i]) })
	took := time.Since(start)
	verifyGone(ctx, d, "public.bench_floor_ledger", ids)
	return took
}

// floorCleanup cleans id; it fails (check) on an error or a tenant that is
// not eligible or not drained.
func floorCleanup(ctx context.Context, data, control *pgx.Conn, id string) {
	s := ident(id)
	var (
		status          string
		created         time.Time
		last, lastCraft *time.Time
		docs, users     int64
		hasCraft        bool
		changed, pairs  int64
		left, public    int64
	)
	check(control.QueryRow(ctx, floorStatus, id).Scan(&status, &created), id)
	check(data.QueryRow(ctx, fmt.Sprintf(floorActivity, s), s+".build_session").Scan(&last, &docs, &users, &hasCraft), id)
	if hasCraft {
		check(data.QueryRow(ctx, fmt.Sprintf(floorCraft, s)).Scan(&lastCraft), id)
		if lastCraft != nil && (last == nil || lastCraft.After(*last)) {
			last = lastCraft
		}
	}
	cutoff := time.Now().Add(-90 * 24 * time.Hour)
	if status != "GATED_ACCESS" || !created.Before(cutoff) || (last != nil && !last.Before(cutoff)) {
		check(fmt.Errorf("not eligible (status %s, created %s, last activity %v)", status, created, last), id)
	}
	check(data.QueryRow(ctx, fmt.Sprintf(floorMark, s)).Scan(&changed), id)
	check(data.QueryRow(ctx, fmt.Sprintf(floorDrain, s)).Scan(&pairs, &left), id)
	if pairs > 0 || left > 5 {
		check(fmt.Errorf("not drained: %d pairs, %d documents", pairs, left), id)
	}
	_, err := data.Exec(ctx, fmt.Sprintf(floorDrop, s))
	// Out of shared memory: the lock table is shared with whatever else
	// runs on the server (other engineers' tests): try again.
	for attempt := 0; isCode(err, "53200") && attempt < 20; attempt++ {
		_, err = data.Exec(ctx, fmt.Sprintf(floorDrop, s))
	}
	check(err, id)
	check(data.QueryRow(ctx, floorPublic, id).Scan(&public), id)
	_, err = control.Exec(ctx, floorControl, id, docs, users, last, public)
	check(err, id)
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// verifyGone checks that d has neither schema, nor public or control-plane
// rows of any of ids left, and a ledger row for each.
func verifyGone(ctx context.Context, d *testenv.Databases, ledger string, ids []string) {
	var schemas, public, tenants, ledgered int64
	check(d.Data.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)),
		(SELECT count(*) FROM public.user_tenant_mapping WHERE tenant_id = ANY($1))`, ids).Scan(&schemas, &public))
	check(d.Control.QueryRow(ctx, `SELECT (SELECT count(*) FROM public.tenant WHERE tenant_id = ANY($1)),
		(SELECT count(*) FROM `+ledger+` WHERE tenant_id = ANY($1))`, ids).Scan(&tenants, &ledgered))
	if schemas+public+tenants != 0 || ledgered != int64(len(ids)) {
		panic(fatal(fmt.Sprintf("not all cleaned: %d schemas, %d public rows, %d control-plane tenants left; %d ledger rows of %d",
			schemas, public, tenants, ledgered, len(ids))))
	}
}
