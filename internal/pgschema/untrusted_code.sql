-- The code the pipeline's DML would run on the tables $1 (oids; $2: rows are
-- deleted from it, $3: rows are updated): every enabled trigger that fires
-- on those events (not the internal ones of foreign keys), every rule on
-- them, and the expressions the statement evaluates: for an update, the
-- table's CHECK constraints, those of the domains of its columns, its index
-- expressions and predicates and its generated columns; the row-level
-- security policies that apply to the pipeline's role. That code runs as the
-- role running the statement, the pipeline's, often a superuser; SET ROLE is
-- no boundary (the code can RESET ROLE). So the pipeline trusts code only
-- when nobody else can have written it:
--
-- - each function it calls (a trigger's function, the functions of its WHEN
--   clause or of a rule's actions) is owned by the pipeline's role or a
--   superuser, or is SECURITY DEFINER (it runs as its owner) and cannot be
--   made SECURITY INVOKER meanwhile: $4 says its pg_proc row is locked (a
--   superuser can lock it; the owner of a function owned by the pipeline's
--   role or a superuser cannot change it anyway);
-- - and, when the trigger's function is not SECURITY DEFINER or it has a
--   WHEN clause (which can run any SQL, through query_to_xml say), for a
--   rule, or for an expression that calls a function that is not IMMUTABLE,
--   nobody else controls the table (for a domain's constraint, the domain):
--   its owner and the roles granted TRIGGER on it (PUBLIC included) are the
--   pipeline's role or superusers. (A superuser's trigger function can run
--   what its arguments, chosen by whoever created the trigger, say; an
--   expression of immutable functions only, each trusted, cannot.)
--
-- A function an expression calls through an operator is the operator's.
--
-- Trusted = the pipeline's role (current_user) or a superuser; membership
-- is not asked (pg_has_role is true of every role for a superuser).
--
-- One row per trigger, rule, expression or domain: kind, schema, table,
-- name, the oids of the functions it calls (for the caller to lock), the
-- functions it calls that are not trusted and the roles not trusted who
-- control the table (or the domain), if they matter (both empty: trusted).
WITH RECURSIVE trusted AS (
    SELECT oid FROM pg_roles WHERE rolsuper OR rolname = current_user
), tables AS (
    SELECT c.oid, n.nspname, c.relname, t.del, t.upd,
           ARRAY(SELECT coalesce(r.rolname::text, 'PUBLIC')
                 FROM (SELECT c.relowner
                       UNION
                       SELECT a.grantee FROM aclexplode(c.relacl) a WHERE a.privilege_type = 'TRIGGER') g(role)
                 LEFT JOIN pg_roles r ON r.oid = g.role
                 WHERE g.role NOT IN (SELECT oid FROM trusted)
                 ORDER BY 1) AS controllers
    FROM unnest($1::int8[], $2::bool[], $3::bool[]) t(oid, del, upd)
    JOIN pg_class c ON c.oid = t.oid::oid
    JOIN pg_namespace n ON n.oid = c.relnamespace
), me AS (
    SELECT oid, rolsuper OR rolbypassrls AS bypasses_rls FROM pg_roles WHERE rolname = current_user
), code0 AS (
    SELECT 'trigger'::text AS kind, t.oid AS relid, t.nspname, t.relname, tg.tgname::text AS name, t.controllers,
           p.prosecdef AND tg.tgqual IS NULL AS runs_as_owner,
           'pg_trigger'::regclass::oid AS classid, tg.oid AS objid, tg.tgqual::text AS expr
    FROM tables t
    JOIN pg_trigger tg ON tg.tgrelid = t.oid AND NOT tg.tgisinternal AND tg.tgenabled <> 'D'
        AND ((t.del AND (tg.tgtype::int & 8) <> 0) OR (t.upd AND (tg.tgtype::int & 16) <> 0))
    JOIN pg_proc p ON p.oid = tg.tgfoid
  UNION ALL
    SELECT 'rule', t.oid, t.nspname, t.relname, ru.rulename::text, t.controllers, false,
           'pg_rewrite'::regclass::oid, ru.oid, ru.ev_qual::text || ru.ev_action::text
    FROM tables t
    JOIN pg_rewrite ru ON ru.ev_class = t.oid AND ru.ev_enabled <> 'D'
        AND ((t.del AND ru.ev_type = '4') OR (t.upd AND ru.ev_type = '2'))
  UNION ALL
    SELECT 'check constraint', t.oid, t.nspname, t.relname, k.conname::text, t.controllers, false,
           'pg_constraint'::regclass::oid, k.oid, k.conbin::text
    FROM tables t
    JOIN pg_constraint k ON k.conrelid = t.oid AND k.contype = 'c'
    WHERE t.upd
  UNION ALL
    SELECT 'index', t.oid, t.nspname, t.relname, ic.relname::text, t.controllers, false, 'pg_class'::regclass::oid, i.indexrelid,
           coalesce(i.indexprs::text, '') || coalesce(i.indpred::text, '')
    FROM tables t
    JOIN pg_index i ON i.indrelid = t.oid AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
    JOIN pg_class ic ON ic.oid = i.indexrelid
    WHERE t.upd
  UNION ALL
    SELECT 'generated column', t.oid, t.nspname, t.relname, a.attname::text, t.controllers, false,
           'pg_attrdef'::regclass::oid, ad.oid, ad.adbin::text
    FROM tables t
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attgenerated = 's' AND NOT a.attisdropped
    JOIN pg_attrdef ad ON ad.adrelid = t.oid AND ad.adnum = a.attnum
    WHERE t.upd
  UNION ALL
    -- ON DELETE/UPDATE SET DEFAULT evaluates the defaults of the foreign
    -- key's columns (as the table's owner, who may be trusted).
    SELECT DISTINCT 'column default', t.oid, t.nspname, t.relname, a.attname::text, t.controllers, false,
           'pg_attrdef'::regclass::oid, ad.oid, ad.adbin::text
    FROM tables t
    JOIN pg_constraint k ON k.conrelid = t.oid AND k.contype = 'f' AND 'd' IN (k.confdeltype, k.confupdtype)
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY (k.conkey) AND a.attgenerated = '' AND NOT a.attisdropped
    JOIN pg_attrdef ad ON ad.adrelid = t.oid AND ad.adnum = a.attnum
    WHERE t.upd
  UNION ALL
    -- Row-level security applies to a role that is neither a superuser nor
    -- BYPASSRLS, unless it owns the table and the table does not force it;
    -- the rows an UPDATE or DELETE reads are filtered by SELECT policies too.
    SELECT 'policy', t.oid, t.nspname, t.relname, p.polname::text, t.controllers, false, 'pg_policy'::regclass::oid, p.oid,
           coalesce(p.polqual::text, '') || coalesce(p.polwithcheck::text, '')
    FROM tables t
    JOIN pg_class c ON c.oid = t.oid AND c.relrowsecurity
    JOIN pg_policy p ON p.polrelid = t.oid
        AND (p.polcmd IN ('*', 'r') OR (t.del AND p.polcmd = 'd') OR (t.upd AND p.polcmd = 'w'))
    CROSS JOIN me
    WHERE NOT me.bypasses_rls AND (c.relowner <> me.oid OR c.relforcerowsecurity)
), types(relid, typ) AS (
    -- The types whose input or constraints the code can run: those of the
    -- columns of an updated table, and those its expressions refer to (a
    -- cast to a domain checks the domain's constraints, one to a composite
    -- type or an array runs the input of its attributes' or elements'
    -- types, domains included); then, recursively, the base type of a
    -- domain and the types its constraints refer to, the element type of an
    -- array, the attribute types of a composite, the subtype of a range.
    SELECT t.oid, a.atttypid
    FROM tables t JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE t.upd
  UNION
    SELECT c.relid, r.typ FROM code0 c CROSS JOIN LATERAL (
        SELECT d.refobjid FROM pg_depend d
        WHERE d.classid = c.classid AND d.objid = c.objid AND d.refclassid = 'pg_type'::regclass
        UNION
        SELECT m[1]::oid FROM regexp_matches(coalesce(c.expr, ''), ':[a-z]*type (\d+)', 'g') m
    ) r(typ)
  UNION
    SELECT ty.relid, n.typ FROM types ty CROSS JOIN LATERAL (
        SELECT b.typbasetype FROM pg_type b WHERE b.oid = ty.typ AND b.typtype = 'd'
        UNION ALL
        SELECT b.typelem FROM pg_type b WHERE b.oid = ty.typ AND b.typelem <> 0
        UNION ALL
        SELECT a.atttypid FROM pg_type b JOIN pg_attribute a ON a.attrelid = b.typrelid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE b.oid = ty.typ AND b.typrelid <> 0 AND b.typrelid <> ty.relid
        UNION ALL
        SELECT rg.rngsubtype FROM pg_range rg WHERE rg.rngtypid = ty.typ
        UNION ALL
        SELECT rg.rngtypid FROM pg_range rg WHERE rg.rngmultitypid = ty.typ
        UNION ALL
        SELECT d.refobjid FROM pg_constraint k
        JOIN pg_depend d ON d.classid = 'pg_constraint'::regclass AND d.objid = k.oid AND d.refclassid = 'pg_type'::regclass
        WHERE k.contypid = ty.typ
        UNION ALL
        SELECT m[1]::oid FROM pg_constraint k CROSS JOIN LATERAL regexp_matches(k.conbin, ':[a-z]*type (\d+)', 'g') m
        WHERE k.contypid = ty.typ
    ) n(typ)
    WHERE n.typ <> 0
), code AS (
    SELECT * FROM code0
  UNION ALL
    -- Those domains: one owned by another role can be given a constraint at
    -- any time (NOT VALID takes no lock on the table), so it is not trusted;
    -- a trusted one's constraints are, if the functions they call are. A
    -- composite type of another role (but the table's own) can be given an
    -- attribute of such a domain at any time: not trusted either.
    SELECT DISTINCT CASE WHEN o.trusted THEN 'domain constraint' WHEN dt.typtype = 'd' THEN 'domain' ELSE 'type' END,
           t.oid, t.nspname, t.relname,
           format_type(dt.oid, NULL) || CASE WHEN o.trusted THEN '.' || k.conname ELSE '' END,
           ARRAY(SELECT r.rolname::text FROM pg_roles r WHERE r.oid = dt.typowner AND NOT o.trusted),
           false,
           CASE WHEN o.trusted THEN 'pg_constraint'::regclass::oid ELSE 'pg_type'::regclass::oid END,
           CASE WHEN o.trusted THEN k.oid ELSE dt.oid END,
           CASE WHEN o.trusted THEN k.conbin::text END
    FROM tables t
    JOIN (SELECT DISTINCT relid, typ FROM types) ty ON ty.relid = t.oid
    JOIN pg_type dt ON dt.oid = ty.typ AND (dt.typtype = 'd' OR (dt.typtype = 'c' AND dt.typrelid <> t.oid))
    CROSS JOIN LATERAL (SELECT dt.typowner IN (SELECT oid FROM trusted) AS trusted) o
    LEFT JOIN pg_constraint k ON k.contypid = dt.oid AND k.contype = 'c' AND dt.typtype = 'd'
    WHERE k.oid IS NOT NULL OR NOT o.trusted
  UNION ALL
    -- A policy's subquery, a rule's actions, read (or write) other
    -- relations, whose code this does not follow: a view's functions run as
    -- the pipeline's role, so do the policies of a table, and the triggers of
    -- one a rule writes to; nor does it lock them, so their owner may add
    -- such code meanwhile. Refused unless a trusted role owns a plain one.
    SELECT DISTINCT c.kind || ' reading', c.relid, c.nspname, c.relname, c.name || ' (' || r.oid::regclass::text || ')',
           ARRAY[coalesce((SELECT o.rolname::text FROM pg_roles o WHERE o.oid = r.relowner AND o.oid NOT IN (SELECT oid FROM trusted)),
                          'nobody else, but it is a view or has row-level security or triggers')],
           false, c.classid, c.objid, NULL::text
    FROM code0 c
    CROSS JOIN LATERAL regexp_matches(c.expr, ':relid (\d+)', 'g') m
    JOIN pg_class r ON r.oid = m[1]::oid AND r.oid <> c.relid
    WHERE c.kind IN ('policy', 'rule')
      AND (r.relowner NOT IN (SELECT oid FROM trusted) OR r.relkind NOT IN ('r', 'p') OR r.relrowsecurity
           OR EXISTS (SELECT 1 FROM pg_trigger tg WHERE tg.tgrelid = r.oid AND NOT tg.tgisinternal))
), calls AS (
    -- A trigger depends on its function and on those of its WHEN clause, a
    -- rule on those of its actions, an expression on those it calls; a
    -- built-in function or operator (pinned) has no pg_depend row: those an
    -- expression calls are read from its node tree (FUNCEXPR's funcid, an
    -- operator's opno).
    SELECT DISTINCT c.classid, c.objid, p.oid,
           pn.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS fname,
           o.rolname::text AS owner,
           p.proowner IN (SELECT oid FROM trusted) OR (p.prosecdef AND $4::bool) AS safe,
           p.provolatile = 'i' AS immutable
    FROM code c
    CROSS JOIN LATERAL (
        SELECT d.refobjid FROM pg_depend d
        WHERE d.classid = c.classid AND d.objid = c.objid AND d.refclassid = 'pg_proc'::regclass
        UNION
        SELECT op.oprcode FROM pg_depend d JOIN pg_operator op ON op.oid = d.refobjid
        WHERE d.classid = c.classid AND d.objid = c.objid AND d.refclassid = 'pg_operator'::regclass
        UNION
        SELECT m[1]::oid FROM regexp_matches(coalesce(c.expr, ''), ':(?:funcid|opfuncid|aggfnoid|winfnoid) (\d+)', 'g') m
        UNION
        SELECT op.oprcode FROM regexp_matches(coalesce(c.expr, ''), ':opno (\d+)', 'g') m
        JOIN pg_operator op ON op.oid = m[1]::oid
    ) f(fn)
    JOIN pg_proc p ON p.oid = f.fn
    JOIN pg_namespace pn ON pn.oid = p.pronamespace
    JOIN pg_roles o ON o.oid = p.proowner
)
SELECT c.kind, c.nspname, c.relname, c.name,
       ARRAY(SELECT f.oid::int8 FROM calls f WHERE f.classid = c.classid AND f.objid = c.objid ORDER BY 1),
       ARRAY(SELECT f.fname || ' (owner ' || f.owner || ')' FROM calls f
             WHERE f.classid = c.classid AND f.objid = c.objid AND NOT f.safe ORDER BY 1),
       CASE WHEN c.runs_as_owner THEN '{}'
            WHEN c.kind IN ('check constraint', 'domain constraint', 'index', 'generated column', 'column default', 'policy') AND NOT EXISTS (
                SELECT 1 FROM calls f WHERE f.classid = c.classid AND f.objid = c.objid AND NOT f.immutable) THEN '{}'
            ELSE c.controllers END
FROM code c
ORDER BY 2, 3, 1, 4
