package dataplane

import (
	"context"
	"errors"
	"fmt"
	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgschema"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Record is this pipeline's own record of one tenant on this database
// (tenant_cleanup.progress, see sql/ensure.sql). Each field is written in the
// same transaction as the step it records, so it is true however many
// attempts and crashes the cleanup took.
type Record struct {
	// Found is false when the pipeline never recorded anything of the tenant.
	Found bool
	// RequestedBy is who requested the first marking.
	RequestedBy string
	// MarkedAt is the first marking by this pipeline, LastMarkedAt the
	// latest (DRAIN_TIMEOUT counts from it); zero when never marked.
	MarkedAt, LastMarkedAt time.Time
	// DocumentsAtMarking and UsersAtMarking were counted at the first marking.
	DocumentsAtMarking, UsersAtMarking int64
	// SchemaOID is the schema (pg_namespace oid) this record is about: the
	// one that was marked, whose drop began. A schema of the tenant's name
	// with another oid is another copy (restored, recreated), and the record
	// is forgotten when one is seen (see Inspect).
	SchemaOID int64
	// DropStartedAt is when the first drop transaction committed; zero when
	// no drop began. DropFinishedAt is when the schema was dropped.
	DropStartedAt, DropFinishedAt time.Time
	// DropToken names the schema while a drop in several transactions is
	// under way: QuarantinePrefix + DropToken, a random name nobody can
	// take beforehand, which survives a dump and restore (an oid does not).
	// Empty for a drop in one transaction.
	DropToken string
	// RelationsDropped counts the relations the drop transactions removed.
	RelationsDropped int64
	// LastActivityAt is the last activity the final check read under lock.
	LastActivityAt time.Time
	// PublicRowsDeleted counts the public rows deleted, over all attempts.
	PublicRowsDeleted   int64
	PublicRowsDeletedAt time.Time
	// CompletionRequestedBy is the operator who confirmed completing the
	// cleanup of a tenant whose schema is gone (tenantctl cleanup).
	CompletionRequestedBy string
	CompletionRequestedAt time.Time
	// LargeObjectsFound counts the large objects its file store held at the
	// look (file_content.lobj_oid); LargeObjectsUnlinked those unlinked.
	LargeObjectsFound, LargeObjectsUnlinked int64
	// Removed counts what was removed from the tenant's other stores, over
	// every attempt (RecordRemoved).
	Removed Removed
	// ForgottenAt is when the record was last forgotten because a schema of
	// the tenant's name turned out to be another copy than the one it was
	// about (zero: never).
	ForgottenAt time.Time
}

// ConfirmationTTL is how long an operator's confirmation that a tenant's
// interrupted cleanup is to be completed stays valid: it confirms what the
// operator saw then, not whatever happens to the tenant later.
const ConfirmationTTL = 24 * time.Hour

// QuarantinePrefix starts the name a drop in several transactions gives the
// schema in its first one (see Drop); Record.DropToken ends it.
const QuarantinePrefix = "tenant_cleanup_dropping_"

// Marked reports whether this pipeline marked the tenant.
func (r Record) Marked() bool { return !r.MarkedAt.IsZero() }

// DropStarted reports whether this pipeline began dropping the schema.
func (r Record) DropStarted() bool { return !r.DropStartedAt.IsZero() }

// DropFinished reports whether the schema whose drop began is gone.
func (r Record) DropFinished() bool { return !r.DropFinishedAt.IsZero() }

// Quarantine is the name of the schema while its drop is under way ("" for
// none).
func (r Record) Quarantine() string {
	if r.DropToken == "" || r.DropFinished() {
		return ""
	}
	return QuarantinePrefix + r.DropToken
}

// legacyUnderway reports a drop in several transactions begun by a version
// of this tool that dropped the batches under the tenant's own name and kept
// no oid or token: that schema cannot be told from a restored copy.
func (r Record) legacyUnderway() bool {
	return r.DropStarted() && !r.DropFinished() && r.DropToken == "" && r.SchemaOID == 0
}

// Evidence says why a tenant whose schema is gone may be completed as an
// interrupted cleanup: this pipeline began dropping its schema, or an
// operator confirmed it within ConfirmationTTL before now. Empty when there
// is no evidence: the schema may have been renamed, be restored, or live on
// another shard.
func (r Record) Evidence(now time.Time) string {
	switch {
	case r.DropStarted():
		return "this pipeline began dropping its schema at " + r.DropStartedAt.UTC().Format(time.RFC3339)
	case !r.CompletionRequestedAt.IsZero() && now.Sub(r.CompletionRequestedAt) < ConfirmationTTL:
		return "completion confirmed by " + r.CompletionRequestedBy + " at " +
			r.CompletionRequestedAt.UTC().Format(time.RFC3339)
	}
	return ""
}

// AboutAnotherCopy reports whether the record is about another copy of the
// tenant's schema than the one of its name with oid, which exists now: one
// marked under another oid, one whose drop began (from then on no schema
// carries the tenant's name: the drop renamed or dropped it), or a tenant
// whose completion an operator confirmed because its schema was gone.
func (r Record) AboutAnotherCopy(oid int64) bool {
	switch {
	case !r.Found || r.legacyUnderway():
		return false
	case r.SchemaOID != 0 && r.SchemaOID != oid:
		return true
	}
	return r.DropStarted() || !r.CompletionRequestedAt.IsZero()
}

// recordColumns is the shape of tenant_cleanup.progress the code relies on.
var recordColumns = []pgschema.Column{
	{Name: "tenant_id", Types: pgschema.Text},
	{Name: "requested_by", Types: pgschema.Text},
	{Name: "marked_at", Types: pgschema.Timestamptz},
	{Name: "last_marked_at", Types: pgschema.Timestamptz},
	{Name: "documents_at_marking", Types: pgschema.BigInt},
	{Name: "users_at_marking", Types: pgschema.BigInt},
	{Name: "schema_oid", Types: pgschema.BigInt},
	{Name: "drop_token", Types: pgschema.Text},
	{Name: "drop_started_at", Types: pgschema.Timestamptz},
	{Name: "drop_finished_at", Types: pgschema.Timestamptz},
	{Name: "relations_dropped", Types: pgschema.BigInt},
	{Name: "last_activity_at", Types: pgschema.Timestamptz},
	{Name: "public_rows_deleted", Types: pgschema.BigInt},
	{Name: "public_rows_deleted_at", Types: pgschema.Timestamptz},
	{Name: "completion_requested_by", Types: pgschema.Text},
	{Name: "completion_requested_at", Types: pgschema.Timestamptz},
	{Name: "forgotten_at", Types: pgschema.Timestamptz},
	{Name: "large_objects_found", Types: pgschema.BigInt},
	{Name: "large_objects_unlinked", Types: pgschema.BigInt},
	{Name: "s3_objects_removed", Types: pgschema.BigInt},
	{Name: "s3_bytes_removed", Types: pgschema.BigInt},
	{Name: "redis_keys_removed", Types: pgschema.BigInt},
	{Name: "redis_memberships_removed", Types: pgschema.BigInt},
	{Name: "updated_at", Types: pgschema.Timestamptz},
}

// largeObjectColumns is the shape of tenant_cleanup.large_objects.
var largeObjectColumns = []pgschema.Column{
	{Name: "tenant_id", Types: pgschema.Text},
	{Name: "lobj_oid", Types: pgschema.OID},
}

// fileKeyColumns is the shape of tenant_cleanup.file_keys.
var fileKeyColumns = []pgschema.Column{
	{Name: "tenant_id", Types: pgschema.Text},
	{Name: "object_key", Types: pgschema.Text},
}

// lockKeySchema serialises the creation of this pipeline's tables.
const lockKeySchema = 0x7c1e0003

// Ensure creates this pipeline's table on the data plane when it is missing
// and checks its shape; with guard, it also installs the sql_drop event
// trigger (sql/guard_trigger.sql) when the role may create one. It reports
// whether the trigger is in force.
func (s *Store) Ensure(ctx context.Context, guard bool) (guarded bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, 0)", lockKeySchema); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, query("ensure", "")); err != nil {
			return err
		}
		if err := pgschema.CheckOwned(ctx, tx, "tenant_cleanup"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, pgschema.RevokeSQL("tenant_cleanup")); err != nil {
			return err
		}
		if err := pgschema.Verify(ctx, tx, "tenant_cleanup.progress", "tenant_id", recordColumns); err != nil {
			return err
		}
		if err := pgschema.Verify(ctx, tx, "tenant_cleanup.large_objects", "tenant_id, lobj_oid", largeObjectColumns); err != nil {
			return err
		}
		if err := pgschema.Verify(ctx, tx, "tenant_cleanup.file_keys", "tenant_id, object_key", fileKeyColumns); err != nil {
			return err
		}
		if !guard {
			return nil
		}
		var superuser bool
		if err := tx.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&superuser); err != nil {
			return err
		}
		if !superuser {
			return nil
		}
		if _, err := tx.Exec(ctx, query("guard_trigger", "")); err != nil {
			return err
		}
		if err := pgschema.CheckOwned(ctx, tx, "tenant_cleanup"); err != nil { // the function too
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'tenant_cleanup_guard')").Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if _, err := tx.Exec(ctx, "CREATE EVENT TRIGGER tenant_cleanup_guard ON sql_drop EXECUTE FUNCTION tenant_cleanup.guard_drop()"); err != nil {
				return err
			}
		}
		guarded = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("data plane: prepare tenant_cleanup.progress: %w", pgerr.Kind(err))
	}
	s.guarded = guarded
	return guarded, nil
}

