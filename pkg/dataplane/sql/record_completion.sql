-- Record an operator's confirmation that the tenant's cleanup, whose schema is
-- gone, is to be completed ($1 tenant, $2 who confirmed).
INSERT INTO tenant_cleanup.progress AS p (tenant_id, completion_requested_by, completion_requested_at)
VALUES ($1, $2, now())
ON CONFLICT (tenant_id) DO UPDATE SET
    completion_requested_by = excluded.completion_requested_by,
    completion_requested_at = excluded.completion_requested_at,
    updated_at              = now()
