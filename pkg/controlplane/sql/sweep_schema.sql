-- The sweep log (tenantctl sweep --apply): one row per tenant per sweep that
-- removed anything or failed, appended, never updated. It says what was
-- removed of a cleaned tenant from the stores outside PostgreSQL after its
-- cleanup (a store configured later, a tenant cleaned by the original
-- scripts): the ledger row says what its cleanup removed, this what was
-- swept later.
CREATE SCHEMA IF NOT EXISTS tenant_cleanup;
CREATE TABLE IF NOT EXISTS tenant_cleanup.sweep_log (
    sweep_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text NOT NULL,
    swept_at   timestamptz NOT NULL DEFAULT now(),
    swept_by   text NOT NULL,
    source     text NOT NULL,  -- ledger: in tenant_cleanup.ledger; csv: only in an original cleaned_tenants.csv
    removed    jsonb NOT NULL, -- {"s3_objects", "s3_bytes", "redis_keys", "redis_memberships", "large_objects"}
    complete   boolean NOT NULL, -- every configured store holds nothing of it any more
    error      text
);
CREATE INDEX IF NOT EXISTS sweep_log_tenant_id ON tenant_cleanup.sweep_log (tenant_id);
