-- Complete the ledger row with what the data-plane steps removed (from the
-- pipeline's records), just before the transaction commits.
UPDATE tenant_cleanup.ledger SET
    cleaned_at = now(), last_activity_at = $2, schema_existed = $3, relations_dropped = $4,
    public_rows_deleted = $5, drop_started_at = $6, schema_dropped_at = $7, public_rows_deleted_at = $8,
    evidence = $9, stores_removed = $10
WHERE tenant_id = $1
