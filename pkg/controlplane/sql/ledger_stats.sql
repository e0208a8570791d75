-- How many tenants the ledger holds and the latest cleanup, for tenantctl status.
SELECT count(*), max(cleaned_at) FROM tenant_cleanup.ledger
