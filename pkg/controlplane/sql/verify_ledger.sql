-- Every tenant in the ledger and when it was cleaned, for tenantctl verify.
SELECT tenant_id, cleaned_at FROM tenant_cleanup.ledger
