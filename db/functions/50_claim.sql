-- Claiming, acking, nacking and extending leases.
--
-- A subscriber's unfinished work is its delivery rows: 'leased' (handed to a consumer until
-- due_at) or 'retry' (claimable again at due_at; attempt 0 for a delayed message that was never
-- delivered). Everything at or below the subscriber's cursor without a delivery row is done.
-- Competing consumers take due rows with FOR UPDATE SKIP LOCKED and new messages past the
-- cursor under the subscriber row's lock, so claims are disjoint.
--
-- These functions run with sequential scans, bitmap scans, hash and merge joins off: every
-- statement is written for index lookups and nested loops, and queue tables mislead the
-- planner. delivery is often empty when a plan is cached, which makes a sequential scan look
-- free, and the plan is kept while the table fills up; a fresh log segment has no statistics,
-- which made "every row of the topic, then hash join" look cheaper than 100 key lookups (a
-- drain ran at half speed until the next VACUUM).

CREATE OR REPLACE FUNCTION pgqueue._check_lease(lease interval)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
    IF lease IS NULL OR lease <= interval '0' OR lease > interval '1 day' THEN
        RAISE EXCEPTION 'a lease is more than 0 and at most 1 day, got %',
            coalesce(lease::text, 'NULL') USING ERRCODE = 'PQ006';
    END IF;
END
$$;

-- Claims up to max_messages for a lease. Returns them in offset order, each with its attempt
-- number and the lease token that ack, nack and extend_lease must present. ack_offsets and
-- ack_tokens (as for pgqueue.ack) ack earlier messages in the same transaction: a consumer
-- that acks one batch as it claims the next pays one commit per batch, not two.
-- assign: whether this claim may first give committed in-transaction publishes their offsets
-- (see pgqueue._may_assign). Pass true when the claim runs in a transaction of its own, false
-- (or leave NULL) inside a longer transaction: a round's lock lasts until commit.
-- consumer: who takes the lease, as list_leases shows it (a WebSocket client, a worker).
CREATE OR REPLACE FUNCTION pgqueue.claim(
    topic text,
    subscriber text,
    max_messages integer DEFAULT 1,
    lease interval DEFAULT interval '30 seconds',
    ack_offsets bigint[] DEFAULT NULL,
    ack_tokens bigint[] DEFAULT NULL,
    assign boolean DEFAULT NULL,
    consumer text DEFAULT NULL
)
RETURNS SETOF pgqueue.claimed_message
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    s pgqueue.subscriber := pgqueue._find_subscriber(topic, subscriber);
    t pgqueue.topic;
    token bigint;
    relet bigint[];
    relet_attempts integer[];
    expired bigint[];
    need integer;
    cur bigint;
    filt jsonb;
    scan_limit integer;
    fresh bigint[];
    delayed bigint[];
    delayed_at timestamptz[];
    new_cursor bigint;
    start_cursor bigint;
    wait_until timestamptz;
    scanned bigint := 0;
    epoch bigint;
    reset_position bigint;
