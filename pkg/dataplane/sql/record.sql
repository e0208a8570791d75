-- This pipeline's record of tenants (see ensure.sql); the caller appends a
-- WHERE clause.
SELECT tenant_id, coalesce(requested_by, ''), marked_at, last_marked_at,
       coalesce(documents_at_marking, 0), coalesce(users_at_marking, 0),
       coalesce(schema_oid, 0), coalesce(drop_token, ''), drop_started_at, drop_finished_at, relations_dropped, last_activity_at,
       public_rows_deleted, public_rows_deleted_at,
       coalesce(completion_requested_by, ''), completion_requested_at, forgotten_at,
       large_objects_found, large_objects_unlinked,
       s3_objects_removed, s3_bytes_removed, redis_keys_removed, redis_memberships_removed
FROM tenant_cleanup.progress
