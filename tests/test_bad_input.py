"""Bad input raises a clear PgQueueError subclass and changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import pgqueue
from tests.support import eventually, within

SNAPSHOT = """
    SELECT (SELECT count(*) FROM pgqueue.topic), (SELECT count(*) FROM pgqueue.message),
           (SELECT count(*) FROM pgqueue.pending), (SELECT count(*) FROM pgqueue.subscriber),
           (SELECT count(*) FROM pgqueue.delivery), (SELECT count(*) FROM pgqueue.idempotency)
"""


@pytest.fixture
async def populated(queue: pgqueue.Queue) -> pgqueue.Queue:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish("orders", {"id": 1})
    return queue


Case = Callable[[pgqueue.Queue], Awaitable[Any]]

CASES: list[tuple[str, Case, type[pgqueue.PgQueueError]]] = [
    ("empty topic name", lambda q: q.create_topic(""), pgqueue.InvalidName),
    ("101-character name", lambda q: q.create_topic("a" * 101), pgqueue.InvalidName),
    ("name starting with a dot", lambda q: q.create_topic(".hidden"), pgqueue.InvalidName),
    ("name with a space", lambda q: q.create_topic("two words"), pgqueue.InvalidName),
    ("name with a slash", lambda q: q.create_topic("a/b"), pgqueue.InvalidName),
    ("non-ASCII name", lambda q: q.create_topic("zürich"), pgqueue.InvalidName),
    ("bad subscriber name", lambda q: q.subscribe("orders", "no good"), pgqueue.InvalidName),
    ("NaN payload", lambda q: q.publish("orders", {"x": float("nan")}), pgqueue.InvalidPayload),
    ("Infinity payload", lambda q: q.publish("orders", float("inf")), pgqueue.InvalidPayload),
    ("NUL in a string", lambda q: q.publish("orders", {"x": "a\u0000b"}), pgqueue.InvalidPayload),
    ("NUL in a key", lambda q: q.publish("orders", {"a\u0000": 1}), pgqueue.InvalidPayload),
    ("unserialisable payload", lambda q: q.publish("orders", object()), pgqueue.InvalidPayload),
    (
        "NaN in a batch",
        lambda q: q.publish_many("orders", [1, float("nan")]),
        pgqueue.InvalidPayload,
    ),
    (
        "NUL in a batch",
        lambda q: q.publish_many("orders", ["fine", {"x": "a\u0000b"}]),
        pgqueue.InvalidPayload,
    ),
    (
        "oversize payload in a batch",
        lambda q: q.publish_many("orders", [1, "x" * 1_048_577]),
        pgqueue.PayloadTooLarge,
    ),
    (
        "non-string header",
        lambda q: q.publish("orders", 1, headers={"n": 1}),  # type: ignore[dict-item]
        pgqueue.InvalidPayload,
    ),
    ("oversize payload", lambda q: q.publish("orders", "x" * 1_048_577), pgqueue.PayloadTooLarge),
    ("empty batch", lambda q: q.publish_many("orders", []), pgqueue.InvalidArgument),
    ("negative delay", lambda q: q.publish("orders", 1, delay=-1), pgqueue.InvalidArgument),
    ("unknown topic", lambda q: q.publish("nope", 1), pgqueue.TopicNotFound),
    ("unknown topic, batch", lambda q: q.publish_many("nope", [1]), pgqueue.TopicNotFound),
    ("subscribe to unknown topic", lambda q: q.subscribe("nope", "s"), pgqueue.TopicNotFound),
    ("unknown subscriber", lambda q: q.claim("orders", "nobody"), pgqueue.SubscriberNotFound),
    ("claim from unknown topic", lambda q: q.claim("nope", "billing"), pgqueue.TopicNotFound),
    ("claim 0", lambda q: q.claim("orders", "billing", 0), pgqueue.InvalidArgument),
    ("claim -1", lambda q: q.claim("orders", "billing", -1), pgqueue.InvalidArgument),
    ("claim 10001", lambda q: q.claim("orders", "billing", 10_001), pgqueue.InvalidArgument),
    ("claim 2**40", lambda q: q.claim("orders", "billing", 2**40), pgqueue.InvalidArgument),
    ("lease 0", lambda q: q.claim("orders", "billing", lease=0), pgqueue.InvalidArgument),
    ("negative lease", lambda q: q.claim("orders", "billing", lease=-5), pgqueue.InvalidArgument),
    (
        "lease of 2 days",
        lambda q: q.claim("orders", "billing", lease=172_800),
        pgqueue.InvalidArgument,
    ),
    (
        "lease of 1e300 s",
        lambda q: q.claim("orders", "billing", lease=1e300),
        pgqueue.InvalidArgument,
    ),
    ("reset to offset 0", lambda q: q.reset("orders", to=0), pgqueue.InvalidPosition),
    ("reset to nonsense", lambda q: q.reset("orders", to="yesterday-ish"), pgqueue.InvalidPosition),
    (
        "reset to a naive time",
        lambda q: q.reset("orders", to="2026-01-01T00:00:00"),
        pgqueue.InvalidPosition,
    ),
    (
        "reset unknown subscriber",
        lambda q: q.reset("orders", subscriber="x", to="earliest"),
        pgqueue.SubscriberNotFound,
    ),
    (
        "filter not an object",
        lambda q: q.subscribe("orders", "f", filter=["a"]),  # type: ignore[arg-type]
        pgqueue.InvalidFilter,
    ),
    (
        "filter with unknown key",
        lambda q: q.subscribe("orders", "f", filter={"where": 1}),
        pgqueue.InvalidFilter,
    ),
    (
        "glob not a string",
        lambda q: q.subscribe("orders", "f", filter={"match": {"type": 1}}),
        pgqueue.InvalidFilter,
    ),
    (
        "max_attempts 0",
        lambda q: q.subscribe("orders", "f", max_attempts=0),
        pgqueue.InvalidArgument,
    ),
    ("duplicate topic", lambda q: q.create_topic("orders"), pgqueue.TopicExists),
    ("duplicate subscriber", lambda q: q.subscribe("orders", "billing"), pgqueue.SubscriberExists),
    (
        "ack offsets without tokens",
        lambda q: q.ack("orders", "billing", [1]),
        pgqueue.InvalidArgument,
    ),
]


@pytest.mark.parametrize(("case", "call", "error"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_refused_and_changes_nothing(
    populated: pgqueue.Queue,
    conn: asyncpg.Connection,
    case: str,
    call: Case,
    error: type[pgqueue.PgQueueError],
) -> None:
    before = tuple(await conn.fetchrow(SNAPSHOT))
    with pytest.raises(error) as raised:
        await call(populated)
    assert str(raised.value), case
    assert tuple(await conn.fetchrow(SNAPSHOT)) == before


async def test_the_sql_functions_refuse_bad_input_too(
    populated: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    """psql users meet the same checks, with our SQLSTATEs."""
    before = tuple(await conn.fetchrow(SNAPSHOT))
    statements = {
        "SELECT pgqueue.create_topic('bad name')": "PQ005",
        "SELECT pgqueue.publish('nope', '1')": "PQ001",
        "SELECT pgqueue.publish('orders', NULL)": "PQ008",
        "SELECT pgqueue.publish('orders', '{}', '[1]')": "PQ008",
        "SELECT pgqueue.publish('orders', '{}', '{\"a\": 1}')": "PQ008",
        "SELECT * FROM pgqueue.claim('orders', 'billing', 0)": "PQ006",
        "SELECT * FROM pgqueue.claim('orders', 'nobody')": "PQ003",
        "SELECT * FROM pgqueue.reset('orders', to_offset => 1, shift => 1)": "PQ010",
        "SELECT pgqueue.ack('orders', 'billing', '{1,2}', '{1,2,3}')": "PQ006",
    }
    for statement, sqlstate in statements.items():
        with pytest.raises(asyncpg.PostgresError) as raised:
            await conn.execute(statement)
        assert raised.value.sqlstate == sqlstate, statement
    assert tuple(await conn.fetchrow(SNAPSHOT)) == before


async def test_payload_limit_is_a_setting(database_dsn: str) -> None:
    settings = pgqueue.Settings(max_payload_bytes=100)
    async with pgqueue.connect(database_dsn, settings=settings) as q:
        await q.create_topic("small")
        await q.publish("small", "x" * 90)
        with pytest.raises(pgqueue.PayloadTooLarge):
            await q.publish("small", "x" * 200)
        # The limit is per payload: a batch larger than it whose payloads each fit goes in.
        assert len(await q.publish_many("small", ["x" * 90] * 3)) == 3
        with pytest.raises(pgqueue.PayloadTooLarge):
            await q.publish_many("small", ["x" * 90, "x" * 200])


def _nested(levels: int) -> object:
    value: object = "bottom"
    for _ in range(levels):
        value = [value]
    return value


async def test_payloads_nested_deeper_than_the_read_paths_can_return_are_refused(
    populated: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    """Finding 12: a payload nested ~950 levels was accepted, and then every read path failed
    on it (RecursionError, pydantic's serialization depth) and took its neighbours along."""
    before = await conn.fetchrow(SNAPSHOT)
    for publish in (
        lambda: populated.publish("orders", _nested(100)),
        lambda: populated.publish_many("orders", [1, {"deep": _nested(120)}]),
        lambda: populated.publish("orders", _nested(950)),
    ):
        with pytest.raises(pgqueue.InvalidPayload, match="nested more than 99 levels"):
            await publish()
    async with conn.transaction():
        with pytest.raises(pgqueue.InvalidPayload, match="nested more than 99 levels"):
            await pgqueue.publish(conn, "orders", _nested(300))
    assert await conn.fetchrow(SNAPSHOT) == before
    # The deepest accepted payload goes through every read path.
    await populated.publish("orders", _nested(99))
    assert (await populated.read("orders"))[-1].payload == _nested(99)


async def test_a_publish_queued_behind_delete_topic_fails_cleanly(
    queue: pgqueue.Queue, conn: asyncpg.Connection, database_dsn: str
) -> None:
    """Finding 5: a publish waiting behind delete_topic was then accepted and lost (an orphan
    pending row) or failed with a raw 23514 'no partition' error."""
    await queue.create_topic("doomed")
    deleter = await asyncpg.connect(database_dsn)
    try:
        deleting = deleter.transaction()
        await deleting.start()
        await deleter.execute("SELECT pgqueue.delete_topic('doomed')")

        publisher = await asyncpg.connect(database_dsn)
        try:
            in_tx = publisher.transaction()
            await in_tx.start()
            queued_in_tx = asyncio.create_task(pgqueue.publish(publisher, "doomed", "in-tx"))
            queued_direct = asyncio.create_task(queue.publish("doomed", "direct"))
            # Both wait on the topic's lock; let them queue up behind the delete.
            await eventually(lambda: _lock_waiters(conn, 2))
            await deleting.commit()
            for queued in (queued_in_tx, queued_direct):
                with pytest.raises(pgqueue.TopicNotFound):
                    await within(queued)
            await in_tx.rollback()
        finally:
            await publisher.close()
    finally:
        await deleter.close()
    assert await conn.fetchval("SELECT count(*) FROM pgqueue.pending") == 0
    # A topic of the same name starts empty.
    await queue.create_topic("doomed")
    assert await queue.read("doomed") == []


async def _lock_waiters(conn: asyncpg.Connection, n: int) -> bool:
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    )
    return bool(waiting >= n)


