-- Physical replicas streaming from this server, how many of them this role
-- may see the details of (pg_read_all_stats, part of pg_monitor; others show
-- only their pid), and the largest replay lag (NULL while a replica has
-- caught up and no WAL is coming). Logical replication consumers are left
-- out: their lag is their own pace of consuming.
SELECT count(*)::int,
       count(r.state)::int,
       coalesce(extract(epoch FROM max(r.replay_lag)), 0)::float8
FROM pg_catalog.pg_stat_replication r
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s
                  WHERE s.active_pid = r.pid AND s.slot_type = 'logical')
