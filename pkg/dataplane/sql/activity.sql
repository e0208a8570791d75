-- One tenant's activity: {{schema}} is the quoted schema name; {{craft}} is the
-- build_session expression, or NULL when the tenant never used Craft;
-- {{pairs}} is empty, or (for a single tenant) a fifth column counting its
-- connector-credential pairs, so that the same read serves the drain check.
SELECT (SELECT max(time_sent) FROM {{schema}}.chat_message WHERE message_type = 'USER'),
       {{craft}},
       (SELECT count(*) FROM {{schema}}.document),
       (SELECT count(*) FROM {{schema}}."user")
       {{pairs}}
