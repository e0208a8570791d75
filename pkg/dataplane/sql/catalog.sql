-- What the catalog says about one tenant schema ($1): whether it exists
-- (and its oid), which of the tables the cleanup reads are present, and its
-- public.tenant_shard row ({{placement}}: NULL on a shard that is not the
-- catalog, which holds no public tables of tenants).
SELECT
    n.oid IS NOT NULL                                                   AS schema_exists,
    coalesce(n.oid::int8, 0)                                            AS schema_oid,
    coalesce(array_agg(c.relname::text) FILTER (WHERE c.relname IS NOT NULL), '{}') AS tables,
    {{placement}}                                                       AS shard_name
FROM (SELECT 1) one
LEFT JOIN pg_namespace n ON n.nspname = $1
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
    AND c.relname IN ('chat_message', 'build_session', 'document', 'user',
                      'connector_credential_pair', 'index_attempt')
GROUP BY n.oid
