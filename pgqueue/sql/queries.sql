-- Every query the library sends. Each calls a stored function with $n parameters and explicit
-- casts; nothing is ever built from values. Blocks are named "-- name: <name>".

-- name: create_topic
SELECT * FROM pgqueue.create_topic($1::text, $2::text, $3::interval, $4::bigint, $5::integer,
                                   $6::interval, $7::bigint, $8::integer)

-- name: alter_topic
SELECT * FROM pgqueue.alter_topic($1::text, $2::text, $3::interval, $4::bigint, $5::integer,
                                  $6::interval, $7::boolean)

-- name: delete_topic
SELECT pgqueue.delete_topic($1::text)

-- name: list_topics
SELECT * FROM pgqueue.list_topics($1::text)

-- name: publish
SELECT pgqueue.publish($1::text, $2::jsonb, $3::jsonb, $4::text, $5::text, $6::interval,
                       $7::text, $8::text)

-- name: publish_batch
-- $2 is one JSON array of the payloads (see pgqueue._jsonb_elements).
SELECT pgqueue.publish_batch($1::text, pgqueue._jsonb_elements($2::jsonb), $3::jsonb[],
                             $4::text[], $5::text[], $6::interval[], $7::text[], $8::text[])

-- name: publish_and_commit
CALL pgqueue.publish_and_commit($1::text, $2::jsonb, $3::jsonb, $4::text, $5::text,
                                $6::interval, $7::text, $8::text, NULL)

-- name: publish_batch_and_commit
CALL pgqueue.publish_batch_and_commit($1::text, pgqueue._jsonb_elements($2::jsonb),
                                      $3::jsonb[], $4::text[], $5::text[], $6::interval[],
                                      $7::text[], $8::text[], NULL)

-- name: message_offsets
-- The library runs it in a transaction of its own, so it may number waiting messages first.
SELECT pgqueue.message_offsets($1::text, $2::bigint[], true)

-- name: assign
CALL pgqueue.assign($1::text, NULL)

-- name: create_subscriber
SELECT * FROM pgqueue.create_subscriber($1::text, $2::text, $3::text, $4::bigint,
                                        $5::timestamptz, $6::jsonb, $7::integer, $8::interval,
                                        $9::interval, $10::boolean, $11::integer, $12::integer)

-- name: hold_owner_lock
-- Held by a Queue's listener connection for its life (see pgqueue.remove_orphans).
-- Shared: a stale session of the same owner (a connection the network dropped but the
-- server has not noticed yet) or a key drawn twice never blocks it.
SELECT pg_advisory_lock_shared(pgqueue._lock_class('owner'), $1::integer)

-- name: remove_orphans
SELECT pgqueue.remove_orphans($1::interval)

-- name: alter_subscriber
SELECT * FROM pgqueue.alter_subscriber($1::text, $2::text, $3::jsonb, $4::integer,
                                       $5::interval, $6::interval, $7::boolean)

-- name: delete_subscriber
SELECT pgqueue.delete_subscriber($1::text, $2::text)

-- name: list_subscribers
SELECT * FROM pgqueue.list_subscribers($1::text)

-- name: subscriber_by_id
SELECT * FROM pgqueue.subscriber_by_id($1::bigint)

-- name: claim
SELECT * FROM pgqueue.claim($1::text, $2::text, $3::integer, $4::interval, $5::bigint[],
                            $6::bigint[], true, $7::text)

-- name: ack
SELECT pgqueue.ack($1::text, $2::text, $3::bigint[], $4::bigint[])

-- name: nack
SELECT pgqueue.nack($1::text, $2::text, $3::bigint, $4::bigint, $5::interval, $6::text)

-- name: extend_lease
SELECT pgqueue.extend_lease($1::text, $2::text, $3::bigint[], $4::bigint[], $5::interval)

-- name: release
SELECT pgqueue.release($1::text, $2::text, $3::bigint[], $4::bigint[])

-- name: give_back
SELECT pgqueue.give_back($1::text, $2::text, $3::bigint[], $4::bigint[])

-- name: reset
SELECT * FROM pgqueue.reset($1::text, $2::text, $3::bigint, $4::text, $5::timestamptz,
                            $6::interval, $7::bigint, $8::boolean, $9::bigint, $10::boolean)

-- name: list_dead_letters
SELECT * FROM pgqueue.list_dead_letters($1::text, $2::text, $3::bigint, $4::integer)

-- name: replay_dead_letters
SELECT pgqueue.replay_dead_letters($1::text, $2::text, $3::bigint, $4::bigint)

-- name: purge_dead_letters
SELECT pgqueue.purge_dead_letters($1::text, $2::text, $3::bigint, $4::bigint)

-- name: topic_stats
SELECT * FROM pgqueue.topic_stats($1::text)

-- name: subscriber_stats
SELECT * FROM pgqueue.subscriber_stats($1::text, $2::text)

-- name: subscribers_due
SELECT * FROM pgqueue.subscribers_due($1::text, true)

-- name: list_leases
SELECT * FROM pgqueue.list_leases($1::text, $2::text, $3::integer)

-- name: read_messages
SELECT * FROM pgqueue.read_messages($1::text, $2::bigint, $3::integer, true)

-- name: ping
SELECT 1

-- name: seconds_until_due
SELECT pgqueue.seconds_until_due($1::text, $2::text)

-- name: enforce_retention
SELECT * FROM pgqueue.enforce_retention($1::text)
