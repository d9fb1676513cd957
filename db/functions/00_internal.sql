-- Internal helpers shared by the public functions. Names starting with "_" are not API.
--
-- Our errors use SQLSTATE class PQ (unused by PostgreSQL), mapped to Python exceptions in
-- pgqueue/errors.py:
--   PQ001 topic not found        PQ002 topic exists          PQ003 subscriber not found
--   PQ004 subscriber exists      PQ005 invalid name          PQ006 invalid argument
--   PQ007 payload too large      PQ008 invalid payload       PQ009 invalid filter
--   PQ010 invalid position       PQ011 needs its own transaction

CREATE OR REPLACE FUNCTION pgqueue._check_name(kind text, name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$' THEN
        RAISE EXCEPTION 'invalid % name %', kind, coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'PQ005',
                  HINT = 'names are 1-100 characters: letters, digits, ".", "_", "-"; '
                         'the first a letter or digit';
    END IF;
END
$$;

-- A JSON array as an array of its elements. The library sends a batch's payloads as one JSON
-- array text: one value to encode and parse instead of one per message.
CREATE OR REPLACE FUNCTION pgqueue._jsonb_elements(items jsonb)
RETURNS jsonb[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(items) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'payloads must be a JSON array' USING ERRCODE = 'PQ006';
    END IF;
    RETURN ARRAY(SELECT e FROM jsonb_array_elements(items) WITH ORDINALITY AS u(e, i) ORDER BY u.i);
END
$$;

-- The topic row, or PQ001. FOR SHARE is not taken: callers that must exclude a concurrent
-- delete take the topic's shared advisory lock instead (no disk write, no MultiXact).
CREATE OR REPLACE FUNCTION pgqueue._find_topic(topic_name text)
RETURNS pgqueue.topic
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    t pgqueue.topic;
BEGIN
    SELECT * INTO t FROM pgqueue.topic WHERE name = topic_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic % does not exist', coalesce(quote_literal(topic_name), 'NULL')
            USING ERRCODE = 'PQ001';
    END IF;
    RETURN t;
END
$$;

CREATE OR REPLACE FUNCTION pgqueue._find_subscriber(topic_name text, subscriber_name text)
RETURNS pgqueue.subscriber
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    s pgqueue.subscriber;
BEGIN
    SELECT s2.* INTO s
      FROM pgqueue.subscriber s2
      JOIN pgqueue.topic t ON t.topic_id = s2.topic_id
     WHERE t.name = topic_name AND s2.name = subscriber_name;
    IF NOT FOUND THEN
        PERFORM pgqueue._find_topic(topic_name);  -- raises PQ001 when the topic is the missing part
        RAISE EXCEPTION 'subscriber % of topic % does not exist',
            coalesce(quote_literal(subscriber_name), 'NULL'), quote_literal(topic_name)
            USING ERRCODE = 'PQ003';
    END IF;
    RETURN s;
END
$$;

-- Makes the current transaction's commit wait until the WAL is flushed up to `upto` (default:
-- everything written so far). PostgreSQL flushes at commit only for a transaction that wrote
-- WAL of its own (RecordTransactionCommit decides before it writes the commit record), so a
-- read-only transaction or one that only took an xid commits without any flush, whatever
-- synchronous_commit says. When the flush is behind, this writes a tiny transactional WAL
-- record and turns synchronous commit back on for this transaction, so its commit returns only
-- once everything before it, the caller's rows included, is on disk. A flush that is already
-- past `upto` (another session's group commit) costs nothing.
CREATE OR REPLACE FUNCTION pgqueue._flush_at_commit(upto pg_lsn DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER  -- called by the publishing procedures, which run as their caller
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
    -- A standby only ever has WAL its primary flushed; a read-only transaction cannot write
    -- the record (its caller chose a transaction that can give no such guarantee).
    IF pg_is_in_recovery() OR current_setting('transaction_read_only')::boolean
       OR pg_current_wal_flush_lsn() >= coalesce(upto, pg_current_wal_insert_lsn()) THEN
        RETURN;
    END IF;
    PERFORM pgqueue._durable_commit();
    PERFORM pg_logical_emit_message(true, 'pgqueue', 'flush');
    -- The flush is ours, so is its count: report it before the answer goes out (an idle
    -- backend otherwise reports its WAL statistics up to 10 s later), so pg_stat_wal shows
    -- one flush per acknowledged publish to whoever checks right after it.
    IF current_setting('server_version_num')::integer >= 150000 THEN
        PERFORM pg_stat_force_next_flush();
    END IF;
END
$$;

-- Makes this transaction's commit synchronous even in a session that turned
-- synchronous_commit off: for transactions whose results (offsets handed out, messages
-- claimed) are shown to someone, who must never see them taken back by a crash.
CREATE OR REPLACE FUNCTION pgqueue._durable_commit()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
    IF current_setting('synchronous_commit') = 'off' THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
END
$$;

-- Advisory lock keys: (class, topic_id). The class keeps us clear of the application's own
-- advisory locks, which mostly use the one-argument form.
CREATE OR REPLACE FUNCTION pgqueue._lock_class(purpose text)
RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT CASE purpose WHEN 'assign' THEN 1903390001 WHEN 'topic' THEN 1903390002
                        WHEN 'retention' THEN 1903390003 WHEN 'owner' THEN 1903390004
                        WHEN 'caps' THEN 1903390005 END
$$;

-- The subscriber's position: every offset <= position is done (acked, filtered out or dead).
-- It is derived rather than stored, so an ack is a single DELETE and never a hot-row UPDATE.
CREATE OR REPLACE FUNCTION pgqueue._position(s pgqueue.subscriber)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT least(s.cursor, coalesce(
        (SELECT d."offset" - 1
           FROM pgqueue.delivery d
          WHERE d.topic_id = s.topic_id AND d.subscriber_id = s.subscriber_id
          ORDER BY d."offset" LIMIT 1),
        s.cursor))
$$;

CREATE OR REPLACE FUNCTION pgqueue._first_offset(p_topic_id integer)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT m."offset" FROM pgqueue.message m
     WHERE m.topic_id = p_topic_id ORDER BY m."offset" LIMIT 1
$$;

CREATE OR REPLACE FUNCTION pgqueue._last_offset(p_topic_id integer)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT coalesce((SELECT m."offset" FROM pgqueue.message m
                      WHERE m.topic_id = p_topic_id ORDER BY m."offset" DESC LIMIT 1), 0)
$$;

-- The position (last done offset) a start or reset target means. Exactly one target is given.
--   to_offset N   -> the subscriber next receives N
--   to_edge       -> 'earliest' (the oldest retained message) or 'latest' (only new messages)
--   to_time T     -> the first message published at or after T
--   ago D         -> to_time now() - D
--   shift N       -> current position + N (N may be negative)
-- The result is clamped to [first retained offset - 1, last offset].
CREATE OR REPLACE FUNCTION pgqueue._resolve_position(
    p_topic_id integer,
    current_position bigint,
    to_offset bigint,
    to_edge text,
    to_time timestamptz,
    ago interval,
    shift bigint
)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    targets integer := num_nonnulls(to_offset, to_edge, to_time, ago, shift);
    first_off bigint := pgqueue._first_offset(p_topic_id);
    last_off bigint := pgqueue._last_offset(p_topic_id);
    low bigint;
    high bigint;
    mid bigint;
    target timestamptz;
    result bigint;
BEGIN
    IF targets <> 1 THEN
        RAISE EXCEPTION 'give exactly one of to_offset, to_edge, to_time, ago, shift (got %)',
            targets USING ERRCODE = 'PQ010';
    END IF;
    first_off := coalesce(first_off, last_off + 1);

    IF to_offset IS NOT NULL THEN
        IF to_offset < 1 THEN
            RAISE EXCEPTION 'offsets start at 1, got %', to_offset USING ERRCODE = 'PQ010';
        END IF;
        result := to_offset - 1;
    ELSIF to_edge IS NOT NULL THEN
        IF to_edge = 'earliest' THEN
            result := first_off - 1;
        ELSIF to_edge = 'latest' THEN
            result := last_off;
        ELSE
            RAISE EXCEPTION 'to_edge is earliest or latest, got %', quote_literal(to_edge)
                USING ERRCODE = 'PQ010';
        END IF;
    ELSIF shift IS NOT NULL THEN
        IF current_position IS NULL THEN
            RAISE EXCEPTION 'shift needs an existing position' USING ERRCODE = 'PQ010';
        END IF;
        result := current_position + shift;
    ELSE
        IF ago IS NOT NULL AND ago < interval '0' THEN
            RAISE EXCEPTION 'ago must not be negative, got %', ago USING ERRCODE = 'PQ010';
        END IF;
        target := coalesce(to_time, now() - ago);
        -- Offsets are dense between first and last and published_at grows with them (up to
        -- commit reordering), so a binary search over the primary key finds the first message
        -- at or after the target in ~log2(n) index probes, with no index on published_at.
        low := first_off;
        high := last_off + 1;
        WHILE low < high LOOP
            mid := low + (high - low) / 2;
            IF (SELECT m.published_at < target FROM pgqueue.message m
                 WHERE m.topic_id = p_topic_id AND m."offset" = mid) THEN
                low := mid + 1;
            ELSE
                high := mid;
            END IF;
        END LOOP;
        result := low - 1;
    END IF;

    RETURN greatest(first_off - 1, least(result, last_off));
END
$$;

-- Is a message delivered to a subscriber with this filter?
-- Filter: {"payload": <contained>, "headers": <contained>, "match": {"<header>": "<glob>"}}
CREATE OR REPLACE FUNCTION pgqueue._matches(filter jsonb, payload jsonb, headers jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT filter IS NULL OR (
        (NOT filter ? 'payload' OR payload @> (filter -> 'payload'))
        AND (NOT filter ? 'headers' OR headers @> (filter -> 'headers'))
        AND (NOT filter ? 'like' OR NOT EXISTS (
                SELECT 1 FROM jsonb_each_text(filter -> 'like') AS g(header, pattern)
                 WHERE coalesce(headers ->> g.header, '') NOT LIKE g.pattern))
    )
$$;

-- Validates a user filter and compiles its globs ("alerts.*") to LIKE patterns, stored under
-- "like" beside the original "match", so claim evaluates plain LIKE.
CREATE OR REPLACE FUNCTION pgqueue._compile_filter(filter jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
    extra text[];
    bad text;
    compiled jsonb := '{}';
    g record;
BEGIN
    IF filter IS NULL OR filter = '{}'::jsonb THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION 'a filter is a JSON object, got %', jsonb_typeof(filter)
            USING ERRCODE = 'PQ009';
    END IF;
    SELECT array_agg(k) INTO extra FROM jsonb_object_keys(filter) k
     WHERE k NOT IN ('payload', 'headers', 'match');
    IF extra IS NOT NULL THEN
        RAISE EXCEPTION 'unknown filter keys %', extra
            USING ERRCODE = 'PQ009', HINT = 'a filter has payload, headers and match';
    END IF;
    IF filter ? 'headers' AND jsonb_typeof(filter -> 'headers') <> 'object' THEN
        RAISE EXCEPTION 'filter.headers is a JSON object' USING ERRCODE = 'PQ009';
    END IF;
    IF filter ? 'match' THEN
        IF jsonb_typeof(filter -> 'match') <> 'object' THEN
            RAISE EXCEPTION 'filter.match is an object of header -> glob' USING ERRCODE = 'PQ009';
        END IF;
        SELECT k INTO bad FROM jsonb_each(filter -> 'match') AS e(k, v)
         WHERE jsonb_typeof(e.v) <> 'string' LIMIT 1;
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION 'filter.match.% must be a string glob', bad USING ERRCODE = 'PQ009';
        END IF;
        FOR g IN SELECT * FROM jsonb_each_text(filter -> 'match') LOOP
            compiled := compiled || jsonb_build_object(g.key,
                replace(replace(replace(replace(replace(g.value,
                    '\', '\\'), '%', '\%'), '_', '\_'), '*', '%'), '?', '_'));
        END LOOP;
        filter := filter || jsonb_build_object('like', compiled);
    END IF;
    RETURN filter;
END
$$;

-- What a violated CHECK on a topic's or subscriber's settings means, in words: a caller is
-- told which setting is out of range, never the constraint's (or the table's) name.
CREATE OR REPLACE FUNCTION pgqueue._setting_refused(constraint_name text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT CASE constraint_name
        WHEN 'topic_retention_max_age_check' THEN 'retention_max_age must be more than 0'
        WHEN 'topic_retention_max_count_check' THEN 'retention_max_count must be more than 0'
        WHEN 'topic_max_payload_bytes_check' THEN 'max_payload_bytes must be more than 0'
        WHEN 'topic_dedup_window_check' THEN 'dedup_window must not be negative'
        WHEN 'topic_segment_size_check' THEN 'segment_size must be at least 10'
        WHEN 'subscriber_max_attempts_check' THEN 'max_attempts must be from 1 to 1000'
        WHEN 'subscriber_backoff_base_check' THEN 'backoff_base must not be negative'
        WHEN 'backoff_max_not_below_backoff' THEN 'backoff_max must not be below backoff_base'
        ELSE 'a setting is out of range'
    END
$$;
