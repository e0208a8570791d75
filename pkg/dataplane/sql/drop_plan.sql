-- The relations of schema $1 a drop has to remove, one row each (partitions,
-- inheritance children, indexes and owned sequences go with their table;
-- sequences no table owns have a row of their own): kind, name, how many
-- relations it brings along (itself and its partitions or children, their
-- indexes, TOAST tables and indexes, owned sequences), and the relations of
-- the same schema that reference it by foreign key.
--
-- Every lookup goes through an index, so the cost depends on the tenant, not
-- on the size of the fleet: the schema's relations through pg_depend's index
-- on the referenced namespace (not a scan of pg_class), and the foreign keys
-- from the referencing side (pg_constraint is indexed on conrelid, not on
-- confrelid).
WITH RECURSIVE ns AS (
    SELECT oid FROM pg_namespace WHERE nspname = $1
), rels AS (
    SELECT c.oid, c.relname, c.relkind, c.reltoastrelid
    FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
    WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = (SELECT oid FROM ns)
      AND d.classid = 'pg_class'::regclass AND d.deptype = 'n'
      AND c.relnamespace = (SELECT oid FROM ns)
      -- a partition or inheritance child of a table of the schema goes with it
      AND NOT EXISTS (SELECT FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                      WHERE i.inhrelid = c.oid AND p.relnamespace = (SELECT oid FROM ns))
      AND (c.relkind IN ('r', 'p', 'v', 'm', 'f')
           -- a sequence no table owns (owned ones go with their table)
           OR c.relkind = 'S' AND NOT EXISTS (
               SELECT FROM pg_depend o
               WHERE o.classid = 'pg_class'::regclass AND o.objid = c.oid
                 AND o.refclassid = 'pg_class'::regclass AND o.deptype IN ('a', 'i')))
), tree(root, oid) AS (
    SELECT oid, oid FROM rels
    UNION
    SELECT t.root, i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.oid
), sizes AS (
    SELECT t.root,
           sum(1 + (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid)
               + CASE WHEN c.reltoastrelid <> 0 THEN 2 ELSE 0 END
               + (SELECT count(*) FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                  WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                    AND d.refobjid = c.oid AND d.deptype IN ('a', 'i')))::int AS relations
    FROM tree t JOIN pg_class c ON c.oid = t.oid
    GROUP BY t.root
), fk AS (
    SELECT k.confrelid, array_agg(DISTINCT f.relname::text) AS refs
    FROM rels f JOIN pg_constraint k ON k.conrelid = f.oid AND k.contype = 'f'
    WHERE k.confrelid <> f.oid
    GROUP BY k.confrelid
)
SELECT r.relname::text,
       r.relkind::text,
       sz.relations,
       coalesce(fk.refs, '{}') AS referenced_by
FROM rels r JOIN sizes sz ON sz.root = r.oid LEFT JOIN fk ON fk.confrelid = r.oid
ORDER BY r.relname
