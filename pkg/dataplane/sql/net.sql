-- What this transaction holds ACCESS EXCLUSIVE: after a DROP, every object it
-- removed (PostgreSQL locks each one it deletes, and each table it changes),
-- besides what the transaction locked itself. Compared with what the check
-- walked before the DROP, it shows whether the DROP reached anything the
-- check did not see. An object still present is described.
SELECT coalesce(l.classid, 'pg_class'::regclass)::int8, coalesce(l.objid, l.relation)::int8,
       (SELECT o.type || ' ' || o.identity
        FROM pg_identify_object(coalesce(l.classid, 'pg_class'::regclass), coalesce(l.objid, l.relation), 0) o
        WHERE o.identity IS NOT NULL)
FROM pg_locks l
WHERE l.pid = pg_backend_pid() AND l.granted AND l.mode = 'AccessExclusiveLock'
  AND l.locktype IN ('relation', 'object')
