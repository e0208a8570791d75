-- Every schema that looks like a tenant (the caller validates the names), with
-- the tables the cleanup reads that it has. Each schema's tables are found by
-- index lookups (pg_class by name and namespace), so only the catalog pages
-- holding those tables are read, not every page of pg_class.
SELECT n.nspname::text, n.oid::int8,
       ARRAY(SELECT c.relname::text FROM pg_class c
             WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
               AND c.relname IN ('chat_message', 'build_session', 'document', 'user',
                                 'connector_credential_pair', 'index_attempt'))
FROM pg_namespace n
WHERE n.nspname LIKE 'tenant\_%' AND n.nspname <> 'tenant_cleanup' AND n.nspname NOT LIKE 'tenant\_cleanup\_dropping\_%' -- this pipeline's own (ensure.sql)
ORDER BY n.nspname::text COLLATE "C" -- byte order, which the analyzer merges the shards by
