-- Topics: create, alter, delete, list.

CREATE OR REPLACE FUNCTION pgqueue.create_topic(
    topic text,
    description text DEFAULT '',
    retention_max_age interval DEFAULT NULL,
    retention_max_count bigint DEFAULT NULL,
    max_payload_bytes integer DEFAULT 1048576,
    dedup_window interval DEFAULT interval '1 day',
    segment_size bigint DEFAULT 1000000,
    max_topics integer DEFAULT NULL
)
RETURNS pgqueue.topic
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    refused text;  -- the CHECK a setting broke
    t pgqueue.topic;
BEGIN
    PERFORM pgqueue._check_name('topic', topic);
    IF max_topics IS NOT NULL THEN
        -- Counted under a lock that every capped creation takes, so none passes the cap.
        PERFORM pg_advisory_xact_lock(pgqueue._lock_class('caps'), 0);
        IF (SELECT count(*) FROM pgqueue.topic) >= max_topics THEN
            RAISE EXCEPTION 'the database holds % topics, the most allowed (max_topics, '
                            'PGQUEUE_MAX_TOPICS in the servers); delete unused topics first',
                            max_topics USING ERRCODE = 'PQ012';
        END IF;
    END IF;
    INSERT INTO pgqueue.topic AS x
           (name, description, retention_max_age, retention_max_count, max_payload_bytes,
            dedup_window, segment_size)
    VALUES (topic, coalesce(description, ''), retention_max_age, retention_max_count,
            max_payload_bytes, dedup_window, coalesce(segment_size, 1000000))
    ON CONFLICT (name) DO NOTHING
    RETURNING x.* INTO t;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic % already exists', quote_literal(topic) USING ERRCODE = 'PQ002';
    END IF;
    -- The first segment and the one ahead of it (see 15_segments.sql).
    PERFORM pgqueue._create_segments(t, 0, 1);
    RETURN t;
EXCEPTION WHEN check_violation THEN
    GET STACKED DIAGNOSTICS refused = CONSTRAINT_NAME;
    RAISE EXCEPTION 'invalid topic settings: %', pgqueue._setting_refused(refused)
        USING ERRCODE = 'PQ006';
END
$$;

-- NULL leaves a setting as it is; clear_retention removes both retention limits. The segment
-- size is fixed at creation: it is the layout of the topic's log.
CREATE OR REPLACE FUNCTION pgqueue.alter_topic(
    topic text,
    description text DEFAULT NULL,
    retention_max_age interval DEFAULT NULL,
    retention_max_count bigint DEFAULT NULL,
    max_payload_bytes integer DEFAULT NULL,
    dedup_window interval DEFAULT NULL,
    clear_retention boolean DEFAULT false
)
RETURNS pgqueue.topic
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    refused text;  -- the CHECK a setting broke
    t pgqueue.topic := pgqueue._find_topic(topic);
BEGIN
    UPDATE pgqueue.topic x SET
        description = coalesce(alter_topic.description, x.description),
        retention_max_age = CASE WHEN clear_retention THEN NULL
                                 ELSE coalesce(alter_topic.retention_max_age, x.retention_max_age) END,
        retention_max_count = CASE WHEN clear_retention THEN NULL
                                   ELSE coalesce(alter_topic.retention_max_count,
                                                 x.retention_max_count) END,
        max_payload_bytes = coalesce(alter_topic.max_payload_bytes, x.max_payload_bytes),
        dedup_window = coalesce(alter_topic.dedup_window, x.dedup_window)
     WHERE x.topic_id = t.topic_id
    RETURNING x.* INTO t;
    RETURN t;
EXCEPTION WHEN check_violation THEN
    GET STACKED DIAGNOSTICS refused = CONSTRAINT_NAME;
    RAISE EXCEPTION 'invalid topic settings: %', pgqueue._setting_refused(refused)
        USING ERRCODE = 'PQ006';
END
$$;

-- Deletes the topic with its messages, subscribers and their state. Waits for transactions
-- that are publishing to the topic right now (they hold its shared lock), so none of their
-- rows can outlive the topic.
CREATE OR REPLACE FUNCTION pgqueue.delete_topic(topic text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    t pgqueue.topic := pgqueue._find_topic(topic);
    k bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(pgqueue._lock_class('topic'), t.topic_id);
    DELETE FROM pgqueue.topic x WHERE x.topic_id = t.topic_id;
    DELETE FROM pgqueue.pending p WHERE p.topic_id = t.topic_id;
    -- Dropping the segments waits for every statement reading the log to finish: an admin
    -- operation may; retention does not (see pgqueue._remove_segment).
    FOR k IN SELECT s.segment FROM pgqueue.segment s WHERE s.topic_id = t.topic_id LOOP
        EXECUTE format('DROP TABLE pgqueue.%I', pgqueue._segment_table(t.topic_id, k));
    END LOOP;
    DELETE FROM pgqueue.segment s WHERE s.topic_id = t.topic_id;
    DELETE FROM pgqueue.idempotency i WHERE i.topic_id = t.topic_id;
    DELETE FROM pgqueue.delivery d WHERE d.topic_id = t.topic_id;
    DELETE FROM pgqueue.dead_letter d WHERE d.topic_id = t.topic_id;
    DELETE FROM pgqueue.subscriber s WHERE s.topic_id = t.topic_id;
    PERFORM pg_notify('pgqueue_reset', json_build_object(
        'topic', t.name, 'subscriber', NULL, 'position', NULL, 'deleted', true)::text);
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.list_topics(topic text DEFAULT NULL)
RETURNS SETOF pgqueue.topic
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT * FROM pgqueue.topic t
     WHERE list_topics.topic IS NULL OR t.name = list_topics.topic
     ORDER BY t.name
$$;
