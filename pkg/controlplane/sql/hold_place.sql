-- Place (or replace) a hold ($1 tenant, $2 reason, $3 until, $4 by).
INSERT INTO tenant_cleanup.hold (tenant_id, reason, until, placed_by, placed_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (tenant_id) DO UPDATE SET
    reason = excluded.reason, until = excluded.until, placed_by = excluded.placed_by, placed_at = excluded.placed_at
