"""Retention removes whole log segments (DROP, else TRUNCATE), never rows one by one, and moves
lagging subscribers up to the first retained offset."""

from __future__ import annotations

import json
from datetime import timedelta

import asyncpg
import pytest

import pgqueue
from tests.support import drain, within


async def _segments(conn: asyncpg.Connection, topic: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT s.segment FROM pgqueue.segment s JOIN pgqueue.topic t USING (topic_id) "
        "WHERE t.name = $1 ORDER BY s.segment",
        topic,
    )
    return [r["segment"] for r in rows]


async def _segment_tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'pgqueue.message'::regclass"
    )
    return {r["relname"] for r in rows}


async def _offsets(queue: pgqueue.Queue, topic: str) -> list[int]:
    return [m.offset for m in await queue.read(topic, from_offset=1, limit=1000)]


async def test_segments_are_made_ahead_of_appends_of_any_size(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    await queue.create_topic("t", segment_size=10)
    assert await _segments(conn, "t") == [0, 1]
    await queue.publish_many("t", list(range(5)))
    assert await _segments(conn, "t") == [0, 1]  # no DDL inside a segment
    await queue.publish_many("t", list(range(30)))  # 6..35: one append across three segments
    assert await _segments(conn, "t") == [0, 1, 2, 3, 4]
    # An in-transaction publish bigger than the room ahead: its assignment round makes room.
    async with conn.transaction():
        await conn.execute(
            "SELECT pgqueue.publish_batch('t', array_agg(to_jsonb(g))) "
            "FROM generate_series(1, 25) g"
        )
    await queue.subscribe("t", "all", start="earliest")
    assert len(await drain(queue, "t", "all")) == 60
    assert await _offsets(queue, "t") == list(range(1, 61))
    assert await _segments(conn, "t") == list(range(8))
    tid = await conn.fetchval("SELECT topic_id FROM pgqueue.topic WHERE name = 't'")
    assert {f"message_{tid}_{k}" for k in range(8)} <= await _segment_tables(conn)


async def test_count_retention_drops_whole_segments_and_moves_lagging_subscribers(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    await queue.create_topic("t", segment_size=10, retention_max_count=15)
    await queue.subscribe("t", "lagging", start="earliest")
    await queue.subscribe("t", "current", start="earliest")
    await queue.publish_many("t", list(range(1, 46)))  # offsets 1..45
    # A retry pending on an offset about to go, and a claim holding one that stays.
    [first] = await queue.claim("t", "lagging", 1)
    await queue.nack(first, delay=timedelta(hours=1))
    assert len(await drain(queue, "t", "current")) == 45
    tid = await conn.fetchval("SELECT topic_id FROM pgqueue.topic WHERE name = 't'")

    [result] = await queue.enforce_retention("t")

    # Offsets 1..29 (segments 0-2) have 15 newer messages; segment 3 (30..39) has 39 > 45 - 15.
    assert (result.segments_removed, result.messages_removed, result.first_offset) == (3, 29, 30)
    assert result.subscribers_moved == 1
    assert await _segments(conn, "t") == [3, 4, 5]
    assert not {f"message_{tid}_{k}" for k in range(3)} & await _segment_tables(conn)
    assert await _offsets(queue, "t") == list(range(30, 46))
    [lagging] = await queue.subscriber_stats("t", "lagging")
    assert (lagging.position, lagging.retrying) == (29, 0)
    assert [m.payload for m in await queue.claim("t", "lagging", 100)] == list(range(30, 46))
    [current] = await queue.subscriber_stats("t", "current")
    assert current.position == 45  # ahead already: untouched

    [again] = await queue.enforce_retention("t")
    assert (again.segments_removed, again.first_offset) == (0, 30)


async def test_age_retention_looks_at_each_segments_last_message(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    await queue.create_topic("t", segment_size=10, retention_max_age=timedelta(hours=1))
    await queue.publish_many("t", list(range(1, 36)))  # offsets 1..35, segments 0-3
    tid = await conn.fetchval("SELECT topic_id FROM pgqueue.topic WHERE name = 't'")
    # Age the messages up to offset 19 (the test's only way to move time).
    await conn.execute(
        "UPDATE pgqueue.message SET published_at = now() - interval '2 hours' "
        'WHERE topic_id = $1 AND "offset" <= 19',
        tid,
    )
    [result] = await queue.enforce_retention("t")
    assert (result.segments_removed, result.first_offset) == (2, 20)
    assert await _offsets(queue, "t") == list(range(20, 36))


async def test_the_newest_segment_is_never_removed(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    await queue.create_topic("t", segment_size=10, retention_max_age=timedelta(hours=1))
    await queue.publish_many("t", list(range(1, 26)))  # offsets 1..25
    await conn.execute("UPDATE pgqueue.message SET published_at = now() - interval '2 hours'")
    [result] = await queue.enforce_retention("t")
    assert (result.segments_removed, result.first_offset) == (2, 20)
    # The log goes on from where it was: its last row kept the assignment state.
    assert await queue.publish("t", "next") == 26


async def test_a_reader_holding_a_segment_defers_its_removal(
    queue: pgqueue.Queue, conn: asyncpg.Connection, database_dsn: str
) -> None:
    await queue.create_topic("t", segment_size=10, retention_max_count=5)
    await queue.publish_many("t", list(range(1, 26)))
    tid = await conn.fetchval("SELECT topic_id FROM pgqueue.topic WHERE name = 't'")
    reader = await asyncpg.connect(database_dsn)
    try:
        async with reader.transaction():
            # Reading offset 15 locks the log and segment 1 only (pruned when planned).
            payload = await reader.fetchval(
                'SELECT payload FROM pgqueue.message WHERE topic_id = $1 AND "offset" = 15', tid
            )
            assert payload == "15"  # jsonb text, as asyncpg returns it
            [held] = await within(queue.enforce_retention("t"))
            # Segment 0 could not be dropped either (the reader holds the log), only emptied.
            assert (held.segments_removed, held.first_offset) == (1, 10)
            assert await _offsets(queue, "t") == list(range(10, 26))
        [done] = await queue.enforce_retention("t")
        assert (done.segments_removed, done.first_offset) == (1, 20)
        assert await _segments(conn, "t") == [2, 3]
    finally:
        await reader.close()


async def test_topics_without_a_policy_keep_everything(queue: pgqueue.Queue) -> None:
    await queue.create_topic("kept", segment_size=10)
    await queue.publish_many("kept", list(range(50)))
    assert await queue.enforce_retention() == []
    assert len(await _offsets(queue, "kept")) == 50


async def test_bad_retention_input(queue: pgqueue.Queue) -> None:
    with pytest.raises(pgqueue.TopicNotFound):
        await queue.enforce_retention("nope")
    with pytest.raises(pgqueue.PgQueueError):
        await queue.create_topic("tiny", segment_size=1)
    assert [t.name for t in await queue.list_topics()] == []


async def test_retention_tells_the_subscribers_it_moves(
    queue: pgqueue.Queue, database_dsn: str
) -> None:
    """Finding 16: retention moved lagging subscribers without a new epoch or a notification,
    so their live consumers kept leases that no longer existed."""
    await queue.create_topic("t", segment_size=10, retention_max_count=15)
    await queue.subscribe("t", "lagging", start="earliest")
    await queue.publish_many("t", list(range(1, 46)))
    [held] = await queue.claim("t", "lagging", 1)
    heard: list[dict[str, object]] = []
    listener = await within(asyncpg.connect(database_dsn))
    try:
        await listener.add_listener("pgqueue_reset", lambda *a: heard.append(json.loads(a[3])))
        [result] = await queue.enforce_retention("t")
        assert result.subscribers_moved == 1
        await listener.execute("SELECT 1")  # notifications arrive before the next reply
    finally:
        await listener.close()
    assert heard == [{"topic": "t", "subscriber": "lagging", "position": 29, "epoch": 1}]
    [claimed] = await queue.claim("t", "lagging", 1)
    assert (claimed.offset, claimed.epoch) == (30, 1)
    assert claimed.epoch > held.epoch


async def test_retention_while_consumers_hold_leases_and_dead_letters(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    """Leases, retries and dead letters on removed offsets go with them; the consumer's late
    ack is refused, the subscriber goes on from the first retained offset, and a subscriber
    ahead keeps its lease."""
    await queue.create_topic("t", segment_size=10, retention_max_count=15)
    await queue.subscribe("t", "slow", start="earliest", max_attempts=1)
    await queue.subscribe("t", "fast", start="earliest")
    await queue.publish_many("t", list(range(1, 46)))
    [dead] = await queue.claim("t", "slow", 1)
    assert await dead.nack(error="poison") == "dead"
    leased = await queue.claim("t", "slow", 5)  # offsets 2..6, about to be removed
    assert len(await drain(queue, "t", "fast")) == 45
    await queue.publish("t", 46)
    [kept] = await queue.claim("t", "fast", 1)  # offset 46 stays

    [result] = await queue.enforce_retention("t")
    assert (result.first_offset, result.subscribers_moved) == (30, 1)
    assert await queue.ack("t", "slow", leased) == []  # their leases went with the offsets
    assert await queue.dead_letters("t", "slow") == []
    assert await conn.fetchval('SELECT count(*) FROM pgqueue.delivery WHERE "offset" < 30') == 0
    assert [m.offset for m in await queue.claim("t", "slow", 100)][:2] == [30, 31]
    assert await queue.ack("t", "fast", [kept]) == [46]


async def test_two_retention_passes_at_once_do_the_work_once(
    queue: pgqueue.Queue, database_dsn: str
) -> None:
    await queue.create_topic("t", segment_size=10, retention_max_count=5)
    await queue.publish_many("t", list(range(1, 36)))
    other = await within(asyncpg.connect(database_dsn))
    try:
        async with other.transaction():
            # A pass in progress elsewhere (it holds the topic's retention lock) ...
            [first] = await other.fetch("SELECT * FROM pgqueue.enforce_retention('t')")
            assert first["segments_removed"] == 3
            # ... makes a concurrent pass skip the topic rather than wait or repeat it.
            assert await within(queue.enforce_retention("t")) == []
        [after] = await queue.enforce_retention("t")
        assert (after.segments_removed, after.first_offset) == (0, 30)
    finally:
        await other.close()
