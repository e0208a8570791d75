-- Objects outside schema $1 that depend on an object inside it: a DROP ...
-- CASCADE of the schema would drop or change them, so the tenant is refused.
-- Each dependent object is placed in the namespace of what owns it (a rule in
-- its view's, a default in its table's, a TOAST table in its table's); an object
-- whose kind is not listed has no namespace here and counts as outside.
WITH ns AS (
    SELECT oid FROM pg_namespace WHERE nspname = $1
), inside AS (
              SELECT 'pg_class'::regclass AS classid, c.oid AS objid FROM pg_class c JOIN ns ON c.relnamespace = ns.oid
    UNION ALL SELECT 'pg_type'::regclass, t.oid FROM pg_type t JOIN ns ON t.typnamespace = ns.oid
    UNION ALL SELECT 'pg_proc'::regclass, p.oid FROM pg_proc p JOIN ns ON p.pronamespace = ns.oid
    UNION ALL SELECT 'pg_constraint'::regclass, k.oid FROM pg_constraint k JOIN ns ON k.connamespace = ns.oid
    UNION ALL SELECT 'pg_collation'::regclass, x.oid FROM pg_collation x JOIN ns ON x.collnamespace = ns.oid
    UNION ALL SELECT 'pg_operator'::regclass, x.oid FROM pg_operator x JOIN ns ON x.oprnamespace = ns.oid
    UNION ALL SELECT 'pg_opclass'::regclass, x.oid FROM pg_opclass x JOIN ns ON x.opcnamespace = ns.oid
    UNION ALL SELECT 'pg_opfamily'::regclass, x.oid FROM pg_opfamily x JOIN ns ON x.opfnamespace = ns.oid
    UNION ALL SELECT 'pg_conversion'::regclass, x.oid FROM pg_conversion x JOIN ns ON x.connamespace = ns.oid
    UNION ALL SELECT 'pg_ts_config'::regclass, x.oid FROM pg_ts_config x JOIN ns ON x.cfgnamespace = ns.oid
    UNION ALL SELECT 'pg_ts_dict'::regclass, x.oid FROM pg_ts_dict x JOIN ns ON x.dictnamespace = ns.oid
    UNION ALL SELECT 'pg_statistic_ext'::regclass, x.oid FROM pg_statistic_ext x JOIN ns ON x.stxnamespace = ns.oid
    UNION ALL SELECT 'pg_namespace'::regclass, ns.oid FROM ns
), dependents AS (
    SELECT DISTINCT d.classid, d.objid, d.objsubid
    FROM pg_depend d JOIN inside i ON d.refclassid = i.classid AND d.refobjid = i.objid
), placed AS (
    SELECT x.classid, x.objid, x.objsubid, CASE x.classid
        WHEN 'pg_class'::regclass THEN (
            SELECT CASE WHEN c.relkind = 't'
                        THEN (SELECT o.relnamespace FROM pg_class o WHERE o.reltoastrelid = c.oid)
                        ELSE c.relnamespace END
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
    FROM dependents x
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
