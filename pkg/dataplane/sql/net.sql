-- What this transaction holds ACCESS EXCLUSIVE: after a DROP, every object it
-- removed (PostgreSQL locks each one it deletes, and each table it changes),
-- besides what the transaction locked itself. Compared with what the check
-- walked before the DROP ($1, $2: the catalogs and oids of the closure), it
-- shows whether the DROP reached anything the check did not see: only those
-- objects are returned, one still present described.
SELECT x.classid, x.objid,
       (SELECT o.type || ' ' || o.identity
        FROM pg_identify_object(x.classid::oid, x.objid::oid, 0) o
        WHERE o.identity IS NOT NULL)
FROM (SELECT coalesce(l.classid, 'pg_class'::regclass)::int8, coalesce(l.objid, l.relation)::int8
      FROM pg_locks l
      WHERE l.pid = pg_backend_pid() AND l.granted AND l.mode = 'AccessExclusiveLock'
        AND l.locktype IN ('relation', 'object')
      EXCEPT
      SELECT * FROM unnest($1::int8[], $2::int8[])) x(classid, objid)