BEGIN
    IF max_messages IS NULL OR max_messages < 1 OR max_messages > 10000 THEN
        RAISE EXCEPTION 'max_messages is 1 to 10000, got %', coalesce(max_messages::text, 'NULL')
            USING ERRCODE = 'PQ006';
    END IF;
    PERFORM pgqueue._check_lease(lease);
    SELECT * INTO t FROM pgqueue.topic x WHERE x.topic_id = s.topic_id;
    IF ack_offsets IS NOT NULL AND cardinality(ack_offsets) > 0 THEN
        PERFORM pgqueue.ack(topic, subscriber, ack_offsets, ack_tokens);
    END IF;

    -- Give committed in-transaction publishes their offsets first, unless another round is
    -- running (its NOTIFY brings us back) or this claim may be part of a longer transaction.
    IF pgqueue._may_assign(assign) THEN
        PERFORM pgqueue._assign(t, false);
    END IF;
    token := nextval('pgqueue.lease_token_seq');

    -- 1. Due rows: expired leases, scheduled retries and released claims. One that has used
    --    its last allowed attempt goes to the dead-letter list instead: max_attempts is never
    --    exceeded, however the earlier attempts ended (a lease running out, a nack, a release).
    SELECT array_agg(d."offset" ORDER BY d."offset") FILTER (WHERE d.attempt < s.max_attempts),
           array_agg(d."offset") FILTER (WHERE d.attempt >= s.max_attempts)
      INTO relet, expired
      FROM (SELECT x."offset", x.state, x.attempt
              FROM pgqueue.delivery x
             WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
               AND x.due_at <= now()
             ORDER BY x."offset"
             LIMIT max_messages
               FOR UPDATE SKIP LOCKED) d;
    IF expired IS NOT NULL THEN
        PERFORM pgqueue._bury(s, expired, NULL);
    END IF;
    IF relet IS NOT NULL THEN
        WITH again AS (
            UPDATE pgqueue.delivery x
               SET state = 'leased', attempt = x.attempt + 1, lease_token = token,
                   due_at = now() + lease, consumer = claim.consumer, leased_at = now()
             WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
               AND x."offset" = ANY (relet)
            RETURNING x."offset", x.attempt
        )
        SELECT array_agg(a."offset" ORDER BY a."offset"), array_agg(a.attempt ORDER BY a."offset")
          INTO relet, relet_attempts FROM again a;
    END IF;

    -- 2. New messages past the cursor. The stale cursor from the lookup is enough to skip the
    --    lock when nothing is new (it only moves backwards on a reset, which wakes consumers).
    --    Lock order: reset locks the subscriber row, then delivery rows. Holding delivery rows
    --    from step 1, we must not wait for the subscriber row (deadlock), so we only try it.
    need := max_messages - coalesce(cardinality(relet), 0);
    IF need > 0 AND pgqueue._last_offset(s.topic_id) > s.cursor THEN
        IF relet IS NULL AND expired IS NULL THEN
            -- Competing claims take turns here, for a millisecond each. A transaction that
            -- keeps the row (a claim, reset or alter_subscriber inside a longer transaction)
            -- is waited for at most half a second: this claim then hands out only due rows,
            -- and its consumer comes back at its next wake-up. Polled with SKIP LOCKED, not
            -- a lock_timeout caught in an exception block: that block's subtransaction
            -- would turn every claim's cursor update into a MultiXact.
            wait_until := clock_timestamp() + interval '500 milliseconds';
            LOOP
                SELECT x.cursor, x.filter, x.epoch, x.reset_position
                  INTO cur, filt, epoch, reset_position
                  FROM pgqueue.subscriber x
                 WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
                   FOR UPDATE SKIP LOCKED;
                EXIT WHEN FOUND OR clock_timestamp() > wait_until;
                PERFORM pg_sleep(0.001);
            END LOOP;
        ELSE
            SELECT x.cursor, x.filter, x.epoch, x.reset_position
              INTO cur, filt, epoch, reset_position
              FROM pgqueue.subscriber x
             WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
               FOR UPDATE SKIP LOCKED;
        END IF;
    END IF;
    IF cur IS NOT NULL THEN
        -- A filter may reject most rows: look further, and move the cursor past them anyway.
        -- The scan goes on, a chunk at a time, until it finds a message to deliver now or
        -- reaches the end of the log (thousands of non-matching or delayed messages ahead
        -- used to make claims come back empty, which looks like "caught up"). One claim
        -- scans at most 100,000 messages and keeps the cursor it reached; while the cursor is
        -- behind the log's end, seconds_until_due says 0, so the consumer claims again at
        -- once.
        scan_limit := CASE WHEN filt IS NULL THEN need ELSE greatest(need * 10, 1000) END;
        start_cursor := cur;
        LOOP
            SELECT array_agg(c."offset" ORDER BY c."offset") FILTER (WHERE c.ready),
                   array_agg(c."offset" ORDER BY c."offset") FILTER (WHERE c.ok AND NOT c.ready),
                   array_agg(c.available_at ORDER BY c."offset") FILTER (WHERE c.ok AND NOT c.ready),
                   max(c."offset")
              INTO fresh, delayed, delayed_at, new_cursor
              FROM (SELECT r.*, count(*) FILTER (WHERE r.ready) OVER (ORDER BY r."offset")
                                - r.ready::integer AS ready_before
                      FROM (SELECT q.*,
                                   q.ok AND (q.available_at IS NULL OR q.available_at <= now())
                                   AS ready
                              -- _matches is not inlined (its sub-select): called once per row,
                              -- and not at all without a filter, it was a sixth of a drain's
                              -- claim.
                              FROM (SELECT m."offset", m.available_at,
                                           filt IS NULL
                                           OR pgqueue._matches(filt, m.payload, m.headers) AS ok
                                      FROM pgqueue.message m
                                     WHERE m.topic_id = s.topic_id AND m."offset" > cur
                                     ORDER BY m."offset"
                                     LIMIT scan_limit) q) r) c
             WHERE c.ready_before < need;
            EXIT WHEN new_cursor IS NULL;
            INSERT INTO pgqueue.delivery (topic_id, subscriber_id, "offset", state, attempt,
                                          lease_token, due_at, consumer, leased_at)
            SELECT s.topic_id, s.subscriber_id, f.o, 'leased', 1, token, clock_timestamp() + lease,
                   claim.consumer, clock_timestamp()
              FROM unnest(fresh) f(o)
            UNION ALL
            SELECT s.topic_id, s.subscriber_id, w.o, 'retry', 0, NULL, w.at, NULL, NULL
              FROM unnest(delayed, delayed_at) w(o, at);
            cur := new_cursor;
            scanned := scanned + scan_limit;
            EXIT WHEN fresh IS NOT NULL OR scanned >= 100000;
            scan_limit := least(scan_limit * 2, 10000);  -- a long stretch: bigger steps
        END LOOP;
        IF cur > start_cursor THEN
            UPDATE pgqueue.subscriber x SET cursor = cur
             WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id;
        END IF;
    END IF;

    IF relet IS NOT NULL OR fresh IS NOT NULL THEN
        -- What a consumer is handed must not be taken back by a crash (the claim is durable
        -- even in a session with synchronous_commit off, and its flush covers the messages).
        PERFORM pgqueue._durable_commit();
    END IF;

    RETURN QUERY
        SELECT t.name, m."offset", u.attempt, token, m.payload, m.headers, m.key,
               m.correlation_id, m.reply_to, m.published_at, m.message_id,
               coalesce(epoch, s.epoch), coalesce(reset_position, s.reset_position)
          FROM (SELECT * FROM unnest(relet, relet_attempts) AS a(o, attempt)
                UNION ALL
                SELECT f.o, 1 FROM unnest(fresh) AS f(o)) u
          -- One key lookup per offset, whatever the statistics say (LIMIT keeps the planner
          -- from turning this into a scan of the topic).
          CROSS JOIN LATERAL (SELECT * FROM pgqueue.message x
                               WHERE x.topic_id = s.topic_id AND x."offset" = u.o
                               LIMIT 1) m
         ORDER BY m."offset";
