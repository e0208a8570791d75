-- Add what one removal from the tenant's other stores took away to its
-- record ($1 tenant, $2 S3 objects, $3 S3 bytes, $4 Redis keys, $5 Redis
-- memberships), and, once the S3 file store is done with the tenant's
-- prefix $6 (empty: not done), forget the object keys of its file records
-- under that prefix. Keys outside it stay listed: they were left for review
-- (never deleted by name), and every later attempt reports them again.
WITH unlisted AS (
    DELETE FROM tenant_cleanup.file_keys WHERE tenant_id = $1 AND $6 <> '' AND starts_with(object_key, $6)
)
UPDATE tenant_cleanup.progress SET
    s3_objects_removed = s3_objects_removed + $2, s3_bytes_removed = s3_bytes_removed + $3,
    redis_keys_removed = redis_keys_removed + $4, redis_memberships_removed = redis_memberships_removed + $5,
    updated_at = now()
WHERE tenant_id = $1
