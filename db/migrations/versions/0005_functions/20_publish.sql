-- Publishing: two paths with one set of checks.
--
-- Inside the caller's transaction (publish, publish_batch) a message goes to pgqueue.pending
-- with no offset and the publishing transaction's id. Nothing is locked but the topic's shared
-- advisory lock, so such publishers never wait for each other, whatever their transactions do.
-- Offsets are stamped later, on committed rows only, by an assignment round (30_assign.sql).
-- These calls return message ids (see pgqueue.message_offsets).
--
-- publish_and_commit / publish_batch_and_commit own their transaction, which is short, so they
-- append to the log directly: under the topic's assignment lock they take the next offsets and
-- commit asynchronously, which releases the lock without waiting for the WAL flush. They
-- return only after a flush covers that commit. Writers thus queue only for a few in-memory
-- operations and still share group commits, offsets stay dense and in visibility order, and
-- WAL order means a crash can never keep offset n+1 while losing n. Anything that acts on a
-- message (claim, ack) commits synchronously, which flushes the message first.

-- Inserts one batch; returns the message ids (and, direct, the offsets) in input order. An idempotency key seen on this
-- topic within its dedup window returns the original message id and stores nothing.
CREATE OR REPLACE FUNCTION pgqueue._publish(
    t pgqueue.topic,
    direct boolean,
    payloads jsonb[],
    headers jsonb[],
    keys text[],
    idempotency_keys text[],
    delays interval[],
    correlation_ids text[],
    reply_tos text[],
    OUT ids bigint[],
    OUT offsets bigint[]
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    n integer := coalesce(cardinality(payloads), 0);
    i integer;
    bad integer;
    problem text;
    existing bigint;
    last_off bigint;
    prev pg_snapshot;
    reused boolean[];
    -- No idempotency keys: one INSERT for the whole batch, ids taken up front.
    keyless boolean := idempotency_keys IS NULL OR num_nonnulls(VARIADIC idempotency_keys) = 0;
BEGIN
    IF n = 0 THEN
        RAISE EXCEPTION 'nothing to publish' USING ERRCODE = 'PQ006';
    END IF;
    IF n > 10000 THEN
        RAISE EXCEPTION 'a batch holds at most 10000 messages, got %', n USING ERRCODE = 'PQ006';
    END IF;
    IF (headers IS NOT NULL AND cardinality(headers) <> n)
       OR (keys IS NOT NULL AND cardinality(keys) <> n)
       OR (idempotency_keys IS NOT NULL AND cardinality(idempotency_keys) <> n)
       OR (delays IS NOT NULL AND cardinality(delays) <> n)
       OR (correlation_ids IS NOT NULL AND cardinality(correlation_ids) <> n)
       OR (reply_tos IS NOT NULL AND cardinality(reply_tos) <> n) THEN
        RAISE EXCEPTION 'every array argument must have one element per payload (%)', n
            USING ERRCODE = 'PQ006';
    END IF;

    -- One pass over the batch finds the first bad message (one statement, not four).
    -- Nesting is limited to what every read path can hand back: Python's json gives up near
    -- 1,000 levels and pydantic's serializer at 255, so a deeper payload would be stored but
    -- could never be delivered or browsed ('strict $.**{100}' finds a value 100 levels in).
    SELECT u.i,
           CASE WHEN u.p IS NULL THEN 'null'
                WHEN pg_column_size(u.p) > t.max_payload_bytes THEN 'size'
                WHEN u.d < interval '0' THEN 'delay'
                WHEN jsonb_path_exists(u.p, 'strict $.**{100}') THEN 'depth'
                ELSE 'headers' END
      INTO bad, problem
      FROM unnest(payloads, headers, delays) WITH ORDINALITY AS u(p, h, d, i)
     WHERE u.p IS NULL
        OR pg_column_size(u.p) > t.max_payload_bytes
        OR u.d < interval '0'
        OR jsonb_path_exists(u.p, 'strict $.**{100}')
        OR (u.h IS NOT NULL AND u.h <> '{}'::jsonb
            AND (jsonb_typeof(u.h) <> 'object'
                 OR jsonb_path_exists(u.h, '$.* ? (@.type() != "string")')))
     ORDER BY u.i
     LIMIT 1;
    IF problem = 'null' THEN
        RAISE EXCEPTION 'message % has no payload (use JSON null, not SQL NULL)', bad
            USING ERRCODE = 'PQ008';
    ELSIF problem = 'size' THEN
        RAISE EXCEPTION 'message % is larger than the topic limit of % bytes',
            bad, t.max_payload_bytes USING ERRCODE = 'PQ007';
    ELSIF problem = 'delay' THEN
        RAISE EXCEPTION 'a delay must not be negative' USING ERRCODE = 'PQ006';
    ELSIF problem = 'depth' THEN
        RAISE EXCEPTION 'message % is nested more than 99 levels deep', bad
            USING ERRCODE = 'PQ008';
    ELSIF problem = 'headers' THEN
        RAISE EXCEPTION 'message % headers must be a JSON object of strings', bad
            USING ERRCODE = 'PQ008';
    END IF;

    IF direct AND current_setting('transaction_isolation') <> 'read committed' THEN
        -- A snapshot older than the previous append would reuse its offsets.
        RAISE EXCEPTION 'publishing with commit needs READ COMMITTED isolation'
            USING ERRCODE = 'PQ011';
    END IF;
    -- Held until commit, so delete_topic cannot remove the topic under an open publish.
    PERFORM pg_advisory_xact_lock_shared(pgqueue._lock_class('topic'), t.topic_id);
    -- A delete_topic we queued behind has committed by now: look again, or our rows would
    -- outlive the topic (an orphan pending row, or an append with no segment to go to).
    -- Under REPEATABLE READ a fresh look is not possible; locking the row is, and fails with
    -- a serialization error when the topic went away meanwhile.
    IF current_setting('transaction_isolation') = 'read committed' THEN
        PERFORM 1 FROM pgqueue.topic x WHERE x.topic_id = t.topic_id;
    ELSE
        PERFORM 1 FROM pgqueue.topic x WHERE x.topic_id = t.topic_id FOR KEY SHARE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic % does not exist', quote_literal(t.name) USING ERRCODE = 'PQ001';
    END IF;

    -- Idempotency keys claim their slots before the topic's assignment lock is taken: a key
    -- held by another open transaction is waited for here, where the wait holds up no one
    -- else, and never under the lock (which every direct publisher of the topic needs, and
    -- which that other transaction may want too: a deadlock). Keys are taken in key order,
    -- so two batches sharing keys cannot deadlock on each other either.
    IF NOT keyless THEN
        ids := ARRAY(SELECT nextval('pgqueue.message_id_seq') FROM generate_series(1, n));
        reused := array_fill(false, ARRAY[n]);
        FOR i IN SELECT u.i FROM unnest(idempotency_keys) WITH ORDINALITY AS u(k, i)
                  WHERE u.k IS NOT NULL ORDER BY u.k, u.i LOOP
            existing := NULL;
            SELECT x.message_id INTO existing FROM pgqueue.idempotency x
             WHERE x.topic_id = t.topic_id AND x.idempotency_key = idempotency_keys[i]
               AND x.created_at > now() - t.dedup_window;
            IF existing IS NULL THEN
                INSERT INTO pgqueue.idempotency AS x (topic_id, idempotency_key, message_id)
                VALUES (t.topic_id, idempotency_keys[i], ids[i])
                ON CONFLICT (topic_id, idempotency_key) DO UPDATE
                   SET message_id = excluded.message_id, created_at = excluded.created_at
                 WHERE x.created_at <= now() - t.dedup_window
                RETURNING NULL INTO existing;
                IF NOT FOUND THEN
                    -- A concurrent publisher committed the same key first: keep theirs.
                    SELECT x.message_id INTO existing FROM pgqueue.idempotency x
                     WHERE x.topic_id = t.topic_id AND x.idempotency_key = idempotency_keys[i];
                END IF;
            END IF;
            IF existing IS NOT NULL THEN
                ids[i] := existing;
                reused[i] := true;
            END IF;
        END LOOP;
    END IF;

    IF direct THEN
        IF keyless THEN
            -- Taken before the topic lock: what runs under it is only what must.
            ids := ARRAY(SELECT nextval('pgqueue.message_id_seq') FROM generate_series(1, n));
        END IF;
        PERFORM pg_advisory_xact_lock(pgqueue._lock_class('assign'), t.topic_id);
        -- In-transaction publishes that committed before us get their offsets first, so
        -- offsets follow commit order. Usually there are none: two index probes on the window
        -- of the next round (as _assign_locked computes it) and no round at all. After a
        -- round, the log is read again (the second pass), without checking again: rows still
        -- pending then are not committed.
        FOR pass IN 1 .. 2 LOOP
            -- The last row's round snapshot stays valid for the rows we append (an older
            -- snapshot only widens the next round's window), so it is carried forward.
            SELECT m."offset", m.round_snapshot INTO last_off, prev
              FROM pgqueue.message m
             WHERE m.topic_id = t.topic_id
             ORDER BY m."offset" DESC LIMIT 1;
            EXIT WHEN pass = 2 OR NOT (
                EXISTS (SELECT 1 FROM pgqueue.pending p
                         WHERE p.topic_id = t.topic_id
                           AND p.xid >= coalesce(pg_snapshot_xmax(prev), '0'::xid8))
                OR EXISTS (SELECT 1 FROM pgqueue.pending p
                            WHERE p.topic_id = t.topic_id
                              AND p.xid = ANY (ARRAY(SELECT pg_snapshot_xip(prev)))));
            PERFORM pgqueue._assign_locked(t);
        END LOOP;
        last_off := coalesce(last_off, 0);
        PERFORM pgqueue._make_room(t, last_off, n);
    END IF;

    IF keyless THEN
        -- The common case: one INSERT for the whole batch.
        IF direct THEN
            -- Offsets and ids are known up front, so nothing comes back through RETURNING.
            INSERT INTO pgqueue.message
                   (topic_id, "offset", message_id, payload, headers, key, correlation_id,
                    reply_to, published_at, available_at, round_snapshot)
            SELECT t.topic_id, last_off + u.i, u.id, u.p, coalesce(u.h, '{}'), u.k, u.c, u.r,
                   now(), CASE WHEN u.d > interval '0' THEN now() + u.d END,
                   CASE WHEN u.i = n THEN prev END
              FROM unnest(ids, payloads, headers, keys, correlation_ids, reply_tos, delays)
                   WITH ORDINALITY AS u(id, p, h, k, c, r, d, i);
            offsets := ARRAY(SELECT last_off + g FROM generate_series(1, n) AS g);
        ELSE
            WITH ins AS (
                INSERT INTO pgqueue.pending
                       (topic_id, payload, headers, key, correlation_id, reply_to, available_at)
                SELECT t.topic_id, u.p, coalesce(u.h, '{}'), u.k, u.c, u.r,
                       CASE WHEN u.d > interval '0' THEN now() + u.d END
                  FROM unnest(payloads, headers, keys, correlation_ids, reply_tos, delays)
                       WITH ORDINALITY AS u(p, h, k, c, r, d, i)
                 ORDER BY u.i
                RETURNING message_id
            )
            SELECT array_agg(ins.message_id ORDER BY ins.message_id) INTO ids FROM ins;
        END IF;
        RETURN;
    END IF;

    -- With idempotency keys, one message at a time; a message whose key was seen keeps the
    -- original (its offset, on the direct path: the round above numbered it if its
    -- publishing transaction committed in-transaction).
    offsets := array_fill(NULL::bigint, ARRAY[n]);
    FOR i IN 1 .. n LOOP
        IF reused[i] THEN
            IF direct THEN
                offsets[i] := (SELECT m."offset" FROM pgqueue.message m
                                WHERE m.topic_id = t.topic_id AND m.message_id = ids[i]);
            END IF;
        ELSIF direct THEN
            last_off := last_off + 1;
            offsets[i] := last_off;
            INSERT INTO pgqueue.message
                   (topic_id, "offset", message_id, payload, headers, key, correlation_id,
                    reply_to, published_at, available_at, round_snapshot)
            VALUES (t.topic_id, last_off, ids[i], payloads[i], coalesce(headers[i], '{}'),
                    keys[i], correlation_ids[i], reply_tos[i], now(),
                    CASE WHEN delays[i] > interval '0' THEN now() + delays[i] END, prev);
        ELSE
            INSERT INTO pgqueue.pending
                   (topic_id, message_id, payload, headers, key, correlation_id, reply_to,
                    available_at)
            VALUES (t.topic_id, ids[i], payloads[i], coalesce(headers[i], '{}'), keys[i],
                    correlation_ids[i], reply_tos[i],
                    CASE WHEN delays[i] > interval '0' THEN now() + delays[i] END);
        END IF;
    END LOOP;
END
$$;

-- Publish inside the caller's transaction: commits or rolls back with it. Returns the message
-- id; the offset is assigned after commit (see pgqueue.message_offset).
CREATE OR REPLACE FUNCTION pgqueue.publish(
    topic text,
    payload jsonb,
    headers jsonb DEFAULT '{}',
    key text DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    delay interval DEFAULT NULL,
    correlation_id text DEFAULT NULL,
    reply_to text DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    t pgqueue.topic := pgqueue._find_topic(topic);
    r record;
BEGIN
    r := pgqueue._publish(t, false, ARRAY[payload], ARRAY[headers], ARRAY[key],
                          ARRAY[idempotency_key], ARRAY[delay], ARRAY[correlation_id],
                          ARRAY[reply_to]);
    -- A wake-up hint, delivered at commit; NOTIFY folds duplicates within a transaction.
    PERFORM pg_notify('pgqueue', t.name);
    RETURN r.ids[1];
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.publish_batch(
    topic text,
    payloads jsonb[],
    headers jsonb[] DEFAULT NULL,
    keys text[] DEFAULT NULL,
    idempotency_keys text[] DEFAULT NULL,
    delays interval[] DEFAULT NULL,
    correlation_ids text[] DEFAULT NULL,
    reply_tos text[] DEFAULT NULL
)
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    t pgqueue.topic := pgqueue._find_topic(topic);
    r record;
BEGIN
    r := pgqueue._publish(t, false, payloads, headers, keys, idempotency_keys, delays,
                          correlation_ids, reply_tos);
    PERFORM pg_notify('pgqueue', t.name);
    RETURN r.ids;
END
$$;

-- The offsets of messages by id, NULL where not assigned yet (uncommitted or rolled back).
-- assign as for pgqueue.claim: whether committed in-transaction publishes may be numbered
-- first. Offsets it shows are durable: its commit waits for their flush.
CREATE OR REPLACE FUNCTION pgqueue.message_offsets(
    topic text,
    message_ids bigint[],
    assign boolean DEFAULT NULL
)
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    t pgqueue.topic := pgqueue._find_topic(topic);
    found bigint[];
BEGIN
    IF pgqueue._may_assign(assign) THEN
        PERFORM pgqueue._assign(t, false);
    END IF;
    SELECT array_agg(m."offset" ORDER BY u.i) INTO found
      FROM unnest(message_ids) WITH ORDINALITY AS u(id, i)
      LEFT JOIN pgqueue.message m ON m.topic_id = t.topic_id AND m.message_id = u.id;
    PERFORM pgqueue._flush_at_commit();
    RETURN found;
END
$$;

-- Publish, commit, assign, and return the offset: one round trip for callers that do not need
-- their own transaction. Must be CALLed outside a transaction block.
CREATE OR REPLACE PROCEDURE pgqueue.publish_and_commit(
    topic text,
    payload jsonb,
    headers jsonb DEFAULT '{}',
    key text DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    delay interval DEFAULT NULL,
    correlation_id text DEFAULT NULL,
    reply_to text DEFAULT NULL,
    INOUT "offset" bigint DEFAULT NULL
)
LANGUAGE plpgsql AS $$
DECLARE
    offsets bigint[];
BEGIN
    CALL pgqueue.publish_batch_and_commit(
        topic, ARRAY[payload], ARRAY[headers], ARRAY[key], ARRAY[idempotency_key],
        ARRAY[delay], ARRAY[correlation_id], ARRAY[reply_to], offsets);
    "offset" := offsets[1];
END
$$;

CREATE OR REPLACE PROCEDURE pgqueue.publish_batch_and_commit(
    topic text,
    payloads jsonb[],
    headers jsonb[] DEFAULT NULL,
    keys text[] DEFAULT NULL,
    idempotency_keys text[] DEFAULT NULL,
    delays interval[] DEFAULT NULL,
    correlation_ids text[] DEFAULT NULL,
    reply_tos text[] DEFAULT NULL,
    INOUT offsets bigint[] DEFAULT NULL
)
LANGUAGE plpgsql AS $$
BEGIN
    -- Its COMMIT would commit whatever the caller did before in this transaction (a caller's
    -- procedure that wrote rows, then CALLed us): refuse rather than commit someone's work.
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'publish_batch_and_commit commits: call it in a transaction of its own, '
                        'or use publish_batch inside yours' USING ERRCODE = 'PQ011';
    END IF;
    -- Before anything runs in this transaction; local, so it ends at the COMMIT below.
    PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
    offsets := pgqueue._publish_direct(topic, payloads, headers, keys, idempotency_keys, delays,
                                       correlation_ids, reply_tos);
    -- Inside a transaction block this COMMIT fails with SQLSTATE 2D000.
    COMMIT;
    -- The offsets are answered only once the append is on disk: this second transaction's
    -- commit waits for a flush covering the first one's commit record, shared with every
    -- concurrent committer (group commit), or costs nothing if one already covered it.
    PERFORM pgqueue._flush_at_commit(pg_catalog.pg_current_wal_insert_lsn());
END
$$;

-- The part of publish_batch_and_commit that touches tables. The procedure cannot be SECURITY
-- DEFINER nor pin its search_path (PostgreSQL then forbids its COMMIT), so it runs as its
-- caller and delegates here, with the owner's rights and a pinned path.
CREATE OR REPLACE FUNCTION pgqueue._publish_direct(
    topic text,
    payloads jsonb[],
    headers jsonb[],
    keys text[],
    idempotency_keys text[],
    delays interval[],
    correlation_ids text[],
    reply_tos text[]
)
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    t pgqueue.topic := pgqueue._find_topic(topic);
    r record;
BEGIN
    r := pgqueue._publish(t, true, payloads, headers, keys, idempotency_keys, delays,
                          correlation_ids, reply_tos);
    PERFORM pg_notify('pgqueue', t.name);
    RETURN r.offsets;
END
$$;
