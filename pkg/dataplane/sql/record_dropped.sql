-- Record one drop transaction ($1 tenant, $2 relations it drops, $3 the last
-- activity the final look read (NULL: no look in this transaction), $4
-- whether it drops the schema, $5 the schema's oid now, $6 the token of its
-- quarantine name (NULL: unchanged)), in that transaction, before its DROP.
INSERT INTO tenant_cleanup.progress AS p
    (tenant_id, schema_oid, drop_token, drop_started_at, drop_finished_at, relations_dropped, last_activity_at)
VALUES ($1, $5, $6, now(), CASE WHEN $4 THEN now() END, $2, $3)
ON CONFLICT (tenant_id) DO UPDATE SET
    schema_oid        = excluded.schema_oid,
    drop_token        = coalesce(excluded.drop_token, p.drop_token),
    drop_started_at   = coalesce(p.drop_started_at, excluded.drop_started_at),
    drop_finished_at  = coalesce(p.drop_finished_at, excluded.drop_finished_at),
    relations_dropped = p.relations_dropped + excluded.relations_dropped,
    last_activity_at  = coalesce(excluded.last_activity_at, p.last_activity_at),
    updated_at        = now()
