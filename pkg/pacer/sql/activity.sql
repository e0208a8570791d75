-- Other client sessions running a statement, and the sessions this role may
-- not see the state of (other roles' sessions without pg_read_all_stats,
-- part of pg_monitor): when there are any, the count is unknown.
SELECT count(*) FILTER (WHERE backend_type = 'client backend' AND state = 'active'
                          AND pid <> pg_catalog.pg_backend_pid())::int,
       count(*) FILTER (WHERE backend_type IS NULL)::int
FROM pg_catalog.pg_stat_activity
