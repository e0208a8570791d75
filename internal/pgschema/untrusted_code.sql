-- The code the pipeline's DML would run on the tables $1 (oids; $2: rows are
-- deleted from it, $3: rows are updated): every enabled trigger that fires
-- on those events (not the internal ones of foreign keys), and every rule on
-- them. That code runs as the role running the statement, the pipeline's,
-- often a superuser; SET ROLE is no boundary (the code can RESET ROLE). So
-- the pipeline trusts code only when nobody else can have written it:
--
-- - each function it calls (a trigger's function, the functions of its WHEN
--   clause or of a rule's actions) is owned by the pipeline's role or a
--   superuser, or is SECURITY DEFINER (it runs as its owner) and cannot be
--   made SECURITY INVOKER meanwhile: $4 says its pg_proc row is locked (a
--   superuser can lock it; the owner of a function owned by the pipeline's
--   role or a superuser cannot change it anyway);
-- - and, when the trigger's function is not SECURITY DEFINER or it has a
--   WHEN clause (which can run any SQL, through query_to_xml say), or for a
--   rule, nobody else controls the table: its owner and the roles granted
--   TRIGGER on it (PUBLIC included) are the pipeline's role or superusers.
--   (A superuser's trigger function can run what its arguments, chosen by
--   whoever created the trigger, say.)
--
-- Trusted = the pipeline's role (current_user) or a superuser; membership
-- is not asked (pg_has_role is true of every role for a superuser).
--
-- One row per trigger or rule: kind, schema, table, name, the oids of the
-- functions it calls (for the caller to lock), the functions it calls that
-- are not trusted and the roles not trusted who control the table, if they
-- matter (both empty: trusted).
WITH trusted AS (
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
), code AS (
    SELECT 'trigger'::text AS kind, t.nspname, t.relname, tg.tgname::text AS name, t.controllers,
           p.prosecdef AND tg.tgqual IS NULL AS runs_as_owner,
           'pg_trigger'::regclass::oid AS classid, tg.oid AS objid
    FROM tables t
    JOIN pg_trigger tg ON tg.tgrelid = t.oid AND NOT tg.tgisinternal AND tg.tgenabled <> 'D'
        AND ((t.del AND (tg.tgtype::int & 8) <> 0) OR (t.upd AND (tg.tgtype::int & 16) <> 0))
    JOIN pg_proc p ON p.oid = tg.tgfoid
  UNION ALL
    SELECT 'rule', t.nspname, t.relname, ru.rulename::text, t.controllers, false,
           'pg_rewrite'::regclass::oid, ru.oid
    FROM tables t
    JOIN pg_rewrite ru ON ru.ev_class = t.oid AND ru.ev_enabled <> 'D'
        AND ((t.del AND ru.ev_type = '4') OR (t.upd AND ru.ev_type = '2'))
), calls AS (
    -- A trigger depends on its function and on those of its WHEN clause, a
    -- rule on those of its actions.
    SELECT DISTINCT c.classid, c.objid, p.oid,
           pn.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS fname,
           o.rolname::text AS owner,
           p.proowner IN (SELECT oid FROM trusted) OR (p.prosecdef AND $4::bool) AS safe
    FROM code c
    JOIN pg_depend d ON d.classid = c.classid AND d.objid = c.objid AND d.refclassid = 'pg_proc'::regclass
    JOIN pg_proc p ON p.oid = d.refobjid
    JOIN pg_namespace pn ON pn.oid = p.pronamespace
    JOIN pg_roles o ON o.oid = p.proowner
)
SELECT c.kind, c.nspname, c.relname, c.name,
       ARRAY(SELECT f.oid::int8 FROM calls f WHERE f.classid = c.classid AND f.objid = c.objid ORDER BY 1),
       ARRAY(SELECT f.fname || ' (owner ' || f.owner || ')' FROM calls f
             WHERE f.classid = c.classid AND f.objid = c.objid AND NOT f.safe ORDER BY 1),
       CASE WHEN c.runs_as_owner THEN '{}' ELSE c.controllers END
FROM code c
ORDER BY 2, 3, 1, 4
