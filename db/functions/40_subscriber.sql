-- Subscribers: durable cursors on a topic (a Kafka consumer group). Several subscribers of one
-- topic each receive every message; the message is stored once.

-- Returned rows are pgqueue.subscriber_info (a type defined by the migrations).

CREATE OR REPLACE FUNCTION pgqueue._subscriber_info(s pgqueue.subscriber)
RETURNS pgqueue.subscriber_info
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT ROW(t.name, s.name, s.subscriber_id, pgqueue._position(s), s.filter - 'like',
               s.max_attempts, s.backoff_base, s.backoff_max, s.ephemeral,
               s.created_at, s.epoch)::pgqueue.subscriber_info
      FROM pgqueue.topic t WHERE t.topic_id = s.topic_id
$$;

-- start_* say where the subscriber begins (one of them; default: latest, i.e. only messages
-- published from now on). See pgqueue._resolve_position for their meaning. owner: for an
-- ephemeral subscriber, the key of the session advisory lock its creator holds while it lives
-- (see pgqueue.remove_orphans).
CREATE OR REPLACE FUNCTION pgqueue.create_subscriber(
    topic text,
    subscriber text,
    start_edge text DEFAULT NULL,
    start_offset bigint DEFAULT NULL,
    start_time timestamptz DEFAULT NULL,
    filter jsonb DEFAULT NULL,
    max_attempts integer DEFAULT 5,
    backoff_base interval DEFAULT interval '1 second',
    backoff_max interval DEFAULT interval '5 minutes',
    ephemeral boolean DEFAULT false,
    owner integer DEFAULT NULL,
    max_subscribers integer DEFAULT NULL
)
RETURNS pgqueue.subscriber_info
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    refused text;  -- the CHECK a setting broke
    t pgqueue.topic := pgqueue._find_topic(topic);
    s pgqueue.subscriber;
    start_position bigint;
BEGIN
    PERFORM pgqueue._check_name('subscriber', subscriber);
    IF num_nonnulls(start_edge, start_offset, start_time) = 0 THEN
        start_edge := 'latest';
    END IF;
    start_position := pgqueue._resolve_position(t.topic_id, NULL, start_offset, start_edge,
                                                start_time, NULL, NULL);
    -- max_subscribers caps the durable ones (ephemeral subscribers live with a connection).
    IF max_subscribers IS NOT NULL AND NOT ephemeral THEN
        PERFORM pg_advisory_xact_lock(pgqueue._lock_class('caps'), t.topic_id);
        IF (SELECT count(*) FROM pgqueue.subscriber x
             WHERE x.topic_id = t.topic_id AND NOT x.ephemeral) >= max_subscribers THEN
            RAISE EXCEPTION 'topic % has % durable subscribers, the most allowed '
                            '(max_subscribers, PGQUEUE_MAX_SUBSCRIBERS_PER_TOPIC in the '
                            'servers); delete unused ones first',
                            quote_literal(topic), max_subscribers USING ERRCODE = 'PQ012';
        END IF;
    END IF;
    INSERT INTO pgqueue.subscriber AS x
           (topic_id, name, cursor, filter, max_attempts, backoff_base, backoff_max, ephemeral,
            owner)
    VALUES (t.topic_id, subscriber, start_position, pgqueue._compile_filter(filter),
            coalesce(max_attempts, 5), coalesce(backoff_base, interval '1 second'),
            coalesce(backoff_max, interval '5 minutes'), coalesce(ephemeral, false),
            CASE WHEN ephemeral THEN owner END)
    ON CONFLICT (topic_id, name) DO NOTHING
    RETURNING x.* INTO s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber % of topic % already exists',
            quote_literal(subscriber), quote_literal(topic) USING ERRCODE = 'PQ004';
    END IF;
    RETURN pgqueue._subscriber_info(s);
EXCEPTION WHEN check_violation THEN
    GET STACKED DIAGNOSTICS refused = CONSTRAINT_NAME;
    RAISE EXCEPTION 'invalid subscriber settings: %', pgqueue._setting_refused(refused)
        USING ERRCODE = 'PQ006';
END
$$;

