-- What marking (mark.sql) would still change in a tenant: index attempts not
-- started or running without a cancellation request, and pairs not DELETING.
-- Read without locks: a hint for the marker, which marks under lock anyway.
SELECT (SELECT count(*) FROM {{schema}}.index_attempt
        WHERE status = 'NOT_STARTED' OR (status = 'IN_PROGRESS' AND cancellation_requested IS NOT TRUE))
     + (SELECT count(*) FROM {{schema}}.connector_credential_pair WHERE status <> 'DELETING')
