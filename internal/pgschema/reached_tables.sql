-- The tables the pipeline's DML changes ($1: tables it deletes from, $2:
-- tables it updates; quoted, schema-qualified names, a missing one skipped),
-- and every table that DML changes in turn: the children and partitions of
-- each (its statements do not say ONLY), and the referencing table of every
-- foreign key with a cascading action (ON DELETE CASCADE deletes there;
-- SET NULL, SET DEFAULT and the ON UPDATE actions update), recursively. The
-- triggers of all of them run in the pipeline's transaction, statement-level
-- ones even when a cascade changes no row; the ON UPDATE actions are followed
-- whether or not the update changes a key.
--
-- Per table: its oid, schema and name, whether rows are deleted from it,
-- whether rows are updated, and whether the pipeline's role may lock it in
-- ROW EXCLUSIVE mode (LOCK TABLE needs a write privilege for that).
WITH RECURSIVE reached(relid, event) AS (
    SELECT c.oid, e.event
    FROM (SELECT unnest($1::text[]), 'delete'::text
          UNION ALL
          SELECT unnest($2::text[]), 'update'::text) e(name, event)
    JOIN pg_class c ON c.oid = to_regclass(e.name)
  UNION
    SELECT n.relid, n.event
    FROM reached r CROSS JOIN LATERAL (
        SELECT i.inhrelid, r.event FROM pg_inherits i WHERE i.inhparent = r.relid
        UNION ALL
        -- pg_constraint has no index on confrelid: a foreign key is found
        -- through its dependency on the referenced table (pg_depend's
        -- index), not by scanning every constraint of the database.
        SELECT DISTINCT k.conrelid, CASE WHEN r.event = 'delete' AND k.confdeltype = 'c' THEN 'delete' ELSE 'update' END
        FROM pg_depend d JOIN pg_constraint k ON k.oid = d.objid
        WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = r.relid AND d.classid = 'pg_constraint'::regclass
          AND k.contype = 'f' AND k.confrelid = r.relid
          AND CASE r.event WHEN 'delete' THEN k.confdeltype ELSE k.confupdtype END IN ('c', 'n', 'd')
    ) n(relid, event)
)
-- The catalog rows are found through their indexes, per reached table
-- (OFFSET 0 keeps the planner from hashing all of pg_class: it cannot
-- estimate how few tables a recursion reaches).
SELECT c.oid::int8, c.nspname, c.relname, r.del, r.upd, c.may_lock
FROM (SELECT relid, bool_or(event = 'delete') AS del, bool_or(event = 'update') AS upd
      FROM reached GROUP BY relid) r
CROSS JOIN LATERAL (
    SELECT c.oid, n.nspname::text AS nspname, c.relname::text AS relname,
           has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') AS may_lock
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = r.relid
    OFFSET 0
) c
ORDER BY 2, 3