// Guarded reports whether the sql_drop event trigger is in force (Ensure).
func (s *Store) Guarded() bool { return s.guarded }

// readRecord reads one tenant's record; a database where the pipeline never
// created its table has no records.
func readRecord(ctx context.Context, q rowsQuerier, id tenant.ID) (Record, error) {
	recs, err := readRecords(ctx, q, " WHERE tenant_id = $1", string(id))
	if err != nil || len(recs) == 0 {
		return Record{}, err
	}
	return recs[0].Record, nil
}

// TenantRecord is a Record with its tenant id, as stored.
type TenantRecord struct {
	ID string
	Record
}

func readRecords(ctx context.Context, q rowsQuerier, clause string, args ...any) ([]TenantRecord, error) {
	rows, err := q.Query(ctx, query("record", "")+clause, args...)
	if err != nil {
		if noTable(err) {
			return nil, nil
		}
		return nil, err
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (TenantRecord, error) {
		var (
			r                                     TenantRecord
			marked, lastMarked, started, finished *time.Time
			activity, publicAt, completionAt      *time.Time
			forgotten                             *time.Time
		)
		err := row.Scan(&r.ID, &r.RequestedBy, &marked, &lastMarked, &r.DocumentsAtMarking, &r.UsersAtMarking,
			&r.SchemaOID, &r.DropToken, &started, &finished, &r.RelationsDropped, &activity, &r.PublicRowsDeleted, &publicAt,
			&r.CompletionRequestedBy, &completionAt, &forgotten, &r.LargeObjectsFound, &r.LargeObjectsUnlinked,
			&r.Removed.S3Objects, &r.Removed.S3Bytes, &r.Removed.RedisKeys, &r.Removed.RedisMemberships)
		r.Found = true
		for dst, src := range map[*time.Time]*time.Time{&r.MarkedAt: marked, &r.LastMarkedAt: lastMarked,
			&r.DropStartedAt: started, &r.DropFinishedAt: finished, &r.LastActivityAt: activity,
			&r.PublicRowsDeletedAt: publicAt, &r.CompletionRequestedAt: completionAt, &r.ForgottenAt: forgotten} {
			if src != nil {
				*dst = *src
			}
		}
		return r, err
	})
	if noTable(err) {
		return nil, nil
	}
	return recs, err
}

