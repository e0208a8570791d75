-- This pipeline's own record of each tenant it works on, on every data-plane
-- database it changes: written in the same transaction as each step it
-- records (marking, each drop transaction, the deletion of the public rows),
-- so that it is true whatever crashed in between. It is the evidence that a
-- cleanup began (a schema gone without it is never completed by itself), the
-- source of the facts a drain check and the ledger report, and survives the
-- loss of the JetStream store. Created when missing.
CREATE SCHEMA IF NOT EXISTS tenant_cleanup;
CREATE TABLE IF NOT EXISTS tenant_cleanup.progress (
    tenant_id               text PRIMARY KEY,
    requested_by            text,
    marked_at               timestamptz,  -- first marked by this pipeline
    last_marked_at          timestamptz,  -- marked (again) last: DRAIN_TIMEOUT counts from here
    documents_at_marking    bigint,
    users_at_marking        bigint,
    schema_oid              bigint,       -- the schema (pg_namespace oid) marked, whose drop began
    drop_token              text,         -- a drop in several transactions: the schema is tenant_cleanup_dropping_<token>
    drop_started_at         timestamptz,  -- the first drop transaction committed
    drop_finished_at        timestamptz,  -- the schema is gone
    relations_dropped       bigint NOT NULL DEFAULT 0,
    last_activity_at        timestamptz,  -- as the final check read it, under lock
    public_rows_deleted     bigint NOT NULL DEFAULT 0,
    public_rows_deleted_at  timestamptz,
    completion_requested_by text,         -- an operator confirmed completing an interrupted cleanup
    completion_requested_at timestamptz,
    forgotten_at            timestamptz,  -- forgotten: a schema of the tenant's name was another copy (Inspect)
    large_objects_found     bigint NOT NULL DEFAULT 0, -- file_content.lobj_oid at the look
    large_objects_unlinked  bigint NOT NULL DEFAULT 0,
    s3_objects_removed      bigint NOT NULL DEFAULT 0, -- the tenant's other stores, over all attempts
    s3_bytes_removed        bigint NOT NULL DEFAULT 0,
    redis_keys_removed      bigint NOT NULL DEFAULT 0,
    redis_memberships_removed bigint NOT NULL DEFAULT 0,
    updated_at              timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tenant_cleanup.progress ADD COLUMN IF NOT EXISTS schema_oid bigint;
ALTER TABLE tenant_cleanup.progress ADD COLUMN IF NOT EXISTS drop_token text;
ALTER TABLE tenant_cleanup.progress ADD COLUMN IF NOT EXISTS forgotten_at timestamptz;
ALTER TABLE tenant_cleanup.progress ADD COLUMN IF NOT EXISTS large_objects_found bigint NOT NULL DEFAULT 0;
ALTER TABLE tenant_cleanup.progress ADD COLUMN IF NOT EXISTS large_objects_unlinked bigint NOT NULL DEFAULT 0;
ALTER TABLE tenant_cleanup.progress ADD COLUMN IF NOT EXISTS s3_objects_removed bigint NOT NULL DEFAULT 0;
ALTER TABLE tenant_cleanup.progress ADD COLUMN IF NOT EXISTS s3_bytes_removed bigint NOT NULL DEFAULT 0;
ALTER TABLE tenant_cleanup.progress ADD COLUMN IF NOT EXISTS redis_keys_removed bigint NOT NULL DEFAULT 0;
ALTER TABLE tenant_cleanup.progress ADD COLUMN IF NOT EXISTS redis_memberships_removed bigint NOT NULL DEFAULT 0;
-- The object keys the file records of tenants whose drop began named (the S3
-- file store's cross-check).
CREATE TABLE IF NOT EXISTS tenant_cleanup.file_keys (
    tenant_id  text NOT NULL,
    object_key text NOT NULL,
    PRIMARY KEY (tenant_id, object_key)
);
-- Large objects of tenants whose drop began, still to unlink (DROP SCHEMA
-- leaves them in pg_largeobject).
CREATE TABLE IF NOT EXISTS tenant_cleanup.large_objects (
    tenant_id text NOT NULL,
    lobj_oid  oid  NOT NULL,
    PRIMARY KEY (tenant_id, lobj_oid)
);
