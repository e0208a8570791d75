-- Forget what the record says about another copy of the tenant's schema
-- ($1 tenant): a schema of its name exists that the record is not about (see
-- Record.aboutAnotherCopy), so the marking, the drop's evidence and an
-- operator's confirmation recorded for the earlier copy no longer count. The
-- counts of what was removed go too: they were about the earlier copy, and
-- the ledger will report the new one's; and so do the earlier copy's large
-- objects still to unlink (a restore may have brought them back for the new
-- copy).
WITH unlisted AS (
    DELETE FROM tenant_cleanup.large_objects WHERE tenant_id = $1
), unkeyed AS (
    DELETE FROM tenant_cleanup.file_keys WHERE tenant_id = $1
)
UPDATE tenant_cleanup.progress SET
    requested_by = NULL, marked_at = NULL, last_marked_at = NULL,
    documents_at_marking = NULL, users_at_marking = NULL,
    schema_oid = NULL, drop_token = NULL, drop_started_at = NULL, drop_finished_at = NULL,
    relations_dropped = 0, last_activity_at = NULL,
    public_rows_deleted = 0, public_rows_deleted_at = NULL,
    completion_requested_by = NULL, completion_requested_at = NULL,
    large_objects_found = 0, large_objects_unlinked = 0,
    s3_objects_removed = 0, s3_bytes_removed = 0, redis_keys_removed = 0, redis_memberships_removed = 0,
    forgotten_at = now(), updated_at = now()
WHERE tenant_id = $1
