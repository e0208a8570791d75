-- Drop transactions running in this database, of every replica: the
-- advisory locks (key, slot) they hold, $1 being the key (any role may read
-- pg_locks).
SELECT count(*)::int
FROM pg_catalog.pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2
  AND classid = ($1::int8 & 4294967295)::oid
  AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
