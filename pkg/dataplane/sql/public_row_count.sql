-- How many rows tenant $1 has in the shared public tables.
SELECT (SELECT count(*) FROM public.user_tenant_mapping WHERE tenant_id = $1)
     + (SELECT count(*) FROM public.user_tenant_mapping_oauth_account WHERE tenant_id = $1)
     + (SELECT count(*) FROM public.tenant_shard WHERE tenant_id = $1)
     + (SELECT count(*) FROM public.tenant_anonymous_user_path WHERE tenant_id = $1)
     + (SELECT count(*) FROM public.tenant_invite_counter WHERE tenant_id = $1)
     + (SELECT count(*) FROM public.tenant_sso_domain WHERE tenant_id = $1)
