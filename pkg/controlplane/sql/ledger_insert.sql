-- The ledger row, inserted in the transaction that deletes the tenant's
-- control-plane rows, before anything irreversible happens on the data plane
-- (it proves the insert works), and completed by ledger_finish.sql once the
-- data-plane steps are done, in the same transaction.
INSERT INTO tenant_cleanup.ledger (
    tenant_id, cleaned_at, requested_by, marked_at, documents_at_marking, users_at_marking,
    last_activity_at, tenant_created_at, application_status, stripe_customer_id,
    schema_existed, relations_dropped, public_rows_deleted, control_rows_deleted, cleaned_by,
    drop_started_at, schema_dropped_at, public_rows_deleted_at, evidence)
VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
