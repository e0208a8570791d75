-- Reserve a cleanup for tenant $1 under the caps $2 per hour and $3 per day
-- (0 = no cap), inside a transaction that holds the quota advisory lock. A
-- tenant that already holds a reservation keeps it. Returns whether the
-- tenant may be cleaned now (and then has reserved its place) and, if not,
-- when the oldest reservation in the full window frees a place.
WITH gc AS (
    DELETE FROM tenant_cleanup.quota WHERE reserved_at < now() - interval '2 days'
), mine AS (
    SELECT 1 FROM tenant_cleanup.quota WHERE tenant_id = $1 AND reserved_at > now() - interval '1 day'
), used AS (
    SELECT count(*) FILTER (WHERE reserved_at > now() - interval '1 hour') AS hour,
           count(*) AS day,
           min(reserved_at) FILTER (WHERE reserved_at > now() - interval '1 hour') AS oldest_hour,
           min(reserved_at) AS oldest_day
    FROM tenant_cleanup.quota WHERE reserved_at > now() - interval '1 day'
), verdict AS (
    SELECT EXISTS (SELECT 1 FROM mine)
        OR (($2 = 0 OR hour < $2) AND ($3 = 0 OR day < $3)) AS ok,
           CASE WHEN $3 > 0 AND day >= $3 THEN 'daily' WHEN $2 > 0 AND hour >= $2 THEN 'hourly' ELSE '' END AS cap,
           CASE WHEN $3 > 0 AND day >= $3 THEN oldest_day + interval '1 day'
                WHEN $2 > 0 AND hour >= $2 THEN oldest_hour + interval '1 hour' END AS free_at,
           hour, day
    FROM used
), reserve AS (
    -- The reservation itself, when granted; an existing one less than a day
    -- old is kept as it was.
    INSERT INTO tenant_cleanup.quota (tenant_id, reserved_at)
    SELECT $1, now() FROM verdict WHERE ok
    ON CONFLICT (tenant_id) DO UPDATE SET reserved_at = CASE
        WHEN tenant_cleanup.quota.reserved_at > now() - interval '1 day' THEN tenant_cleanup.quota.reserved_at
        ELSE now() END
)
SELECT ok, cap, free_at, hour, day FROM verdict
