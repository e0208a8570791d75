-- Every control-plane tenant, for the analyzer.
SELECT tenant_id, application_status, created_at FROM public.tenant
