-- The schema as it is now: tables, indexes, sequences, types, roles and ownership, beside the
-- functions of db/functions/. The migrations (db/migrations/versions/) are how a database gets
-- here; this file is what they add up to, for reading and review. A test builds one database
-- from the migrations and one from this file and db/functions/, and compares their catalogs:
-- a migration that changes the schema changes this file in the same commit.
--
-- Why the tables look like this: see the docstring of revision 0001 and docs/design.md.

-- Roles belong to the cluster; CREATE ROLE has no IF NOT EXISTS.
DO $$ BEGIN CREATE ROLE pgqueue_owner NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE pgqueue_runtime LOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;

CREATE SCHEMA pgqueue AUTHORIZATION pgqueue_owner;
SET ROLE pgqueue_owner;

CREATE TABLE pgqueue.topic (
    topic_id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$'),
    description         text NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL DEFAULT now(),
    retention_max_age   interval CHECK (retention_max_age > interval '0'),
    retention_max_count bigint CHECK (retention_max_count > 0),
    max_payload_bytes   integer NOT NULL DEFAULT 1048576 CHECK (max_payload_bytes > 0),
    dedup_window        interval NOT NULL DEFAULT interval '1 day'
                        CHECK (dedup_window >= interval '0'),
    -- Offsets per log partition: retention removes whole segments (see pgqueue.segment).
    segment_size        bigint NOT NULL DEFAULT 1000000 CHECK (segment_size >= 10)
);

CREATE SEQUENCE pgqueue.message_id_seq AS bigint CACHE 32;

-- Publishes without an offset yet: writers never wait for each other; an assignment round
-- moves committed rows into message with dense offsets.
CREATE TABLE pgqueue.pending (
    topic_id        integer NOT NULL,
    message_id      bigint NOT NULL DEFAULT nextval('pgqueue.message_id_seq'),
    xid             xid8 NOT NULL DEFAULT pg_current_xact_id(),
    payload         jsonb NOT NULL,
    headers         jsonb NOT NULL DEFAULT '{}',
    key             text,
    correlation_id  text,
    reply_to        text,
    published_at    timestamptz NOT NULL DEFAULT now(),
    available_at    timestamptz
);
-- The assignment round finds committed rows by the publishing transaction's id.
CREATE INDEX pending_topic_xid ON pgqueue.pending (topic_id, xid);

-- The log: insert-only, partitioned into per-topic segments of offsets (pgqueue.segment).
CREATE TABLE pgqueue.message (
    topic_id        integer NOT NULL,
    "offset"        bigint NOT NULL,
    message_id      bigint NOT NULL,
    payload         jsonb NOT NULL,
    headers         jsonb NOT NULL,
    key             text,
    correlation_id  text,
    reply_to        text,
    published_at    timestamptz NOT NULL,
    available_at    timestamptz,
    -- Set on the last row of each assignment round: the snapshot that round saw.
    round_snapshot  pg_snapshot,
    PRIMARY KEY (topic_id, "offset")
) PARTITION BY RANGE (topic_id, "offset");
CREATE INDEX message_topic_message_id ON pgqueue.message (topic_id, message_id);

CREATE TABLE pgqueue.segment (
    topic_id        integer NOT NULL,
    segment         bigint NOT NULL CHECK (segment >= 0),
    -- Truncated by retention, to be dropped when the parent's lock can be had.
    emptied         boolean NOT NULL DEFAULT false,
    PRIMARY KEY (topic_id, segment)
);

CREATE TABLE pgqueue.idempotency (
    topic_id        integer NOT NULL,
    idempotency_key text NOT NULL,
    message_id      bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic_id, idempotency_key)
);

CREATE TABLE pgqueue.subscriber (
    topic_id        integer NOT NULL,
    subscriber_id   bigint GENERATED ALWAYS AS IDENTITY,
    name            text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$'),
    -- Every offset <= cursor has been handed out, skipped by the filter or scheduled.
    cursor          bigint NOT NULL CHECK (cursor >= 0),
    filter          jsonb,
    max_attempts    integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 1000),
    backoff_base    interval NOT NULL DEFAULT interval '1 second'
                    CHECK (backoff_base >= interval '0'),
    backoff_max     interval NOT NULL DEFAULT interval '5 minutes'
                    CONSTRAINT backoff_max_not_below_backoff
                    CHECK (backoff_max >= backoff_base),
    ephemeral       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Bumped by every reset, with the position it set: claims carry it, so a consumer can
    -- tell messages claimed before a reset (stale) from those claimed after.
    epoch           bigint NOT NULL DEFAULT 0,
    reset_position  bigint,
    -- An ephemeral subscriber's creator (the key of its owner lock), and since when nobody
    -- holds that lock: remove_orphans takes it away after a grace period.
    owner           integer,
    orphaned_since  timestamptz,
    PRIMARY KEY (topic_id, subscriber_id),
    UNIQUE (topic_id, name)
);
CREATE UNIQUE INDEX subscriber_id_key ON pgqueue.subscriber (subscriber_id);

-- A subscriber's unfinished work: 'leased' to a consumer until due_at, or 'retry' (claimable
-- again at due_at). Everything at or below the cursor without a row here is done.
CREATE TABLE pgqueue.delivery (
    topic_id        integer NOT NULL,
    subscriber_id   bigint NOT NULL,
    "offset"        bigint NOT NULL,
    state           text NOT NULL CHECK (state IN ('leased', 'retry')),
    attempt         integer NOT NULL CHECK (attempt >= 0),
    lease_token     bigint,
    -- Lease end for 'leased', next attempt for 'retry': either way claimable once passed.
    due_at          timestamptz NOT NULL,
    last_error      text,
    -- Who took the lease last (claim's consumer argument), and when.
    consumer        text,
    leased_at       timestamptz,
    PRIMARY KEY (topic_id, subscriber_id, "offset")
);
CREATE INDEX delivery_due ON pgqueue.delivery (topic_id, subscriber_id, due_at)
 WHERE due_at IS NOT NULL;

CREATE SEQUENCE pgqueue.lease_token_seq AS bigint CACHE 32;

CREATE TABLE pgqueue.dead_letter (
    topic_id        integer NOT NULL,
    subscriber_id   bigint NOT NULL,
    "offset"        bigint NOT NULL,
    attempts        integer NOT NULL,
    last_error      text,
    dead_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic_id, subscriber_id, "offset")
);

CREATE TYPE pgqueue.subscriber_info AS (
    topic text,
    subscriber text,
    subscriber_id bigint,
    "position" bigint,
    filter jsonb,
    max_attempts integer,
    backoff_base interval,
    backoff_max interval,
    ephemeral boolean,
    created_at timestamptz,
    epoch bigint
);

CREATE TYPE pgqueue.claimed_message AS (
    topic text,
    "offset" bigint,
    attempt integer,
    lease_token bigint,
    payload jsonb,
    headers jsonb,
    key text,
    correlation_id text,
    reply_to text,
    published_at timestamptz,
    message_id bigint,
    epoch bigint,
    reset_position bigint
);

CREATE TYPE pgqueue.reset_result AS (
    topic text,
    subscriber text,
    old_position bigint,
    new_position bigint,
    applied boolean
);

RESET ROLE;
-- Routines created by the owner are not callable by everyone unless granted
-- (db/functions/99_privileges.sql grants the API to pgqueue_runtime).
ALTER DEFAULT PRIVILEGES FOR ROLE pgqueue_owner REVOKE EXECUTE ON ROUTINES FROM PUBLIC;
