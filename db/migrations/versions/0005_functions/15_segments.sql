-- Log segments: pgqueue.message is partitioned by (topic_id, "offset"); segment k of a topic
-- holds offsets [k * segment_size, (k + 1) * segment_size) in pgqueue.message_<topic_id>_<k>.
-- Retention truncates and drops whole segments, so the log never gets dead tuples.
--
-- Appends run under the topic's assignment lock and keep one empty segment ahead of the last
-- offset, so an append of up to segment_size rows never creates a table; a larger one creates
-- what it needs first. The names are built from our own integers, never from user input.

CREATE OR REPLACE FUNCTION pgqueue._segment_table(p_topic_id integer, p_segment bigint)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT format('message_%s_%s', p_topic_id, p_segment)
$$;

-- Creates the missing segments from..upto of a topic. ATTACH takes only a SHARE UPDATE
-- EXCLUSIVE lock on the log, which reads and appends do not wait for (CREATE TABLE ...
-- PARTITION OF would take ACCESS EXCLUSIVE).
CREATE OR REPLACE FUNCTION pgqueue._create_segments(t pgqueue.topic, from_segment bigint,
                                                    upto bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    k bigint;
    name text;
BEGIN
    FOR k IN SELECT g FROM generate_series(greatest(from_segment, 0), upto) g
               WHERE NOT EXISTS (SELECT 1 FROM pgqueue.segment s
                                  WHERE s.topic_id = t.topic_id AND s.segment = g)
    LOOP
        name := pgqueue._segment_table(t.topic_id, k);
        EXECUTE format('CREATE TABLE pgqueue.%I (LIKE pgqueue.message INCLUDING DEFAULTS '
                       'INCLUDING CONSTRAINTS INCLUDING STORAGE)', name);
        EXECUTE format('ALTER TABLE pgqueue.message ATTACH PARTITION pgqueue.%I '
                       'FOR VALUES FROM (%s, %s) TO (%s, %s)', name,
                       t.topic_id, k * t.segment_size, t.topic_id, (k + 1) * t.segment_size);
        INSERT INTO pgqueue.segment (topic_id, segment) VALUES (t.topic_id, k);
    END LOOP;
END
$$;

-- Before appending offsets after..after + n: make sure their segments and one more exist.
-- The common case (the append stays in the current segment) is arithmetic only.
CREATE OR REPLACE FUNCTION pgqueue._make_room(t pgqueue.topic, after bigint, n bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
    IF n > 0 AND (after + n) / t.segment_size > after / t.segment_size THEN
        PERFORM pgqueue._create_segments(t, after / t.segment_size + 1,
                                         (after + n) / t.segment_size + 1);
    END IF;
END
$$;

-- Removes one segment: DROP when the log's lock can be had at once, else TRUNCATE (which
-- locks only the segment) and leave the empty table for a later pass to drop. Both wait at
-- most lock_wait, so retention never queues every reader and writer behind itself. Returns
-- 'dropped', 'emptied' or 'busy' (nothing done: a reader holds the segment).
CREATE OR REPLACE FUNCTION pgqueue._remove_segment(p_topic_id integer, p_segment bigint,
                                                   lock_wait interval)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    name text := pgqueue._segment_table(p_topic_id, p_segment);
    old_timeout text := current_setting('lock_timeout');
    outcome text := 'busy';
BEGIN
    PERFORM set_config('lock_timeout', (extract(epoch FROM lock_wait) * 1000)::bigint || 'ms',
                       true);
    BEGIN
        EXECUTE format('DROP TABLE pgqueue.%I', name);
        DELETE FROM pgqueue.segment s WHERE s.topic_id = p_topic_id AND s.segment = p_segment;
        outcome := 'dropped';
    EXCEPTION WHEN lock_not_available THEN
        BEGIN
            EXECUTE format('TRUNCATE pgqueue.%I', name);
            UPDATE pgqueue.segment s SET emptied = true
             WHERE s.topic_id = p_topic_id AND s.segment = p_segment;
            outcome := 'emptied';
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END;
    PERFORM set_config('lock_timeout', old_timeout, true);
    RETURN outcome;
END
$$;
