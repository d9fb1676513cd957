-- The dead-letter list of a subscriber: messages that used up max_attempts. Listed with their
-- payload, replayed (delivered again, attempts starting over) or purged. The from/to bounds
-- are inclusive offsets; NULL means open-ended, so no bounds means all of them.

CREATE OR REPLACE FUNCTION pgqueue.list_dead_letters(
    topic text,
    subscriber text,
    after_offset bigint DEFAULT 0,
    max_messages integer DEFAULT 100
)
RETURNS TABLE (
    "offset" bigint,
    attempts integer,
    last_error text,
    dead_at timestamptz,
    payload jsonb,
    headers jsonb,
    key text,
    published_at timestamptz
)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT d."offset", d.attempts, d.last_error, d.dead_at, m.payload, m.headers, m.key,
           m.published_at
      FROM pgqueue._find_subscriber(topic, subscriber) s
      JOIN pgqueue.dead_letter d
        ON d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id
      LEFT JOIN pgqueue.message m ON m.topic_id = d.topic_id AND m."offset" = d."offset"
     WHERE d."offset" > coalesce(after_offset, 0)
     ORDER BY d."offset"
     LIMIT least(greatest(coalesce(max_messages, 100), 1), 10000)
$$;

CREATE OR REPLACE FUNCTION pgqueue.replay_dead_letters(
    topic text,
    subscriber text,
    from_offset bigint DEFAULT NULL,
    to_offset bigint DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    s pgqueue.subscriber := pgqueue._find_subscriber(topic, subscriber);
    n integer;
BEGIN
    WITH gone AS (
        DELETE FROM pgqueue.dead_letter d
         WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id
           AND d."offset" >= coalesce(from_offset, 0)
           AND d."offset" <= coalesce(to_offset, 9223372036854775807)
        RETURNING d.*
    )
    INSERT INTO pgqueue.delivery
           (topic_id, subscriber_id, "offset", state, attempt, lease_token, due_at, last_error)
    SELECT g.topic_id, g.subscriber_id, g."offset", 'retry', 0, NULL, now(), g.last_error
      FROM gone g
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('pgqueue', topic);
    END IF;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.purge_dead_letters(
    topic text,
    subscriber text,
    from_offset bigint DEFAULT NULL,
    to_offset bigint DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    s pgqueue.subscriber := pgqueue._find_subscriber(topic, subscriber);
    n integer;
BEGIN
    DELETE FROM pgqueue.dead_letter d
     WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id
       AND d."offset" >= coalesce(from_offset, 0)
       AND d."offset" <= coalesce(to_offset, 9223372036854775807);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
