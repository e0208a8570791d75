-- The tenant's rows in the shared public tables, deleted in one transaction.
-- OAuth accounts first (they would cascade from user_tenant_mapping anyway).
WITH oauth AS (
    DELETE FROM public.user_tenant_mapping_oauth_account WHERE tenant_id = $1 RETURNING 1
), mapping AS (
    DELETE FROM public.user_tenant_mapping WHERE tenant_id = $1 RETURNING 1
), shard AS (
    DELETE FROM public.tenant_shard WHERE tenant_id = $1 RETURNING 1
), anon AS (
    DELETE FROM public.tenant_anonymous_user_path WHERE tenant_id = $1 RETURNING 1
), invites AS (
    DELETE FROM public.tenant_invite_counter WHERE tenant_id = $1 RETURNING 1
), sso AS (
    DELETE FROM public.tenant_sso_domain WHERE tenant_id = $1 RETURNING 1
)
SELECT (SELECT count(*) FROM oauth), (SELECT count(*) FROM mapping), (SELECT count(*) FROM shard),
       (SELECT count(*) FROM anon), (SELECT count(*) FROM invites), (SELECT count(*) FROM sso)
