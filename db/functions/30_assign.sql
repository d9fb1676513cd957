-- Offset assignment: move committed pending rows into the log with dense offsets.
--
-- Rounds on one topic are serialised by an advisory lock held to commit, so each round sees
-- the previous round's rows and continues its numbering. A round records the snapshot it used
-- on the last row it writes. A pending row still waiting must belong to a transaction that
-- was not yet visible in that snapshot: xid >= its xmax, or xid in its in-progress list. The
-- round looks only there, so its cost follows the new rows, not the dead ones left by earlier
-- rounds, and a long transaction anywhere in the cluster costs one index probe, not a stall.
-- A round moves exactly the rows visible in its own snapshot; later commits wait for the next.

-- The snapshot an assignment round works in and records. PostgreSQL never lists the current
-- transaction in its own snapshot, so a round run by a transaction that has published (or may
-- publish later) would count that transaction's rows as committed: it would move the ones it
-- sees now and leave later ones outside every future round's window. The current transaction
-- is therefore added to the in-progress list: its rows wait, like any uncommitted rows, for a
-- round after it commits.
CREATE OR REPLACE FUNCTION pgqueue._round_snapshot()
RETURNS pg_snapshot
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    s pg_snapshot := pg_current_snapshot();
    own xid8 := pg_current_xact_id_if_assigned();
BEGIN
    -- At or above xmax it is outside the snapshot already (not visible, and in the next
    -- round's window).
    IF own IS NULL OR own >= pg_snapshot_xmax(s) THEN
        RETURN s;
    END IF;
    RETURN format('%s:%s:%s',
                  least(pg_snapshot_xmin(s), own), pg_snapshot_xmax(s),
                  (SELECT string_agg(x::text, ',' ORDER BY x)
                     FROM (SELECT pg_snapshot_xip(s) UNION SELECT own) AS u(x)))::pg_snapshot;
END
$$;

-- Whether an opportunistic round (from a claim or a read) may run here: only in a transaction
-- of its own, since the round's lock lasts until commit and every direct publisher to the
-- topic waits for it. `allowed` is the caller's word (the library knows it runs each claim in
-- its own transaction); NULL asks PostgreSQL, which can tell only for a statement sent alone
-- with the simple protocol (psql): there the transaction began with this statement.
CREATE OR REPLACE FUNCTION pgqueue._may_assign(allowed boolean)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    -- A read-only transaction or a standby cannot number anything.
    SELECT NOT pg_is_in_recovery() AND NOT current_setting('transaction_read_only')::boolean
           AND coalesce(allowed, statement_timestamp() = transaction_timestamp())
$$;

-- The round itself; the caller holds the topic's assignment lock.
-- Its statements are built for index ranges only. pending is often empty when a plan is
-- cached, which makes a sequential scan look free; that plan would then be kept while dead
-- rows pile up behind a long transaction. The enable_* settings keep the index plan.
CREATE OR REPLACE FUNCTION pgqueue._assign_locked(t pgqueue.topic)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
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
    s := pgqueue._round_snapshot();

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
        -- Offsets follow the publishing transactions' xids, then their own order: a
        -- transaction that took its xid after another committed gets the later offsets
        -- (message ids come from per-backend sequence caches and say nothing across sessions).
        SELECT g.*, last_off + row_number() OVER (ORDER BY g.xid, g.message_id) AS new_offset,
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
        -- Offsets handed out are offsets shown: the round commits durably even in a session
        -- that turned synchronous_commit off, or a crash could give them to other messages.
        PERFORM pgqueue._durable_commit();
    END IF;
    RETURN moved;
END
$$;

-- Generic plans: a custom plan would re-plan the round's CTE on every call, which costs more
-- than the round itself; the statements are written so the generic plan keeps index ranges.
CREATE OR REPLACE FUNCTION pgqueue._assign(t pgqueue.topic, wait boolean)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
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

-- Runs an assignment round now and commits it; `assigned` says how many messages got offsets.
-- Claims and reads run rounds themselves, so this is only needed by callers that publish and
-- read without the library. A procedure, so that it commits at once: a round's lock lasts
-- until commit, and every direct publisher to the topic waits for it. Inside a transaction
-- block it fails (SQLSTATE 2D000) before taking anything.
CREATE OR REPLACE PROCEDURE pgqueue.assign(topic text, INOUT assigned integer DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    -- Its COMMIT would commit what a calling procedure wrote before: refuse that instead.
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'assign commits: call it in a transaction of its own'
            USING ERRCODE = 'PQ011';
    END IF;
    COMMIT;
    assigned := pgqueue._assign_now(topic);
    COMMIT;
END
$$;

-- The round of the assign procedure, with the owner's rights (see _publish_direct for why
-- the procedure cannot have them itself).
CREATE OR REPLACE FUNCTION pgqueue._assign_now(topic text)
RETURNS integer
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT pgqueue._assign(pgqueue._find_topic(topic), true)
$$;
