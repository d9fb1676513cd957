-- Online offset reset, for one subscriber or every subscriber of a topic. Consumers keep
-- running: the reset clears the subscriber's in-flight claims and pending retries (their late
-- acks are refused), moves its cursor, and sends a 'pgqueue_reset' notification so live
-- connections switch over at once. Give exactly one target (see pgqueue._resolve_position).
-- dry_run reports the new positions and changes nothing; if_epoch (see subscriber_info.epoch)
-- applies the reset only if the subscriber was not reset since.

CREATE OR REPLACE FUNCTION pgqueue.reset(
    topic text,
    subscriber text DEFAULT NULL,
    to_offset bigint DEFAULT NULL,
    to_edge text DEFAULT NULL,
    to_time timestamptz DEFAULT NULL,
    ago interval DEFAULT NULL,
    shift bigint DEFAULT NULL,
    dry_run boolean DEFAULT false,
    if_epoch bigint DEFAULT NULL,
    quiet boolean DEFAULT false
)
RETURNS SETOF pgqueue.reset_result
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    t pgqueue.topic := pgqueue._find_topic(topic);
    s pgqueue.subscriber;
    old_position bigint;
    new_position bigint;
BEGIN
    IF subscriber IS NOT NULL THEN
        PERFORM pgqueue._find_subscriber(topic, subscriber);
    END IF;
    -- Locking the rows waits out claims in progress, so none hands out pre-reset offsets after.
    FOR s IN
        SELECT * FROM pgqueue.subscriber x
         WHERE x.topic_id = t.topic_id AND (reset.subscriber IS NULL OR x.name = reset.subscriber)
         ORDER BY x.name
           FOR UPDATE
    LOOP
        old_position := pgqueue._position(s);
        new_position := pgqueue._resolve_position(t.topic_id, old_position, to_offset, to_edge,
                                                  to_time, ago, shift);
        -- if_epoch: apply only if nobody reset the subscriber since the caller looked (a
        -- stale "move my position" must not undo a newer reset).
        IF NOT dry_run AND (if_epoch IS NULL OR if_epoch = s.epoch) THEN
            -- quiet: a consumer moving its own position (the v1 ack) is not a reset that
            -- invalidates what others read, so the epoch stays and nobody is told.
            UPDATE pgqueue.subscriber x
               SET cursor = new_position,
                   epoch = x.epoch + CASE WHEN quiet THEN 0 ELSE 1 END,
                   reset_position = CASE WHEN quiet THEN x.reset_position ELSE new_position END
             WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id;
            DELETE FROM pgqueue.delivery d
             WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id;
            IF NOT quiet THEN
                PERFORM pg_notify('pgqueue_reset', json_build_object(
                    'topic', t.name, 'subscriber', s.name, 'position', new_position,
                    'epoch', s.epoch + 1)::text);
            END IF;
        END IF;
        RETURN NEXT ROW(t.name, s.name, old_position, new_position,
                        NOT dry_run AND (if_epoch IS NULL OR if_epoch = s.epoch)
                        )::pgqueue.reset_result;
    END LOOP;
END
$$;
