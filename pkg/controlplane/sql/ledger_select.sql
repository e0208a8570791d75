SELECT tenant_id, cleaned_at, coalesce(requested_by, ''), marked_at, coalesce(documents_at_marking, 0),
       coalesce(users_at_marking, 0), last_activity_at, tenant_created_at, coalesce(application_status, ''),
       coalesce(stripe_customer_id, ''), coalesce(schema_existed, false), coalesce(relations_dropped, 0),
       coalesce(public_rows_deleted, 0), coalesce(control_rows_deleted::text, '{}'), coalesce(cleaned_by, ''),
       drop_started_at, schema_dropped_at, public_rows_deleted_at, coalesce(evidence, ''),
       coalesce(stores_removed::text, '{}')
FROM tenant_cleanup.ledger
