-- Record one drop transaction ($1 tenant, $2 relations it drops, $3 the last
-- activity the final look read (NULL: no look in this transaction), $4
-- whether it drops the schema, $5 the schema's oid), in that transaction,
-- before its DROP. A drop of another schema than the one recorded (one
-- restored after an earlier cleanup) starts afresh.
INSERT INTO tenant_cleanup.progress AS p
    (tenant_id, schema_oid, drop_started_at, drop_finished_at, relations_dropped, last_activity_at)
VALUES ($1, $5, now(), CASE WHEN $4 THEN now() END, $2, $3)
ON CONFLICT (tenant_id) DO UPDATE SET
    schema_oid        = excluded.schema_oid,
    drop_started_at   = coalesce(p.drop_started_at, excluded.drop_started_at),
    drop_finished_at  = CASE WHEN p.schema_oid IS DISTINCT FROM excluded.schema_oid THEN excluded.drop_finished_at
                             ELSE coalesce(p.drop_finished_at, excluded.drop_finished_at) END,
    relations_dropped = p.relations_dropped + excluded.relations_dropped,
    last_activity_at  = coalesce(excluded.last_activity_at, p.last_activity_at),
    updated_at        = now()
