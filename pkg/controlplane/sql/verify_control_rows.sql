-- The rows of every tenant in each control-plane table the cleanup deletes,
-- for tenantctl verify: one grouped scan per table, in one statement. status
-- is set only for public.tenant. The tenant ids are returned as stored (the
-- caller validates them).
SELECT 'tenant', tenant_id::text, count(*), max(application_status)::text
FROM public.tenant GROUP BY tenant_id
UNION ALL
SELECT 'subscription', tenant_id::text, count(*), NULL::text
FROM public.subscription GROUP BY tenant_id
UNION ALL
SELECT 'tenant_config', tenant_id::text, count(*), NULL::text
FROM public.tenant_config GROUP BY tenant_id
UNION ALL
SELECT 'tenant_notification', tenant_id::text, count(*), NULL::text
FROM public.tenant_notification GROUP BY tenant_id
