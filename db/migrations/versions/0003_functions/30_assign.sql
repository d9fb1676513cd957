-- Offset assignment: move committed pending rows into the log with dense offsets.
--
-- Rounds on one topic are serialised by an advisory lock held to commit, so each round sees
-- the previous round's rows and continues its numbering. A round records the snapshot it used
-- on the last row it writes. A pending row still waiting must belong to a transaction that
-- was not yet visible in that snapshot: xid >= its xmax, or xid in its in-progress list. The
-- round looks only there, so its cost follows the new rows, not the dead ones left by earlier
-- rounds, and a long transaction anywhere in the cluster costs one index probe, not a stall.
-- A round moves exactly the rows visible in its own snapshot; later commits wait for the next.

-- The round itself; the caller holds the topic's assignment lock.
-- Its statements are built for index ranges only. pending is often empty when a plan is
-- cached, which makes a sequential scan look free; that plan would then be kept while dead
-- rows pile up behind a long transaction. The enable_* settings keep the index plan.
CREATE OR REPLACE FUNCTION pgqueue._assign_locked(t pgqueue.topic)
RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    s pg_snapshot;
    prev pg_snapshot;
    prev_xmax xid8;
    prev_xip xid8[];
    last_off bigint;
    moved integer;
    room bigint;
    waiting bigint;
BEGIN
    -- Each statement below takes a fresh snapshot, later than the lock: it sees what the
    -- previous round committed.
    SELECT m."offset", m.round_snapshot INTO last_off, prev
      FROM pgqueue.message m
     WHERE m.topic_id = t.topic_id
     ORDER BY m."offset" DESC LIMIT 1;
    last_off := coalesce(last_off, 0);
    s := pg_current_snapshot();

    -- No previous round (a new topic): every pending row of the topic is a candidate.
    prev_xmax := coalesce(pg_snapshot_xmax(prev), '0'::xid8);
    prev_xip := ARRAY(SELECT pg_snapshot_xip(prev));
    -- The segments ahead take segment_size rows or more; a bigger round (a huge publishing
    -- transaction) makes room first. Counted without the visibility test: an upper bound.
    room := (last_off / t.segment_size + 2) * t.segment_size - 1 - last_off;
    SELECT count(*) INTO waiting FROM (
        SELECT 1 FROM pgqueue.pending p WHERE p.topic_id = t.topic_id AND p.xid >= prev_xmax
        UNION ALL
        SELECT 1 FROM pgqueue.pending p WHERE p.topic_id = t.topic_id AND p.xid = ANY (prev_xip)
        LIMIT room + 1) w;
    IF waiting = 0 THEN
        -- The usual case for a direct publish. The DELETEs below could not find a row either:
        -- they take only rows committed before s, which this later count would have seen.
        RETURN 0;
    END IF;
    IF waiting > room THEN
        SELECT count(*) INTO waiting FROM (
            SELECT 1 FROM pgqueue.pending p WHERE p.topic_id = t.topic_id AND p.xid >= prev_xmax
            UNION ALL
            SELECT 1 FROM pgqueue.pending p
             WHERE p.topic_id = t.topic_id AND p.xid = ANY (prev_xip)) w;
        PERFORM pgqueue._make_room(t, last_off, waiting);
    END IF;
    -- Two DELETEs, not one with OR: each keeps its xid range in the index condition even in
    -- the generic plan PL/pgSQL caches, so dead entries below the window are never visited.
    -- They are disjoint: every xid in the in-progress list is below xmax.
    WITH newer AS (
        DELETE FROM pgqueue.pending p
         WHERE p.topic_id = t.topic_id AND p.xid >= prev_xmax
           AND pg_visible_in_snapshot(p.xid, s)
        RETURNING p.*
    ), was_running AS (
        DELETE FROM pgqueue.pending p
         WHERE p.topic_id = t.topic_id AND p.xid = ANY (prev_xip)
           AND pg_visible_in_snapshot(p.xid, s)
        RETURNING p.*
    ), numbered AS (
        SELECT g.*, last_off + row_number() OVER (ORDER BY g.message_id) AS new_offset,
               last_off + count(*) OVER () AS round_last
          FROM (SELECT * FROM newer UNION ALL SELECT * FROM was_running) g
    )
    INSERT INTO pgqueue.message
           (topic_id, "offset", message_id, payload, headers, key, correlation_id,
            reply_to, published_at, available_at, round_snapshot)
    SELECT n.topic_id, n.new_offset, n.message_id, n.payload, n.headers, n.key,
           n.correlation_id, n.reply_to, n.published_at, n.available_at,
           CASE WHEN n.new_offset = n.round_last THEN s END
      FROM numbered n;
    GET DIAGNOSTICS moved = ROW_COUNT;
    PERFORM pgqueue._make_room(t, last_off, moved);  -- a new segment ahead, if we entered one

    IF moved > 0 THEN
        -- One coalesced hint per round, sent from the round's own short transaction.
        PERFORM pg_notify('pgqueue', t.name);
    END IF;
    RETURN moved;
END
$$;

-- Generic plans: a custom plan would re-plan the round's CTE on every call, which costs more
-- than the round itself; the statements are written so the generic plan keeps index ranges.
CREATE OR REPLACE FUNCTION pgqueue._assign(t pgqueue.topic, wait boolean)
RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    prev pg_snapshot;
    prev_xmax xid8;
    prev_xip xid8[];
BEGIN
    -- Under REPEATABLE READ a round could miss the previous round's rows and reuse offsets.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN 0;
    END IF;
    IF wait THEN
        PERFORM pg_advisory_xact_lock(pgqueue._lock_class('assign'), t.topic_id);
    ELSE
        -- Opportunistic rounds (from claim) lock only when a committed row is waiting: the
        -- lock then lasts through the caller's synchronous commit, and direct publishers
        -- queue behind it. Read without the lock, the snapshot may be stale; an older one
        -- only widens the window, and rows already moved are gone.
        SELECT m.round_snapshot INTO prev
          FROM pgqueue.message m
         WHERE m.topic_id = t.topic_id
         ORDER BY m."offset" DESC LIMIT 1;
        prev_xmax := coalesce(pg_snapshot_xmax(prev), '0'::xid8);
        prev_xip := ARRAY(SELECT pg_snapshot_xip(prev));
        IF NOT EXISTS (SELECT 1 FROM pgqueue.pending p
                        WHERE p.topic_id = t.topic_id AND p.xid >= prev_xmax)
           AND NOT EXISTS (SELECT 1 FROM pgqueue.pending p
                            WHERE p.topic_id = t.topic_id AND p.xid = ANY (prev_xip)) THEN
            RETURN 0;
        END IF;
        IF NOT pg_try_advisory_xact_lock(pgqueue._lock_class('assign'), t.topic_id) THEN
            RETURN 0;
        END IF;
    END IF;

    RETURN pgqueue._assign_locked(t);
END
$$;

-- Runs an assignment round now; returns how many messages got offsets. Claims run rounds
-- themselves, so this is only needed by callers that publish and read without claiming.
CREATE OR REPLACE FUNCTION pgqueue.assign(topic text)
RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    -- The round's lock lasts until commit: call this in its own short transaction, or every
    -- publish_and_commit on the topic waits for yours.
    RETURN pgqueue._assign(pgqueue._find_topic(topic), true);
END
$$;
