-- Stats and browsing.

CREATE OR REPLACE FUNCTION pgqueue.topic_stats(topic_name text DEFAULT NULL)
RETURNS TABLE (
    topic text,
    messages bigint,
    first_offset bigint,
    last_offset bigint,
    bytes bigint,
    pending bigint,
    subscribers bigint
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
    RETURN QUERY
        SELECT t.name,
               coalesce(e.last_offset - e.first_offset + 1, 0),
               e.first_offset,
               coalesce(e.last_offset, 0),
               -- The segments' size on disk (rows, indexes, TOAST), read from the catalog:
               -- summing the rows' sizes read the whole log (265 ms per 500,000 messages).
               (SELECT coalesce(sum(pg_total_relation_size(
                           to_regclass(format('pgqueue.%I',
                                              pgqueue._segment_table(t.topic_id, g.segment))))),
                                0)::bigint
                  FROM pgqueue.segment g WHERE g.topic_id = t.topic_id),
               (SELECT count(*) FROM pgqueue.pending p WHERE p.topic_id = t.topic_id),
               (SELECT count(*) FROM pgqueue.subscriber s WHERE s.topic_id = t.topic_id)
          FROM pgqueue.topic t
         CROSS JOIN LATERAL (
               SELECT pgqueue._first_offset(t.topic_id) AS first_offset,
                      nullif(pgqueue._last_offset(t.topic_id), 0) AS last_offset) e
         WHERE topic_name IS NULL OR t.name = topic_name
         ORDER BY t.name;
    -- Offsets shown are offsets kept: see pgqueue._flush_at_commit.
    PERFORM pgqueue._flush_at_commit();
END
$$;

-- lag: messages past the position; lag_seconds: how long the first of them has waited;
-- in_flight: leased now; expired: leases that ran out, to be claimed again; retrying: waiting
-- for a retry or a delayed first delivery; dead: in the dead-letter list.
CREATE OR REPLACE FUNCTION pgqueue.subscriber_stats(
    topic_name text DEFAULT NULL,
    subscriber_name text DEFAULT NULL
)
RETURNS TABLE (
    topic text,
    subscriber text,
    subscriber_id bigint,
    "position" bigint,
    last_offset bigint,
    lag bigint,
    lag_seconds double precision,
    in_flight bigint,
    expired bigint,
    retrying bigint,
    dead bigint,
    ephemeral boolean
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
    RETURN QUERY
        SELECT t.name, s.name, s.subscriber_id, p.pos, p.last_off, p.last_off - p.pos,
               -- How long the oldest message not yet done has waited (0 when none waits).
               coalesce((SELECT extract(epoch FROM now() - m.published_at)::double precision
                           FROM pgqueue.message m
                          WHERE m.topic_id = s.topic_id AND m."offset" = p.pos + 1), 0),
               (SELECT count(*) FROM pgqueue.delivery d
                 WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id
                   AND d.state = 'leased' AND d.due_at > now()),
               (SELECT count(*) FROM pgqueue.delivery d
                 WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id
                   AND d.state = 'leased' AND d.due_at <= now()),
               (SELECT count(*) FROM pgqueue.delivery d
                 WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id
                   AND d.state = 'retry'),
               (SELECT count(*) FROM pgqueue.dead_letter d
                 WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id),
               s.ephemeral
          FROM pgqueue.subscriber s
          JOIN pgqueue.topic t ON t.topic_id = s.topic_id
         CROSS JOIN LATERAL (
               SELECT pgqueue._position(s) AS pos, pgqueue._last_offset(s.topic_id) AS last_off) p
         WHERE (topic_name IS NULL OR t.name = topic_name)
           AND (subscriber_name IS NULL OR s.name = subscriber_name)
         ORDER BY t.name, s.name;
    PERFORM pgqueue._flush_at_commit();
END
$$;

-- Reads the log from an offset without claiming anything (browsing, replay tools). assign
-- as for pgqueue.claim: whether committed in-transaction publishes may get their offsets first.
-- Nothing it returns can be taken back by a crash: its commit waits for the flush of what it
-- saw (see pgqueue._flush_at_commit), so call it outside a long transaction.
CREATE OR REPLACE FUNCTION pgqueue.read_messages(
    topic text,
    from_offset bigint DEFAULT 1,
    max_messages integer DEFAULT 100,
    assign boolean DEFAULT NULL
)
RETURNS TABLE (
    "offset" bigint,
    message_id bigint,
    payload jsonb,
    headers jsonb,
    key text,
    correlation_id text,
    reply_to text,
    published_at timestamptz,
    available_at timestamptz
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    t pgqueue.topic := pgqueue._find_topic(topic);
BEGIN
    IF pgqueue._may_assign(assign) THEN
        PERFORM pgqueue._assign(t, false);
    END IF;
    RETURN QUERY
        SELECT m."offset", m.message_id, m.payload, m.headers, m.key, m.correlation_id,
               m.reply_to, m.published_at, m.available_at
          FROM pgqueue.message m
         WHERE m.topic_id = t.topic_id
           AND m."offset" >= coalesce(from_offset, 1)
         ORDER BY m."offset"
         LIMIT least(greatest(coalesce(max_messages, 100), 1), 10000);
    PERFORM pgqueue._flush_at_commit();
END
$$;
