-- Objects outside schema $1 that a DROP SCHEMA ... CASCADE would drop or
-- change: the tenant is refused when there is any.
--
-- reach is what the cascade would reach: the schema, everything that depends
-- on it, and so on, walked through pg_depend's index on the referenced object
-- (exactly how DROP finds them). Each object reached is then placed in the
-- namespace of what owns it (a rule in its view's, a default or trigger in its
-- table's); TOAST tables and their indexes go with their table (nothing else
-- can depend on them); an object of a kind not listed
-- has no namespace here and counts as outside.
WITH RECURSIVE ns AS (
    SELECT oid FROM pg_namespace WHERE nspname = $1
), reach(classid, objid, objsubid, deptype) AS (
    SELECT 'pg_namespace'::regclass::oid, ns.oid, 0, 'n'::"char" FROM ns
    UNION
    SELECT d.classid, d.objid, d.objsubid, d.deptype
    FROM reach r JOIN pg_depend d ON d.refclassid = r.classid AND d.refobjid = r.objid
), candidates AS (
    -- An object that belongs to what it was reached from (an index, TOAST
    -- table, row or array type, constraint, default, trigger, rule or policy
    -- of a table: 'a'uto or 'i'nternal dependencies) lives where its owner
    -- lives, so only objects reached otherwise need placing.
    SELECT DISTINCT classid, objid, objsubid FROM reach
    WHERE deptype NOT IN ('a', 'i') OR classid NOT IN ('pg_class'::regclass, 'pg_type'::regclass,
        'pg_constraint'::regclass, 'pg_attrdef'::regclass, 'pg_trigger'::regclass, 'pg_rewrite'::regclass,
        'pg_policy'::regclass)
), placed AS (
    SELECT x.classid, x.objid, x.objsubid, CASE x.classid
        WHEN 'pg_namespace'::regclass THEN x.objid
        WHEN 'pg_class'::regclass THEN (
            SELECT CASE WHEN c.relnamespace = 'pg_toast'::regnamespace THEN (SELECT oid FROM ns) ELSE c.relnamespace END
            FROM pg_class c WHERE c.oid = x.objid)
        WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = x.objid)
        WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = x.objid)
        WHEN 'pg_constraint'::regclass THEN (SELECT connamespace FROM pg_constraint WHERE oid = x.objid)
        WHEN 'pg_attrdef'::regclass THEN (
            SELECT c.relnamespace FROM pg_attrdef a JOIN pg_class c ON c.oid = a.adrelid WHERE a.oid = x.objid)
        WHEN 'pg_rewrite'::regclass THEN (
            SELECT c.relnamespace FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE r.oid = x.objid)
        WHEN 'pg_trigger'::regclass THEN (
            SELECT c.relnamespace FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid WHERE g.oid = x.objid)
        WHEN 'pg_policy'::regclass THEN (
            SELECT c.relnamespace FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE p.oid = x.objid)
        WHEN 'pg_statistic_ext'::regclass THEN (SELECT stxnamespace FROM pg_statistic_ext WHERE oid = x.objid)
        WHEN 'pg_collation'::regclass THEN (SELECT collnamespace FROM pg_collation WHERE oid = x.objid)
        WHEN 'pg_operator'::regclass THEN (SELECT oprnamespace FROM pg_operator WHERE oid = x.objid)
        WHEN 'pg_opclass'::regclass THEN (SELECT opcnamespace FROM pg_opclass WHERE oid = x.objid)
        WHEN 'pg_opfamily'::regclass THEN (SELECT opfnamespace FROM pg_opfamily WHERE oid = x.objid)
        WHEN 'pg_amop'::regclass THEN (
            SELECT f.opfnamespace FROM pg_amop a JOIN pg_opfamily f ON f.oid = a.amopfamily WHERE a.oid = x.objid)
        WHEN 'pg_amproc'::regclass THEN (
            SELECT f.opfnamespace FROM pg_amproc a JOIN pg_opfamily f ON f.oid = a.amprocfamily WHERE a.oid = x.objid)
        WHEN 'pg_ts_config'::regclass THEN (SELECT cfgnamespace FROM pg_ts_config WHERE oid = x.objid)
        WHEN 'pg_ts_config_map'::regclass THEN (SELECT cfgnamespace FROM pg_ts_config WHERE oid = x.objid)
        WHEN 'pg_ts_dict'::regclass THEN (SELECT dictnamespace FROM pg_ts_dict WHERE oid = x.objid)
        WHEN 'pg_conversion'::regclass THEN (SELECT connamespace FROM pg_conversion WHERE oid = x.objid)
        END AS owner_ns
    FROM candidates x
)
-- A view's rule is reported as the view itself ("view public.v").
SELECT DISTINCT coalesce(o.type || ' ' || o.identity, p.classid::regclass::text || ' ' || p.objid)
FROM placed p
LEFT JOIN pg_rewrite r ON p.classid = 'pg_rewrite'::regclass AND r.oid = p.objid
CROSS JOIN LATERAL pg_identify_object(
    CASE WHEN r.oid IS NULL THEN p.classid ELSE 'pg_class'::regclass END,
    coalesce(r.ev_class, p.objid),
    CASE WHEN r.oid IS NULL THEN p.objsubid ELSE 0 END) o
WHERE p.owner_ns IS DISTINCT FROM (SELECT oid FROM ns)
ORDER BY 1
LIMIT 20
