-- Unlink up to $2 of the large objects recorded for tenant $1
-- (record_large_objects.sql) in one transaction, take them off the list and
-- count them in the tenant's record. One already gone is only taken off.
-- Returns how many were taken off (0: none left). The unlinking is forced by
-- the final SELECT, not only by the count in the record: a tenant without a
-- record row (a list written by hand, a record forgotten) must not have its
-- objects taken off the list without being unlinked.
WITH batch AS (
    DELETE FROM tenant_cleanup.large_objects
    WHERE tenant_id = $1 AND lobj_oid IN (
        SELECT lobj_oid FROM tenant_cleanup.large_objects WHERE tenant_id = $1 ORDER BY lobj_oid LIMIT $2)
    RETURNING lobj_oid
), unlinked AS (
    SELECT lo_unlink(b.lobj_oid) FROM batch b
    WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata m WHERE m.oid = b.lobj_oid)
), counted AS (
    UPDATE tenant_cleanup.progress SET large_objects_unlinked = large_objects_unlinked + (SELECT count(*) FROM unlinked),
        updated_at = now()
    WHERE tenant_id = $1
)
SELECT (SELECT count(*) FROM batch) FROM (SELECT count(*) FROM unlinked) AS forced
