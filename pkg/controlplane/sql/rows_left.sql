-- How many rows of tenant $1 are left in the tables a cleanup deletes from
-- (after its deletes, in the same transaction).
SELECT (SELECT count(*) FROM public.tenant WHERE tenant_id = $1)
     + (SELECT count(*) FROM public.subscription WHERE tenant_id = $1)
     + (SELECT count(*) FROM public.tenant_config WHERE tenant_id = $1)
     + (SELECT count(*) FROM public.tenant_notification WHERE tenant_id = $1)