END
$$;

-- Moves deliveries to the dead-letter list.
CREATE OR REPLACE FUNCTION pgqueue._bury(s pgqueue.subscriber, offsets bigint[], reason text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    WITH gone AS (
        DELETE FROM pgqueue.delivery x
         WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
           AND x."offset" = ANY (offsets)
        RETURNING x.*
    )
    INSERT INTO pgqueue.dead_letter AS dl
           (topic_id, subscriber_id, "offset", attempts, last_error)
    SELECT g.topic_id, g.subscriber_id, g."offset", g.attempt,
           coalesce(reason, g.last_error,
                    CASE g.state WHEN 'leased' THEN 'lease expired' ELSE 'released' END)
      FROM gone g
    ON CONFLICT (topic_id, subscriber_id, "offset") DO UPDATE
       SET attempts = excluded.attempts, last_error = excluded.last_error, dead_at = now();
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Acks many messages at once. lease_tokens has one token per offset, or a single token for
-- all. Returns the offsets acked; an offset whose lease was taken over by another consumer
-- (or cleared by a reset) is not acked and not returned.
CREATE OR REPLACE FUNCTION pgqueue.ack(
    topic text,
    subscriber text,
    offsets bigint[],
    lease_tokens bigint[]
)
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    s pgqueue.subscriber := pgqueue._find_subscriber(topic, subscriber);
    done bigint[];
BEGIN
    lease_tokens := pgqueue._tokens_for(offsets, lease_tokens);
    -- Rows found by one key lookup per offset (LATERAL ... LIMIT 1), then deleted by row id:
    -- a plan that scans the subscriber's range instead walks every dead row of a drain. A row
    -- updated meanwhile (its lease taken over) has a new row id and is left alone.
    WITH gone AS (
        DELETE FROM pgqueue.delivery x
         WHERE x.ctid = ANY (ARRAY(
                   SELECT d.ctid FROM unnest(offsets, lease_tokens) AS u(o, tk)
                    CROSS JOIN LATERAL (
                        SELECT y.ctid FROM pgqueue.delivery y
                         WHERE y.topic_id = s.topic_id AND y.subscriber_id = s.subscriber_id
                           AND y."offset" = u.o AND y.state = 'leased' AND y.lease_token = u.tk
                         LIMIT 1) d))
           AND x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
           AND x.state = 'leased' AND x.lease_token = ANY (lease_tokens)
        RETURNING x."offset"
    )
    SELECT coalesce(array_agg(g."offset" ORDER BY g."offset"), '{}') INTO done FROM gone g;
    RETURN done;
END
$$;

CREATE OR REPLACE FUNCTION pgqueue._tokens_for(offsets bigint[], lease_tokens bigint[])
RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
    IF offsets IS NULL OR lease_tokens IS NULL OR cardinality(lease_tokens) = 0 THEN
        RAISE EXCEPTION 'offsets and lease_tokens are required' USING ERRCODE = 'PQ006';
    END IF;
    IF cardinality(offsets) > 10000 THEN
        RAISE EXCEPTION 'at most 10000 offsets at once' USING ERRCODE = 'PQ006';
    END IF;
    IF cardinality(lease_tokens) = 1 THEN
        RETURN array_fill(lease_tokens[1], ARRAY[cardinality(offsets)]);
    END IF;
    IF cardinality(lease_tokens) <> cardinality(offsets) THEN
        RAISE EXCEPTION 'give one lease token, or one per offset' USING ERRCODE = 'PQ006';
    END IF;
    RETURN lease_tokens;
END
$$;

-- Gives a message back: retried after delay (default: the subscriber's exponential backoff),
-- or dead-lettered once it has used max_attempts. Returns 'retry', 'dead', or 'lost' when
-- the lease is no longer this consumer's.
CREATE OR REPLACE FUNCTION pgqueue.nack(
    topic text,
    subscriber text,
    "offset" bigint,
    lease_token bigint,
    delay interval DEFAULT NULL,
    error text DEFAULT NULL
)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    s pgqueue.subscriber := pgqueue._find_subscriber(topic, subscriber);
    d pgqueue.delivery;
BEGIN
    IF delay < interval '0' THEN
        RAISE EXCEPTION 'a delay must not be negative' USING ERRCODE = 'PQ006';
    END IF;
    SELECT * INTO d FROM pgqueue.delivery x
     WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
       AND x."offset" = nack."offset" AND x.state = 'leased' AND x.lease_token = nack.lease_token
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'lost';
    END IF;
    IF d.attempt >= s.max_attempts THEN
        PERFORM pgqueue._bury(s, ARRAY[d."offset"], coalesce(error, 'nacked'));
        RETURN 'dead';
    END IF;
    UPDATE pgqueue.delivery x
       SET state = 'retry', lease_token = NULL, last_error = error,
           due_at = now() + coalesce(delay, least(s.backoff_max,
                                                  s.backoff_base * power(2, least(d.attempt - 1, 30))))
     WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
       AND x."offset" = d."offset";
    RETURN 'retry';
END
$$;

-- Extends leases still held with these tokens to now() + lease. Returns the offsets extended.
CREATE OR REPLACE FUNCTION pgqueue.extend_lease(
    topic text,
    subscriber text,
    offsets bigint[],
    lease_tokens bigint[],
    lease interval DEFAULT interval '30 seconds'
)
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    s pgqueue.subscriber := pgqueue._find_subscriber(topic, subscriber);
    done bigint[];
BEGIN
    PERFORM pgqueue._check_lease(lease);
    lease_tokens := pgqueue._tokens_for(offsets, lease_tokens);
    WITH kept AS (
        UPDATE pgqueue.delivery x SET due_at = now() + lease
          FROM unnest(offsets, lease_tokens) AS u(o, tk)
         WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
           AND x."offset" = u.o AND x.state = 'leased' AND x.lease_token = u.tk
        RETURNING x."offset"
    )
    SELECT coalesce(array_agg(k."offset" ORDER BY k."offset"), '{}') INTO done FROM kept k;
    RETURN done;
END
$$;

-- Gives up leases at once (a consumer that disconnects): the messages are claimable again now.
-- The attempt still counts, so a message that kills its consumers reaches the dead letters.
-- Returns the offsets released.
CREATE OR REPLACE FUNCTION pgqueue.release(
    topic text,
    subscriber text,
    offsets bigint[],
    lease_tokens bigint[]
)
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    s pgqueue.subscriber := pgqueue._find_subscriber(topic, subscriber);
    done bigint[];
BEGIN
    lease_tokens := pgqueue._tokens_for(offsets, lease_tokens);
    WITH freed AS (
        UPDATE pgqueue.delivery x
           SET state = 'retry', lease_token = NULL, due_at = now()
          FROM unnest(offsets, lease_tokens) AS u(o, tk)
         WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
           AND x."offset" = u.o AND x.state = 'leased' AND x.lease_token = u.tk
        RETURNING x."offset"
    )
    SELECT coalesce(array_agg(f."offset" ORDER BY f."offset"), '{}') INTO done FROM freed f;
    IF cardinality(done) > 0 THEN
        PERFORM pg_notify('pgqueue', topic);
    END IF;
    RETURN done;
END
$$;

-- Gives back claims that never reached the consumer (a connection that ended before it sent
-- them): claimable again now, and the claim's attempt is taken back, so messages claimed
-- beside one that kills connections are not charged for it. Returns the offsets given back.
CREATE OR REPLACE FUNCTION pgqueue.give_back(
    topic text,
    subscriber text,
    offsets bigint[],
    lease_tokens bigint[]
)
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    s pgqueue.subscriber := pgqueue._find_subscriber(topic, subscriber);
    done bigint[];
BEGIN
    lease_tokens := pgqueue._tokens_for(offsets, lease_tokens);
    WITH freed AS (
        UPDATE pgqueue.delivery x
           SET state = 'retry', lease_token = NULL, due_at = now(),
               attempt = greatest(x.attempt - 1, 0)
          FROM unnest(offsets, lease_tokens) AS u(o, tk)
         WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
           AND x."offset" = u.o AND x.state = 'leased' AND x.lease_token = u.tk
        RETURNING x."offset"
    )
    SELECT coalesce(array_agg(f."offset" ORDER BY f."offset"), '{}') INTO done FROM freed f;
    IF cardinality(done) > 0 THEN
        PERFORM pg_notify('pgqueue', topic);
    END IF;
    RETURN done;
END
$$;

-- Seconds until the subscriber's next retry, delayed message or lease expiry falls due (0 if
-- one is due now, NULL if none): idle consumers sleep that long instead of a full poll.
-- (greatest() ignores NULLs: greatest(NULL, 0) is 0, which made idle consumers spin.)
CREATE OR REPLACE FUNCTION pgqueue.seconds_until_due(topic text, subscriber text)
RETURNS double precision
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    s pgqueue.subscriber := pgqueue._find_subscriber(topic, subscriber);
    due timestamptz;
BEGIN
    SELECT d.due_at INTO due FROM pgqueue.delivery d
     WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id
       -- Always true; it lets the partial index delivery_due serve this (an IS NOT NULL
       -- condition would not: PostgreSQL 17+ drops it on a NOT NULL column).
       AND d.due_at > '-infinity'
     ORDER BY d.due_at LIMIT 1;
    IF s.cursor < pgqueue._last_offset(s.topic_id) THEN
        RETURN 0;  -- a claim stopped scanning before the end of the log: more to look at
    END IF;
    IF due IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN greatest(extract(epoch FROM due - clock_timestamp()), 0);
END
$$;

-- The subscriber's leases, live and run out (not yet taken again), in offset order: who holds
-- each, since when, at which attempt, until when. What XPENDING or
-- `kafka-consumer-groups --describe` show.
CREATE OR REPLACE FUNCTION pgqueue.list_leases(
    topic text,
    subscriber text,
    max_rows integer DEFAULT 1000
)
RETURNS TABLE (
    "offset" bigint,
    attempt integer,
    consumer text,
    leased_at timestamptz,
    lease_ends timestamptz,
    expired boolean
)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    s pgqueue.subscriber := pgqueue._find_subscriber(topic, subscriber);
BEGIN
    RETURN QUERY
        SELECT d."offset", d.attempt, d.consumer, d.leased_at, d.due_at, d.due_at <= now()
          FROM pgqueue.delivery d
         WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id
           AND d.state = 'leased'
         ORDER BY d."offset"
         LIMIT greatest(max_rows, 0);
END
$$;

-- For a process whose consumers of a topic are idle: which subscribers have work now (0), or
-- in how many seconds (a retry, a delayed message or a lease falls due), or none (NULL). One
-- call per topic and poll interval serves every idle consumer of the process, where each
-- consumer claiming on its own cost a commit per interval. assign: as for claim, numbers
-- committed in-transaction publishes first (pass true only where the call commits at once).
CREATE OR REPLACE FUNCTION pgqueue.subscribers_due(topic text, assign boolean DEFAULT NULL)
RETURNS TABLE (subscriber text, seconds_until_due double precision)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    t pgqueue.topic := pgqueue._find_topic(topic);
    last_off bigint;
BEGIN
    IF pgqueue._may_assign(assign) THEN
        PERFORM pgqueue._assign(t, false);
    END IF;
    last_off := pgqueue._last_offset(t.topic_id);
    RETURN QUERY
        SELECT s.name,
               CASE WHEN s.cursor < last_off THEN 0::double precision
                    -- (greatest() would turn a NULL, nothing due, into 0)
                    WHEN d.due_at IS NOT NULL
                    THEN greatest(extract(epoch FROM d.due_at - clock_timestamp()), 0)
               END
          FROM pgqueue.subscriber s
          LEFT JOIN LATERAL (
               SELECT x.due_at FROM pgqueue.delivery x
                WHERE x.topic_id = s.topic_id AND x.subscriber_id = s.subscriber_id
                  -- Always true; lets the partial index delivery_due serve this.
                  AND x.due_at > '-infinity'
                ORDER BY x.due_at LIMIT 1) d ON true
         WHERE s.topic_id = t.topic_id
         ORDER BY s.name;
END
$$;
