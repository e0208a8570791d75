-- Every schema named like a tenant (the caller validates the names), and
-- whether this pipeline began dropping it (see dropStartedComment), for
-- tenantctl verify.
SELECT n.nspname::text,
       coalesce(obj_description(n.oid, 'pg_namespace') LIKE 'tenant-cleanup: drop started%', false)
FROM pg_namespace n
WHERE n.nspname LIKE 'tenant\_%'
ORDER BY n.nspname
