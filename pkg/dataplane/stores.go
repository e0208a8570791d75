package dataplane

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// A tenant's files, with Onyx's PostgreSQL file-store backend, are large
// objects: file_content.lobj_oid points into the database-wide
// pg_largeobject, which DROP SCHEMA leaves behind. The drop's look
// transaction lists them (tenant_cleanup.large_objects); UnlinkLargeObjects
// unlinks them after the drop, from that list, a batch per transaction.

// recordLargeObjects lists, in the look transaction, the large objects the
// tenant's file_content points at, with that table locked against new files
// until the look commits.
func recordLargeObjects(ctx context.Context, tx pgx.Tx, id tenant.ID) error {
	lock := "LOCK TABLE " + pgx.Identifier{string(id), "file_content"}.Sanitize() + " IN SHARE MODE"
	if _, err := tx.Exec(ctx, lock); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, query("record_large_objects", id), oneShot, string(id))
	return err
}

// KeepShared takes off the tenant's list, without unlinking them, the large
// objects that a file_content table of another schema still names (a
// tenant cloned or restored under another id shares them: large objects
// belong to the database, not to a schema). It returns how many it kept,
// left for review. Called after the drop, so the tenant's own table is gone.
func (t *TenantSession) KeepShared(ctx context.Context) (int64, error) {
	named, err := listedStillNamed(ctx, t.conn, t.id) // on the session: a worker holds one connection
	if err != nil || len(named) == 0 {
		return 0, err
	}
	tag, err := t.conn.Exec(ctx, "DELETE FROM tenant_cleanup.large_objects WHERE tenant_id = $1 AND lobj_oid = ANY ($2::bigint[]::oid[])",
		string(t.id), named)
	if err != nil {
		return 0, fmt.Errorf("keep the shared large objects of %s: %w", t.id, pgerr.Kind(err))
	}
	return tag.RowsAffected(), nil
}

// UnlinkLargeObjects unlinks the large objects listed for the tenant by its
// drop, at most the lock budget of them per transaction (unlinking one locks
// it), each transaction holding a drop slot, and counts them in the tenant's
// record. Running it again after a crash finishes the list; with nothing
// listed it does nothing. It returns how many it took off the list.
func (t *TenantSession) UnlinkLargeObjects(ctx context.Context) (int64, error) {
	// Most tenants have none (Onyx's default file store is S3): no drop
	// slot, no transaction and no COMMIT for them.
	var listed bool
	if err := t.conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM tenant_cleanup.large_objects WHERE tenant_id = $1)",
		string(t.id)).Scan(&listed); err != nil {
		return 0, fmt.Errorf("unlink the large objects of %s: %w", t.id, pgerr.Kind(err))
	}
	if !listed {
		return 0, nil
	}
	var total int64
	for {
		var n int64
		err := t.inDropTx(ctx, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, query("unlink_large_objects", ""), string(t.id), t.store.opts.LockBudget).Scan(&n)
		})
		if err != nil {
			return total, fmt.Errorf("unlink the large objects of %s: %w", t.id, pgerr.Kind(err))
		}
		if n == 0 {
			return total, nil
		}
		total += n
	}
}

// Removed counts what was removed from a tenant's stores outside PostgreSQL.
type Removed struct {
	S3Objects, S3Bytes          int64
	RedisKeys, RedisMemberships int64
}

// recordFileKeys lists, in the look transaction, the object keys the
// tenant's file records name, with file_record locked against new files
// until the look commits.
func recordFileKeys(ctx context.Context, tx pgx.Tx, id tenant.ID) error {
	lock := "LOCK TABLE " + pgx.Identifier{string(id), "file_record"}.Sanitize() + " IN SHARE MODE"
	if _, err := tx.Exec(ctx, lock); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, query("record_file_keys", id), oneShot, string(id))
	return err
}

// FileKeys returns the object keys the tenant's file records named when its
// drop began (none once the S3 file store is done, RecordRemoved).
func (t *TenantSession) FileKeys(ctx context.Context) ([]string, error) {
	rows, err := t.conn.Query(ctx, "SELECT object_key FROM tenant_cleanup.file_keys WHERE tenant_id = $1 ORDER BY 1", string(t.id))
	if err == nil {
		var keys []string
		if keys, err = pgx.CollectRows(rows, pgx.RowTo[string]); err == nil {
			return keys, nil
		}
	}
	return nil, fmt.Errorf("data plane: read the file keys of %s: %w", t.id, pgerr.Kind(err))
}

// RecordRemoved adds r to the tenant's record. s3DonePrefix, once the S3
// file store holds nothing under the tenant's prefix, is that prefix: the
// file keys recorded for the cross-check under it are forgotten, those
// outside it stay listed (left for review; FileKeys returns them).
func (t *TenantSession) RecordRemoved(ctx context.Context, r Removed, s3DonePrefix string) error {
	_, err := t.conn.Exec(ctx, query("record_removed", ""), string(t.id), r.S3Objects, r.S3Bytes, r.RedisKeys,
		r.RedisMemberships, s3DonePrefix)
	if err != nil {
		return fmt.Errorf("data plane: record what was removed of %s: %w", t.id, pgerr.Kind(err))
	}
	return nil
}
