-- Tenants with rows in the shared public tables (for interrupted cleanups whose
-- schema is already gone).
SELECT tenant_id FROM public.user_tenant_mapping
UNION SELECT tenant_id FROM public.tenant_shard
UNION SELECT tenant_id FROM public.tenant_anonymous_user_path
UNION SELECT tenant_id FROM public.tenant_invite_counter
UNION SELECT tenant_id FROM public.tenant_sso_domain
