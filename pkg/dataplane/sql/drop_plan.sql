-- The relations of schema $1 a drop has to remove, one row each (partitions and
-- indexes go with their table): kind, name, how many relations it brings along
-- (indexes, TOAST table and index, owned sequences), and the relations of the
-- same schema that reference it by foreign key.
SELECT c.relname::text,
       c.relkind::text,
       1 + (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid)
         + CASE WHEN c.reltoastrelid <> 0 THEN 2 ELSE 0 END
         + (SELECT count(*) FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
            WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
              AND d.refobjid = c.oid AND d.deptype IN ('a', 'i')) AS relations,
       coalesce((SELECT array_agg(DISTINCT r.relname::text)
                 FROM pg_constraint k JOIN pg_class r ON r.oid = k.conrelid
                 WHERE k.contype = 'f' AND k.confrelid = c.oid AND k.conrelid <> c.oid
                   AND r.relnamespace = c.relnamespace), '{}') AS referenced_by
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
ORDER BY c.relname
