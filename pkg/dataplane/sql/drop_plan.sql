-- The relations of the schema whose oid is $1 a drop has to remove, one row
-- each: tables (partitions and inheritance children too, with the table of
-- the schema they hang from), views, materialized views, foreign tables and
-- the sequences no table owns (owned ones, indexes and TOAST tables go with
-- their table). For each: name, kind, the relations it brings along by
-- itself (itself, its indexes, TOAST table and index, owned sequences; not
-- its partitions or children, which have rows of their own), its parent in
-- the schema (NULL for a top-level relation), and the relations of the
-- schema that reference it by foreign key.
--
-- Every lookup goes through an index, so the cost depends on the tenant, not
-- on the size of the fleet: the schema's relations through pg_depend's index
-- on the referenced namespace (not a scan of pg_class), the foreign keys from
-- the referencing side (pg_constraint is indexed on conrelid, not on
-- confrelid), parents through pg_inherits' index on the child.
WITH ns AS (
    SELECT oid FROM pg_namespace WHERE oid = $1::oid
), rels AS (
    SELECT c.oid, c.relname, c.relkind, c.reltoastrelid
    FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
    WHERE d.refclassid = 'pg_namespace'::regclass::oid AND d.refobjid = (SELECT oid FROM ns)
      AND d.classid = 'pg_class'::regclass::oid AND d.deptype = 'n'
      AND c.relnamespace = (SELECT oid FROM ns)
      AND (c.relkind IN ('r', 'p', 'v', 'm', 'f')
           -- a sequence no table owns (owned ones go with their table)
           OR c.relkind = 'S' AND NOT EXISTS (
               SELECT FROM pg_depend o
               WHERE o.classid = 'pg_class'::regclass::oid AND o.objid = c.oid
                 AND o.refclassid = 'pg_class'::regclass::oid AND o.deptype IN ('a', 'i')))
), fk AS MATERIALIZED (
    SELECT k.confrelid, array_agg(DISTINCT f.relname::text) AS refs
    FROM rels f JOIN pg_constraint k ON k.conrelid = f.oid AND k.contype = 'f'
    WHERE k.confrelid <> f.oid
    GROUP BY k.confrelid
)
SELECT r.relname::text,
       r.relkind::text,
       (1 + (SELECT count(*) FROM pg_index i WHERE i.indrelid = r.oid)
          + CASE WHEN r.reltoastrelid <> 0 THEN 2 ELSE 0 END
          + (SELECT count(*) FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             WHERE d.classid = 'pg_class'::regclass::oid AND d.refclassid = 'pg_class'::regclass::oid
               AND d.refobjid = r.oid AND d.deptype IN ('a', 'i')))::int AS relations,
       (SELECT p.relname::text FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
        WHERE i.inhrelid = r.oid AND p.relnamespace = (SELECT oid FROM ns) LIMIT 1) AS parent,
       coalesce(fk.refs, '{}') AS referenced_by
FROM rels r LEFT JOIN fk ON fk.confrelid = r.oid
ORDER BY r.relname
