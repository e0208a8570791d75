-- Every schema named like a tenant (the caller validates the names), for
-- tenantctl verify; tenant_cleanup is this pipeline's own (ensure.sql).
SELECT n.nspname::text
FROM pg_namespace n
WHERE n.nspname LIKE 'tenant\_%' AND n.nspname <> 'tenant_cleanup' AND n.nspname NOT LIKE 'tenant\_cleanup\_dropping\_%'
ORDER BY n.nspname
