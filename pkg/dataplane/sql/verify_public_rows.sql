-- The rows of every tenant in each shared public table, for tenantctl verify:
-- one grouped scan of the tables, in one statement. shard_name is set only
-- for public.tenant_shard. The tenant ids are returned as stored (the caller
-- validates them).
SELECT t, tenant_id, count(*), max(shard_name)
FROM (
    SELECT 'user_tenant_mapping' AS t, tenant_id::text, NULL::text AS shard_name FROM public.user_tenant_mapping
    UNION ALL SELECT 'user_tenant_mapping_oauth_account', tenant_id::text, NULL FROM public.user_tenant_mapping_oauth_account
    UNION ALL SELECT 'tenant_shard', tenant_id::text, shard_name::text FROM public.tenant_shard
    UNION ALL SELECT 'tenant_anonymous_user_path', tenant_id::text, NULL FROM public.tenant_anonymous_user_path
    UNION ALL SELECT 'tenant_invite_counter', tenant_id::text, NULL FROM public.tenant_invite_counter
    UNION ALL SELECT 'tenant_sso_domain', tenant_id::text, NULL FROM public.tenant_sso_domain
) AS r
GROUP BY t, tenant_id
