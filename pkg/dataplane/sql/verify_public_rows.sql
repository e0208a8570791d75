-- The rows of every tenant in each shared public table, for tenantctl verify:
-- one grouped scan per table, in one statement. shard_name is set only for
-- public.tenant_shard. The tenant ids are returned as stored (the caller
-- validates them).
SELECT 'user_tenant_mapping', tenant_id::text, count(*), NULL::text
FROM public.user_tenant_mapping GROUP BY tenant_id
UNION ALL
SELECT 'user_tenant_mapping_oauth_account', tenant_id::text, count(*), NULL::text
FROM public.user_tenant_mapping_oauth_account GROUP BY tenant_id
UNION ALL
SELECT 'tenant_shard', tenant_id::text, count(*), max(shard_name)::text
FROM public.tenant_shard GROUP BY tenant_id
UNION ALL
SELECT 'tenant_anonymous_user_path', tenant_id::text, count(*), NULL::text
FROM public.tenant_anonymous_user_path GROUP BY tenant_id
UNION ALL
SELECT 'tenant_invite_counter', tenant_id::text, count(*), NULL::text
FROM public.tenant_invite_counter GROUP BY tenant_id
UNION ALL
SELECT 'tenant_sso_domain', tenant_id::text, count(*), NULL::text
FROM public.tenant_sso_domain GROUP BY tenant_id
