-- This pipeline's tables in the control-plane database, created when
-- missing (columns added by newer versions are added to an existing ledger).
CREATE SCHEMA IF NOT EXISTS tenant_cleanup;

-- The ledger: one row per cleaned tenant, the permanent record of what was
-- deleted (needed later to sweep search-index leftovers). Written in the
-- transaction that deletes the tenant's control-plane rows, from the
-- pipeline's own records of each step (true however many attempts it took).
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
ALTER TABLE tenant_cleanup.ledger
    ADD COLUMN IF NOT EXISTS drop_started_at        timestamptz,
    ADD COLUMN IF NOT EXISTS schema_dropped_at      timestamptz,
    ADD COLUMN IF NOT EXISTS public_rows_deleted_at timestamptz,
    ADD COLUMN IF NOT EXISTS evidence               text,
    ADD COLUMN IF NOT EXISTS stores_removed         jsonb;

-- Cleanup reservations for the hourly and daily caps (CLEANUP_MAX_PER_HOUR,
-- CLEANUP_MAX_PER_DAY): one row per tenant about to be cleaned, kept two days.
CREATE TABLE IF NOT EXISTS tenant_cleanup.quota (
    tenant_id   text PRIMARY KEY,
    reserved_at timestamptz NOT NULL DEFAULT now()
);

-- Operators' holds (tenantctl hold): while one is in force the tenant is
-- neither marked nor cleaned. Placed with the tenant's row share-locked, so
-- a hold and a cleanup of the same tenant never overlap: the cleaner reads
-- the hold under its own lock on that row.
CREATE TABLE IF NOT EXISTS tenant_cleanup.hold (
    tenant_id text PRIMARY KEY,
    reason    text NOT NULL,
    until     timestamptz,
    placed_by text NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT now()
);
