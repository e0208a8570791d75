-- The ledger: one row per cleaned tenant, the permanent record of what was
-- deleted (needed later to sweep search-index leftovers). Created when missing.
CREATE SCHEMA IF NOT EXISTS tenant_cleanup;
CREATE TABLE IF NOT EXISTS tenant_cleanup.ledger (
    tenant_id            text PRIMARY KEY,
    cleaned_at           timestamptz NOT NULL DEFAULT now(),
    requested_by         text,
    marked_at            timestamptz,
    documents_at_marking bigint,
    users_at_marking     bigint,
    last_activity_at     timestamptz,
    tenant_created_at    timestamptz,
    application_status   text,
    stripe_customer_id   text,
    schema_existed       boolean,
    relations_dropped    integer,
    public_rows_deleted  bigint,
    control_rows_deleted jsonb,
    cleaned_by           text
);
-- Cleanup reservations for the hourly and daily caps (CLEANUP_MAX_PER_HOUR,
-- CLEANUP_MAX_PER_DAY): one row per tenant about to be cleaned, kept two days.
CREATE TABLE IF NOT EXISTS tenant_cleanup.quota (
    tenant_id   text PRIMARY KEY,
    reserved_at timestamptz NOT NULL DEFAULT now()
);
