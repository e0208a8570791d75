-- One control-plane tenant.
SELECT application_status, created_at, stripe_customer_id FROM public.tenant WHERE tenant_id = $1
