-- The net PostgreSQL itself enforces inside every drop transaction of this
-- pipeline (installed only where the role may create event triggers, i.e. a
-- superuser): at the end of each DROP, if the transaction set
-- tenant_cleanup.dropping to a schema name, every object the DROP removed must
-- be in that schema (or be the schema itself, a rule on one of its relations,
-- its default privileges, or a TOAST table or index of one of its tables);
-- anything else aborts the transaction, and so the drop. For
-- every other DROP in the database (Onyx's migrations, say) the setting is
-- empty and the function returns at once.
CREATE OR REPLACE FUNCTION tenant_cleanup.guard_drop() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target text := current_setting('tenant_cleanup.dropping', true);
    o record;
BEGIN
    IF target IS NULL OR target = '' THEN
        RETURN;
    END IF;
    FOR o IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
        CONTINUE WHEN o.schema_name = target OR o.schema_name = 'pg_toast';
        CONTINUE WHEN o.object_type = 'schema' AND o.object_identity = quote_ident(target);
        -- Rules and default privileges have no schema of their own: their
        -- address names it (the table's schema; the default ACL's schema).
        CONTINUE WHEN o.object_type = 'rule' AND o.address_names[1] = target;
        CONTINUE WHEN o.object_type = 'default acl' AND o.address_names[2] = target;
        -- A cast from or to a type of the schema, an operator class's
        -- members: their address names the type or the operator family.
        CONTINUE WHEN o.object_type = 'cast' AND (starts_with(o.address_names[1], quote_ident(target) || '.')
                                               OR starts_with(o.address_args[1], quote_ident(target) || '.'));
        CONTINUE WHEN o.object_type IN ('operator of access method', 'function of access method')
                  AND o.address_names[2] = target;
        RAISE EXCEPTION 'tenant-cleanup guard: the drop of schema % reached % %, which is outside it; nothing was dropped',
            quote_ident(target), o.object_type, o.object_identity
            USING ERRCODE = 'TCG01';
    END LOOP;
END $$;
