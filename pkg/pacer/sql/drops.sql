-- Drop transactions running in this database, of every replica, and of
-- those the ones whose session has the application_name $2 (this replica's
-- own; '' for none): the advisory locks (key, slot) they hold, $1 being the
-- key. Any role may read pg_locks, and the application_name of every
-- session in pg_stat_activity.
SELECT count(*)::int, count(*) FILTER (WHERE a.application_name = $2 AND $2 <> '')::int
FROM pg_catalog.pg_locks l
LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid = ($1::int8 & 4294967295)::oid
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