// Records reads every tenant's record (empty when the table does not exist).
func (s *Store) Records(ctx context.Context) ([]TenantRecord, error) {
	recs, err := readRecords(ctx, s.pool, " ORDER BY tenant_id")
	if err != nil {
		return nil, fmt.Errorf("data plane: read tenant_cleanup.progress: %w", pgerr.Kind(err))
	}
	return recs, nil
}

// Record reads one tenant's record.
func (s *Store) Record(ctx context.Context, id tenant.ID) (Record, error) {
	r, err := readRecord(ctx, s.pool, id)
	if err != nil {
		return Record{}, fmt.Errorf("data plane: read the record of %s: %w", id, pgerr.Kind(err))
	}
	return r, nil
}

// ConfirmCompletion records that an operator (by) confirmed completing the
// cleanup of a tenant whose schema is gone: the evidence the marker and the
// cleaner require before they complete it.
func (s *Store) ConfirmCompletion(ctx context.Context, id tenant.ID, by string) error {
	if _, err := s.pool.Exec(ctx, query("record_completion", ""), string(id), by); err != nil {
		return fmt.Errorf("data plane: record the confirmation for %s: %w", id, pgerr.Kind(err))
	}
	return nil
}

// noTable reports whether err says a table does not exist.
func noTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42P01"
}

// Record reads the tenant's record, on its locked connection.
func (t *TenantSession) Record(ctx context.Context) (Record, error) {
	r, err := readRecord(ctx, t.conn, t.id)
	if err != nil {
		return Record{}, fmt.Errorf("data plane: read the record of %s: %w", t.id, pgerr.Kind(err))
	}
	return r, nil
}

// Footprint is what the data plane holds of one tenant, for an operator's
// decision.
type Footprint struct {
	SchemaExists bool
	// PublicRows counts its rows in the shared public tables.
	PublicRows int64
	Record     Record
}

// Footprint reads whether the tenant's schema exists, how many public rows
// it has and this pipeline's record of it, without locking anything.
func (s *Store) Footprint(ctx context.Context, id tenant.ID) (Footprint, error) {
	var fp Footprint
	exists, _, _, err := liveSchema(ctx, s.pool, id)
	if err == nil {
		fp.SchemaExists = exists
		err = s.pool.QueryRow(ctx, query("public_row_count", ""), string(id)).Scan(&fp.PublicRows)
	}
	if err == nil {
		fp.Record, err = readRecord(ctx, s.pool, id)
	}
	if err != nil {
		return Footprint{}, fmt.Errorf("data plane: look up %s: %w", id, pgerr.Kind(err))
	}
	return fp, nil
}
