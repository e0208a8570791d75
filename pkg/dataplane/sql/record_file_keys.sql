-- Record, in the drop's look transaction, the object keys the tenant's
-- file_record rows name ($1 tenant): the S3 file store's objects are removed
-- after the drop, by the tenant's prefix, and these keys cross-check it (one
-- outside the prefix is reported). file_record is locked SHARE first by the
-- caller.
INSERT INTO tenant_cleanup.file_keys (tenant_id, object_key)
SELECT DISTINCT $1, r.object_key FROM {{schema}}.file_record r WHERE r.object_key IS NOT NULL AND r.object_key <> ''
ON CONFLICT DO NOTHING
