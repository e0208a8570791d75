-- Add what one removal from the tenant's other stores took away to its
-- record ($1 tenant, $2 S3 objects, $3 S3 bytes, $4 Redis keys, $5 Redis
-- memberships), and, once the S3 file store is done with the tenant's
-- prefix $6 (empty: not done), forget the object keys of its file records
-- under that prefix. Keys outside it stay listed: they were left for review
-- (never deleted by name), and every later attempt reports them again. On
-- the catalog of a sharded fleet the tenant may have no record yet (its
-- schema was on another shard): one is created.
WITH unlisted AS (
    DELETE FROM tenant_cleanup.file_keys WHERE tenant_id = $1 AND $6 <> '' AND starts_with(object_key, $6)
)
INSERT INTO tenant_cleanup.progress AS p (tenant_id, s3_objects_removed, s3_bytes_removed, redis_keys_removed,
                                          redis_memberships_removed)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant_id) DO UPDATE SET
    s3_objects_removed = p.s3_objects_removed + excluded.s3_objects_removed,
    s3_bytes_removed = p.s3_bytes_removed + excluded.s3_bytes_removed,
    redis_keys_removed = p.redis_keys_removed + excluded.redis_keys_removed,
    redis_memberships_removed = p.redis_memberships_removed + excluded.redis_memberships_removed,
    updated_at = now()
