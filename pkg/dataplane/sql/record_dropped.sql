-- Record one drop transaction ($1 tenant, $2 relations it drops, $3 the last
-- activity the final check read (NULL: not read again in this transaction),
-- $4 whether it drops the schema), in that transaction, before its DROP.
INSERT INTO tenant_cleanup.progress AS p
    (tenant_id, drop_started_at, drop_finished_at, relations_dropped, last_activity_at)
VALUES ($1, now(), CASE WHEN $4 THEN now() END, $2, $3)
ON CONFLICT (tenant_id) DO UPDATE SET
    drop_started_at   = coalesce(p.drop_started_at, excluded.drop_started_at),
    drop_finished_at  = coalesce(p.drop_finished_at, excluded.drop_finished_at),
    relations_dropped = p.relations_dropped + excluded.relations_dropped,
    last_activity_at  = coalesce(excluded.last_activity_at, p.last_activity_at),
    updated_at        = now()
