-- Record a marking ($1 tenant, $2 requested by, $3 documents, $4 users, $5
-- the oid of the schema marked), in the marking transaction. The first
-- marking's facts are kept (the ledger reports them); last_marked_at always
-- moves on (the drain timeout counts from the latest marking).
INSERT INTO tenant_cleanup.progress AS p
    (tenant_id, requested_by, marked_at, last_marked_at, documents_at_marking, users_at_marking, schema_oid)
VALUES ($1, $2, now(), now(), $3, $4, $5)
ON CONFLICT (tenant_id) DO UPDATE SET
    requested_by         = coalesce(p.requested_by, excluded.requested_by),
    marked_at            = coalesce(p.marked_at, excluded.marked_at),
    last_marked_at       = excluded.last_marked_at,
    documents_at_marking = coalesce(p.documents_at_marking, excluded.documents_at_marking),
    users_at_marking     = coalesce(p.users_at_marking, excluded.users_at_marking),
    schema_oid           = excluded.schema_oid,
    updated_at           = now()