-- NULL leaves a setting as it is; clear_filter removes the filter.
CREATE OR REPLACE FUNCTION pgqueue.alter_subscriber(
    topic text,
    subscriber text,
    filter jsonb DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    backoff_base interval DEFAULT NULL,
    backoff_max interval DEFAULT NULL,
    clear_filter boolean DEFAULT false
)
RETURNS pgqueue.subscriber_info
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    refused text;  -- the CHECK a setting broke
    s pgqueue.subscriber := pgqueue._find_subscriber(topic, subscriber);
BEGIN
    UPDATE pgqueue.subscriber x SET
        filter = CASE WHEN clear_filter THEN NULL
                      ELSE coalesce(pgqueue._compile_filter(alter_subscriber.filter), x.filter) END,
        max_attempts = coalesce(alter_subscriber.max_attempts, x.max_attempts),
        backoff_base = coalesce(alter_subscriber.backoff_base, x.backoff_base),
        backoff_max = coalesce(alter_subscriber.backoff_max, x.backoff_max)
     WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
    RETURNING x.* INTO s;
    RETURN pgqueue._subscriber_info(s);
EXCEPTION WHEN check_violation THEN
    GET STACKED DIAGNOSTICS refused = CONSTRAINT_NAME;
    RAISE EXCEPTION 'invalid subscriber settings: %', pgqueue._setting_refused(refused)
        USING ERRCODE = 'PQ006';
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.delete_subscriber(topic text, subscriber text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    s pgqueue.subscriber := pgqueue._find_subscriber(topic, subscriber);
BEGIN
    DELETE FROM pgqueue.subscriber x
     WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id;
    DELETE FROM pgqueue.delivery d
     WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id;
    DELETE FROM pgqueue.dead_letter d
     WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id;
    RETURN true;
END
$$;

-- Removes ephemeral subscribers whose creator is gone: a server killed without a clean
-- shutdown never deletes the ephemeral subscribers of its WebSocket connections. Each creator
-- holds a shared session advisory lock ('owner', its key) on a connection that lives as long as
-- it does; when nobody holds it, the subscriber is an orphan. A database restart frees every such
-- lock until the creators reconnect, so an orphan is removed only after it has been seen
-- orphaned for `grace` (a pass that finds its owner back clears the mark). Returns how many
-- were removed. Servers run it beside retention.
CREATE OR REPLACE FUNCTION pgqueue.remove_orphans(grace interval DEFAULT interval '1 minute')
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    s pgqueue.subscriber;
    removed integer := 0;
BEGIN
    FOR s IN SELECT * FROM pgqueue.subscriber x
              WHERE x.ephemeral AND x.owner IS NOT NULL
              ORDER BY x.subscriber_id
                FOR UPDATE SKIP LOCKED
    LOOP
        IF NOT pg_try_advisory_xact_lock(pgqueue._lock_class('owner'), s.owner) THEN
            IF s.orphaned_since IS NOT NULL THEN  -- its owner is back
                UPDATE pgqueue.subscriber x SET orphaned_since = NULL
                 WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id;
            END IF;
        ELSIF s.orphaned_since IS NULL THEN
            UPDATE pgqueue.subscriber x SET orphaned_since = now()
             WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id;
        ELSIF s.orphaned_since <= now() - grace THEN
            DELETE FROM pgqueue.subscriber x
             WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id;
            DELETE FROM pgqueue.delivery d
             WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id;
            DELETE FROM pgqueue.dead_letter d
             WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id;
            removed := removed + 1;
        END IF;
    END LOOP;
    RETURN removed;
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.list_subscribers(topic text DEFAULT NULL)
RETURNS SETOF pgqueue.subscriber_info
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT i.*
      FROM pgqueue.subscriber s
      JOIN pgqueue.topic t ON t.topic_id = s.topic_id
     CROSS JOIN LATERAL pgqueue._subscriber_info(s) i
     WHERE list_subscribers.topic IS NULL OR t.name = list_subscribers.topic
     ORDER BY t.name, s.name
$$;

-- Finds a subscriber by its numeric id (the v1 API and HTTP pull address subscribers so).
CREATE OR REPLACE FUNCTION pgqueue.subscriber_by_id(subscriber_id bigint)
RETURNS pgqueue.subscriber_info
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    s pgqueue.subscriber;
BEGIN
    SELECT * INTO s FROM pgqueue.subscriber x WHERE x.subscriber_id = subscriber_by_id.subscriber_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscriber % does not exist', subscriber_id USING ERRCODE = 'PQ003';
    END IF;
    RETURN pgqueue._subscriber_info(s);
END
$$;
