-- The ledger row, written in the transaction that deletes the tenant row. An
-- existing row (an earlier cleanup of the same id) is kept as it was.
INSERT INTO tenant_cleanup.ledger (
    tenant_id, cleaned_at, requested_by, marked_at, documents_at_marking, users_at_marking,
    last_activity_at, tenant_created_at, application_status, stripe_customer_id,
    schema_existed, relations_dropped, public_rows_deleted, control_rows_deleted, cleaned_by)
VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (tenant_id) DO NOTHING
