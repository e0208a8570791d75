-- Every schema that looks like a tenant (the caller validates the names), with
-- the tables the cleanup reads that it has.
SELECT n.nspname::text,
       coalesce(array_agg(c.relname::text) FILTER (WHERE c.relname IS NOT NULL), '{}')
FROM pg_namespace n
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
    AND c.relname IN ('chat_message', 'build_session', 'document', 'user',
                      'connector_credential_pair', 'index_attempt')
WHERE n.nspname LIKE 'tenant\_%'
GROUP BY n.nspname
ORDER BY n.nspname
