-- The WAL insert position in bytes (any role; fails on a standby).
SELECT (pg_catalog.pg_current_wal_lsn() - '0/0'::pg_lsn)::float8
