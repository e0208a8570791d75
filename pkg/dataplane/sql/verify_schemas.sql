-- Every schema named like a tenant (the caller validates the names), for
-- tenantctl verify, and the quarantine names of drops under way
-- (tenant_cleanup_dropping_…); tenant_cleanup is this pipeline's own
-- (ensure.sql).
SELECT n.nspname::text, n.oid::int8
FROM pg_namespace n
WHERE n.nspname LIKE 'tenant\_%' AND n.nspname <> 'tenant_cleanup'
ORDER BY n.nspname
