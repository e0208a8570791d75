-- The probe: a catalog lookup by index, as tiny as a query gets, readable by
-- any role and writing nothing. It waits where customers' queries wait when
-- drops run: for a CPU, and for the invalidations of every catalog change
-- (each dropped relation sends some) that a session must read before its
-- next catalog lookup.
SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pg_catalog'
