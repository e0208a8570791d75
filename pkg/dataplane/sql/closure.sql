-- Everything a DROP SCHEMA … CASCADE of the schema whose oid is $1 would
-- drop or change, found the way
-- PostgreSQL's CASCADE finds it (dependency.c, findDependentObjects): from
-- the schema, every object that depends on a reached object (normal, auto,
-- internal, partition and extension dependencies; a dependency on a column
-- when that column is reached, on any column when the whole object is), and
-- the owner of every reached object that is an internal part or an extension
-- member of it (CASCADE then deletes the owner instead). Each object is placed
-- in the schema it lives in: its own namespace, or for objects without one
-- (defaults, triggers, rules, policies, columns) the namespace of their
-- table; a TOAST table or index in the namespace of its table. An object that
-- has no namespace at all (an extension, a cast, a publication, …) is placed
-- nowhere, which is outside.
WITH RECURSIVE ns AS (
    SELECT oid FROM pg_namespace WHERE oid = $1::oid
), walk(classid, objid, objsubid) AS (
    SELECT 'pg_namespace'::regclass::oid, oid, 0 FROM ns
    UNION
    SELECT x.classid, x.objid, x.objsubid
    FROM walk w CROSS JOIN LATERAL (
        SELECT d.classid, d.objid, d.objsubid FROM pg_depend d
        WHERE d.refclassid = w.classid AND d.refobjid = w.objid
          AND (w.objsubid = 0 OR d.refobjsubid = w.objsubid)
          AND d.deptype IN ('n', 'a', 'i', 'P', 'S', 'e', 'x')
        UNION ALL
        SELECT d.refclassid, d.refobjid, 0 FROM pg_depend d
        WHERE d.classid = w.classid AND d.objid = w.objid AND w.objsubid = 0
          AND d.deptype IN ('i', 'e')
    ) x
), placed AS MATERIALIZED (
    SELECT w.classid, w.objid, w.objsubid, CASE w.classid
        WHEN 'pg_namespace'::regclass THEN w.objid
        WHEN 'pg_class'::regclass THEN (
            SELECT CASE WHEN c.relnamespace <> 'pg_toast'::regnamespace THEN c.relnamespace
                -- A TOAST table depends internally on its table (an index
                -- on it, on the TOAST table): found through pg_depend's
                -- index, not by scanning pg_class for reltoastrelid.
                ELSE (SELECT t.relnamespace FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
                      WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
                        AND d.objid = coalesce((SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = c.oid), c.oid)
                        AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'i'
                      LIMIT 1)
                END
            FROM pg_class c WHERE c.oid = w.objid)
        WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = w.objid)
        WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = w.objid)
        WHEN 'pg_constraint'::regclass THEN (SELECT connamespace FROM pg_constraint WHERE oid = w.objid)
        WHEN 'pg_attrdef'::regclass THEN (
            SELECT c.relnamespace FROM pg_attrdef a JOIN pg_class c ON c.oid = a.adrelid WHERE a.oid = w.objid)
        WHEN 'pg_rewrite'::regclass THEN (
            SELECT c.relnamespace FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE r.oid = w.objid)
        WHEN 'pg_trigger'::regclass THEN (
            SELECT c.relnamespace FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid WHERE g.oid = w.objid)
        WHEN 'pg_policy'::regclass THEN (
            SELECT c.relnamespace FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE p.oid = w.objid)
        WHEN 'pg_statistic_ext'::regclass THEN (SELECT stxnamespace FROM pg_statistic_ext WHERE oid = w.objid)
        WHEN 'pg_collation'::regclass THEN (SELECT collnamespace FROM pg_collation WHERE oid = w.objid)
        WHEN 'pg_operator'::regclass THEN (SELECT oprnamespace FROM pg_operator WHERE oid = w.objid)
        WHEN 'pg_opclass'::regclass THEN (SELECT opcnamespace FROM pg_opclass WHERE oid = w.objid)
        WHEN 'pg_opfamily'::regclass THEN (SELECT opfnamespace FROM pg_opfamily WHERE oid = w.objid)
        WHEN 'pg_amop'::regclass THEN (
            SELECT f.opfnamespace FROM pg_amop a JOIN pg_opfamily f ON f.oid = a.amopfamily WHERE a.oid = w.objid)
        WHEN 'pg_amproc'::regclass THEN (
            SELECT f.opfnamespace FROM pg_amproc a JOIN pg_opfamily f ON f.oid = a.amprocfamily WHERE a.oid = w.objid)
        WHEN 'pg_ts_config'::regclass THEN (SELECT cfgnamespace FROM pg_ts_config WHERE oid = w.objid)
        WHEN 'pg_ts_dict'::regclass THEN (SELECT dictnamespace FROM pg_ts_dict WHERE oid = w.objid)
        WHEN 'pg_ts_parser'::regclass THEN (SELECT prsnamespace FROM pg_ts_parser WHERE oid = w.objid)
        WHEN 'pg_ts_template'::regclass THEN (SELECT tmplnamespace FROM pg_ts_template WHERE oid = w.objid)
        WHEN 'pg_conversion'::regclass THEN (SELECT connamespace FROM pg_conversion WHERE oid = w.objid)
        WHEN 'pg_default_acl'::regclass THEN (SELECT defaclnamespace FROM pg_default_acl WHERE oid = w.objid)
        -- A cast from or to a type of the schema exists for that type (a
        -- range type's cast to its multirange is made with it): it is
        -- placed in the schema; any other cast is outside.
        WHEN 'pg_cast'::regclass THEN (
            SELECT t.typnamespace FROM pg_cast k JOIN pg_type t ON t.oid IN (k.castsource, k.casttarget)
            WHERE k.oid = w.objid AND t.typnamespace = (SELECT oid FROM ns) LIMIT 1)
        END AS owner_ns
    FROM walk w
)
-- One row per object: its catalog and oid (what a lock on it names), whether
-- it lives in the schema, for a relation of the schema its name and kind, and
-- for an object outside a description ("view public.v").
SELECT p.classid::int8, p.objid::int8,
       p.owner_ns IS NOT DISTINCT FROM (SELECT oid FROM ns) AS inside,
       c.relname::text, c.relkind::text,
       CASE WHEN p.owner_ns IS DISTINCT FROM (SELECT oid FROM ns) THEN
           (SELECT o.type || ' ' || o.identity FROM pg_identify_object(
                CASE WHEN r.oid IS NULL THEN p.classid ELSE 'pg_class'::regclass END,
                coalesce(r.ev_class, p.objid), CASE WHEN r.oid IS NULL THEN p.objsubid ELSE 0 END) o)
           || coalesce((SELECT ' (foreign key ' || quote_ident(k.conname) || ' of ' || (SELECT identity FROM pg_identify_object('pg_class'::regclass, k.conrelid, 0)) || ')'
                        FROM pg_trigger g JOIN pg_constraint k ON k.oid = g.tgconstraint
                        WHERE p.classid = 'pg_trigger'::regclass AND g.oid = p.objid), '') END
FROM placed p
LEFT JOIN pg_class c ON p.classid = 'pg_class'::regclass AND c.oid = p.objid AND p.objsubid = 0
    AND c.relnamespace = (SELECT oid FROM ns)
-- A view's rule is reported as the view.
LEFT JOIN pg_rewrite r ON p.classid = 'pg_rewrite'::regclass AND r.oid = p.objid AND r.rulename = '_RETURN' 
UNION ALL
-- A relation of the schema that is a partition or an inheritance child of a
-- table outside it: dropping it changes that table (its partitions, the rows
-- it returns), which no dependency records as a deletion.
SELECT 'pg_class'::regclass::oid::int8, i.inhparent::int8, false, NULL, NULL,
       (SELECT o.type || ' ' || o.identity FROM pg_identify_object('pg_class'::regclass, i.inhparent, 0) o) || ' (its ' ||
           CASE WHEN c.relispartition THEN 'partition ' ELSE 'inheritance child ' END ||
           quote_ident(c.relname) || ' is in the schema)'
FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid JOIN pg_class parent ON parent.oid = i.inhparent
WHERE c.relnamespace = (SELECT oid FROM ns) AND parent.relnamespace <> (SELECT oid FROM ns)
