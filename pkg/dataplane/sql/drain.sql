-- Drain check: connector-credential pairs left, and documents left counted up
-- to $1 (enough to compare with DRAIN_MAX_LEFTOVER_DOCS without a full count).
SELECT (SELECT count(*) FROM {{schema}}.connector_credential_pair),
       (SELECT count(*) FROM (SELECT 1 FROM {{schema}}.document LIMIT $1) d)
