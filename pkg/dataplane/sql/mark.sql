-- Mark a tenant for deletion, in one transaction: attempts that have not
-- started are cancelled; running ones are asked to stop (Onyx's indexing
-- watchdog ends them, otherwise deletion of their pair stays blocked); every
-- connector-credential pair, the default one included, becomes DELETING.
WITH canceled AS (
    UPDATE {{schema}}.index_attempt SET status = 'CANCELED', time_updated = now()
    WHERE status = 'NOT_STARTED'
    RETURNING 1
), stopping AS (
    UPDATE {{schema}}.index_attempt SET cancellation_requested = true, time_updated = now()
    WHERE status = 'IN_PROGRESS' AND cancellation_requested IS NOT TRUE
    RETURNING 1
), deleting AS (
    UPDATE {{schema}}.connector_credential_pair SET status = 'DELETING'
    WHERE status <> 'DELETING'
    RETURNING 1
)
SELECT (SELECT count(*) FROM canceled), (SELECT count(*) FROM stopping), (SELECT count(*) FROM deleting),
       (SELECT count(*) FROM {{schema}}.connector_credential_pair)
