-- Record, in the drop's look transaction, the large objects the tenant's
-- file store holds ($1 tenant): file_content.lobj_oid points into the
-- database-wide pg_largeobject, which DROP SCHEMA leaves behind. They are
-- unlinked after the drop (unlink_large_objects.sql), from this list, so that
-- a crash in between loses none. file_content is locked SHARE first by the
-- caller: no file is added until the look commits.
WITH found AS (
    INSERT INTO tenant_cleanup.large_objects (tenant_id, lobj_oid)
    SELECT DISTINCT $1, f.lobj_oid::oid FROM {{schema}}.file_content f WHERE f.lobj_oid > 0
    ON CONFLICT DO NOTHING
    RETURNING 1
)
UPDATE tenant_cleanup.progress SET large_objects_found = large_objects_found + (SELECT count(*) FROM found),
    updated_at = now()
WHERE tenant_id = $1
