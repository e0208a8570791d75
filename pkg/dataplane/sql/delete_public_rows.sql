-- The tenant's rows in the shared public tables, deleted in one statement,
-- which also adds their number to the tenant's record (see ensure.sql), so
-- that the record says what was deleted however many attempts it took.
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
), recorded AS (
    INSERT INTO tenant_cleanup.progress AS p (tenant_id, public_rows_deleted, public_rows_deleted_at)
    SELECT $1, (SELECT count(*) FROM oauth) + (SELECT count(*) FROM mapping) + (SELECT count(*) FROM shard)
             + (SELECT count(*) FROM anon) + (SELECT count(*) FROM invites) + (SELECT count(*) FROM sso), now()
    ON CONFLICT (tenant_id) DO UPDATE SET
        public_rows_deleted    = p.public_rows_deleted + excluded.public_rows_deleted,
        public_rows_deleted_at = excluded.public_rows_deleted_at,
        updated_at             = now()
)
SELECT (SELECT count(*) FROM oauth), (SELECT count(*) FROM mapping), (SELECT count(*) FROM shard),
       (SELECT count(*) FROM anon), (SELECT count(*) FROM invites), (SELECT count(*) FROM sso)
