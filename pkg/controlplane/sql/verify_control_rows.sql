-- The rows of every tenant in each control-plane table the cleanup deletes,
-- for tenantctl verify: one grouped scan of the tables, in one statement.
-- status is set only for public.tenant. The tenant ids are returned as
-- stored (the caller validates them).
SELECT t, tenant_id, count(*), max(status)
FROM (
    SELECT 'tenant' AS t, tenant_id::text, application_status::text AS status FROM public.tenant
    UNION ALL SELECT 'subscription', tenant_id::text, NULL FROM public.subscription
    UNION ALL SELECT 'tenant_config', tenant_id::text, NULL FROM public.tenant_config
    UNION ALL SELECT 'tenant_notification', tenant_id::text, NULL FROM public.tenant_notification
) AS r
GROUP BY t, tenant_id
