-- Holds (tenantctl hold); the caller appends a WHERE clause.
SELECT tenant_id, reason, until, placed_by, placed_at FROM tenant_cleanup.hold
