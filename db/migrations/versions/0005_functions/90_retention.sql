-- Retention: removes a topic's oldest segments once every offset in them is past the topic's
-- retention (retention_max_count newer messages exist, or the segment's last message is older
-- than retention_max_age), then moves lagging subscribers up to the first retained offset.
-- Whole segments only, so up to segment_size messages past retention may remain; the segment
-- that holds the newest message is never removed (its row carries the assignment state).
-- Run it periodically: the server does (PGQUEUE_RETENTION_INTERVAL), or call it from cron.

-- Whether every offset of a segment is past the topic's retention: by count, when each has
-- retention_max_count newer ones; by age, when its last message is older than
-- retention_max_age (offsets follow commit order, so earlier ones were published no later than
-- the longest transaction that published them).
CREATE OR REPLACE FUNCTION pgqueue._segment_expired(t pgqueue.topic, k bigint, last_off bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    last_at timestamptz;
BEGIN
    IF t.retention_max_count IS NOT NULL
       AND (k + 1) * t.segment_size - 1 <= last_off - t.retention_max_count THEN
        RETURN true;
    END IF;
    IF t.retention_max_age IS NULL THEN
        RETURN false;
    END IF;
    SELECT m.published_at INTO last_at FROM pgqueue.message m
     WHERE m.topic_id = t.topic_id AND m."offset" < (k + 1) * t.segment_size
     ORDER BY m."offset" DESC LIMIT 1;
    RETURN last_at < now() - t.retention_max_age;
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.enforce_retention(
    topic text DEFAULT NULL,
    lock_wait interval DEFAULT interval '200 milliseconds'
)
RETURNS TABLE (topic_name text, segments_removed integer, messages_removed bigint,
               first_offset bigint, subscribers_moved integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    t pgqueue.topic;
    seg pgqueue.segment;
    last_off bigint;
    removed integer;
    removed_messages bigint;
    first_kept bigint;
    moved integer;
    outcome text;
    mover record;
    candidate bigint;
    old_timeout text := current_setting('lock_timeout');
BEGIN
    IF enforce_retention.topic IS NOT NULL THEN
        PERFORM pgqueue._find_topic(enforce_retention.topic);
    END IF;
    FOR t IN
        SELECT * FROM pgqueue.topic x
         WHERE (enforce_retention.topic IS NULL OR x.name = enforce_retention.topic)
           AND (x.retention_max_age IS NOT NULL OR x.retention_max_count IS NOT NULL)
         ORDER BY x.name
    LOOP
        -- One pass per topic at a time (every server process runs them); a busy topic is
        -- left to the pass already at work on it.
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(pgqueue._lock_class('retention'),
                                                    t.topic_id);
        removed := 0;
        removed_messages := 0;
        moved := 0;
        last_off := pgqueue._last_offset(t.topic_id);
        -- First, without locking anything, how far this pass could go: when no segment is
        -- past retention the topic costs a few index probes and touches no subscriber, and
        -- only subscribers behind that point (the ones that may move) are locked.
        candidate := NULL;
        FOR seg IN
            SELECT * FROM pgqueue.segment s
             WHERE s.topic_id = t.topic_id AND (s.segment + 1) * t.segment_size <= last_off
             ORDER BY s.segment
        LOOP
            EXIT WHEN NOT seg.emptied AND NOT pgqueue._segment_expired(t, seg.segment, last_off);
            candidate := (seg.segment + 1) * t.segment_size;
        END LOOP;
        -- Every lock the pass takes waits at most lock_wait, and it takes those subscriber
        -- rows before any lock on the log: waiting for a row lock while holding the log's
        -- ACCESS EXCLUSIVE would stall every publish and claim of every topic behind one
        -- transaction left open on a subscriber (and a reader of the log would deadlock with
        -- it). When something is held, the topic's pass is rolled back to here and retried
        -- next time.
        IF candidate IS NOT NULL THEN
            BEGIN
                PERFORM set_config('lock_timeout',
                                   (extract(epoch FROM lock_wait) * 1000)::bigint || 'ms', true);
                PERFORM 1 FROM pgqueue.subscriber x
                 WHERE x.topic_id = t.topic_id AND x.cursor < candidate - 1
                 ORDER BY x.subscriber_id FOR UPDATE;
                first_kept := NULL;
                FOR seg IN
                    SELECT * FROM pgqueue.segment s
                     WHERE s.topic_id = t.topic_id AND (s.segment + 1) * t.segment_size <= last_off
                     ORDER BY s.segment
                LOOP
                    EXIT WHEN seg.segment * t.segment_size >= candidate;
                    outcome := pgqueue._remove_segment(t.topic_id, seg.segment, lock_wait);
                    -- A reader holds it: this segment and the newer ones wait for the next pass.
                    EXIT WHEN outcome = 'busy';
                    IF NOT seg.emptied THEN
                        removed := removed + 1;
                        -- Offsets are dense and start at 1.
                        removed_messages := removed_messages + (seg.segment + 1) * t.segment_size
                                            - greatest(seg.segment * t.segment_size, 1);
                    END IF;
                    first_kept := (seg.segment + 1) * t.segment_size;
                END LOOP;
                IF first_kept IS NOT NULL THEN
                    -- Subscribers behind the first retained offset move up to it, as a reset does:
                    -- a new epoch, and a notification, so their live consumers hear of it and drop
                    -- what they hold (its leases are gone with the offsets).
                    FOR mover IN
                        UPDATE pgqueue.subscriber x
                           SET cursor = first_kept - 1, epoch = x.epoch + 1,
                               reset_position = first_kept - 1
                         WHERE x.topic_id = t.topic_id AND x.cursor < first_kept - 1
                        RETURNING x.name, x.epoch
                    LOOP
                        moved := moved + 1;
                        PERFORM pg_notify('pgqueue_reset', json_build_object(
                            'topic', t.name, 'subscriber', mover.name, 'position', first_kept - 1,
                            'epoch', mover.epoch)::text);
                    END LOOP;
                    DELETE FROM pgqueue.delivery d
                     WHERE d.topic_id = t.topic_id AND d."offset" < first_kept;
                    DELETE FROM pgqueue.dead_letter d
                     WHERE d.topic_id = t.topic_id AND d."offset" < first_kept;
                END IF;
                PERFORM set_config('lock_timeout', old_timeout, true);
            EXCEPTION WHEN lock_not_available THEN
                removed := 0;
                removed_messages := 0;
                moved := 0;
            END;
        END IF;
        RETURN QUERY SELECT t.name, removed, removed_messages,
                            coalesce(pgqueue._first_offset(t.topic_id), last_off + 1), moved;
    END LOOP;
END
$$;

-- After a logical restore (pg_dump, then psql or pg_restore) into another cluster. The round
-- snapshots recorded in the log and the transaction ids of pending publishes count the old
-- cluster's transactions, which the new one has not reached: its rounds would wait for them
-- for good, and in-transaction publishes would never get offsets. A dump holds only committed
-- rows, so every pending row is committed; forget the old snapshots and date the pending rows
-- in the past. Run once, as the owner or a superuser, before the restored database serves.
-- Not granted to pgqueue_runtime: on a live database it would renumber nothing but could let
-- a round overtake a publish still in progress.
CREATE OR REPLACE FUNCTION pgqueue.after_restore()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
    UPDATE pgqueue.message SET round_snapshot = NULL WHERE round_snapshot IS NOT NULL;
    UPDATE pgqueue.pending SET xid = '3'::xid8
     WHERE xid >= pg_snapshot_xmax(pg_current_snapshot());
END
$$;