async def test_publish_and_commit_refuses_to_commit_its_callers_work(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    """Finding 11: publish_and_commit CALLed from the caller's own procedure committed what
    the caller had written before it."""
    await queue.create_topic("orders")
    await conn.execute("CREATE TABLE ledger (n int)")
    await conn.execute(
        """
        CREATE PROCEDURE record_and_publish() LANGUAGE plpgsql AS $$
        DECLARE
            o bigint;
        BEGIN
            INSERT INTO ledger VALUES (1);
            CALL pgqueue.publish_and_commit('orders', '"hello"', '{}', NULL, NULL, NULL, NULL,
                                            NULL, o);
            RAISE EXCEPTION 'the caller changes its mind';
        END $$
        """
    )
    with pytest.raises(asyncpg.PostgresError, match="call it in a transaction of its own"):
        await conn.execute("CALL record_and_publish()")
    assert await conn.fetchval("SELECT count(*) FROM ledger") == 0
    assert await queue.read("orders") == []


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (
            "SELECT pgqueue.create_topic('t', retention_max_age => interval '-1 s')",
            "retention_max_age",
        ),
        ("SELECT pgqueue.create_topic('t', segment_size => 5)", "segment_size must be at least 10"),
        ("SELECT pgqueue.alter_topic('k', retention_max_count => 0)", "retention_max_count"),
        (
            "SELECT pgqueue.create_subscriber('k', 's', "
            "backoff_base => '10 s', backoff_max => '1 s')",
            "backoff_max must not be below backoff_base",
        ),
        ("SELECT pgqueue.create_subscriber('k', 's', max_attempts => 0)", "max_attempts"),
    ],
)
async def test_a_refused_setting_is_named_in_words_not_by_its_constraint(
    queue: pgqueue.Queue, conn: asyncpg.Connection, call: str, said: str
) -> None:
    await queue.create_topic("k")
    with pytest.raises(asyncpg.PostgresError) as refused:
        await conn.execute(call)
    assert refused.value.sqlstate == "PQ006"
    assert said in str(refused.value) and "_check" not in str(refused.value)
    assert "constraint" not in str(refused.value)
