-- Foreign keys that point at the tables of public whose rows a cleanup
-- deletes ($1: their names), from any table: rows there that reference the
-- tenant's rows would make the delete fail, cascade or set NULL. That holds
-- for keys between the listed tables too (a tenant row pointing at its
-- parent tenant, a user invited by another tenant's user): there only the
-- rows that are not the tenant's own count, which the caller tells by
-- in_list. For each, the referencing table and columns, the referenced table
-- and columns, as names to quote, and in_list.
SELECT k.conname::text,
       rn.nspname::text, r.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
       t.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i),
       (r.relnamespace = 'public'::regnamespace AND r.relname = ANY ($1)) AS in_list
FROM pg_class t
-- pg_constraint has no index on confrelid: a foreign key is found through
-- its dependency on the referenced table (pg_depend's index; one row per
-- referenced column), not by scanning every constraint of the database.
CROSS JOIN LATERAL (
    SELECT DISTINCT d.objid FROM pg_depend d
    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid AND d.classid = 'pg_constraint'::regclass
) dep
JOIN pg_constraint k ON k.oid = dep.objid AND k.contype = 'f' AND k.confrelid = t.oid
JOIN pg_class r ON r.oid = k.conrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE t.relnamespace = 'public'::regnamespace AND t.relname = ANY ($1)
ORDER BY 1
