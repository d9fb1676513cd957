"""The listener connection: re-LISTEN after a drop, and the polling fallback without it."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

import pgqueue
from pgqueue.listener import Listener
from tests.support import ClaimWatch, drain, eventually, within


async def _first_payload(queue: pgqueue.Queue, poll_interval: float) -> object:
    async for message in queue.consume("orders", "billing", poll_interval=poll_interval):
        await message.ack()
        return message.payload
    raise AssertionError("consume ended")


async def _listening_pids(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    return [r["pid"] for r in rows]


async def test_a_queue_listens_only_once_it_consumes(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing")
    await queue.publish("orders", "before anyone listens")
    assert await _listening_pids(conn) == []
    assert not queue.listener.connected
    # A consumer starts the listener; what was published before that is found anyway.
    assert await within(_first_payload(queue, poll_interval=60)) == "before anyone listens"
    assert len(await _listening_pids(conn)) == 1
    seen = queue.listener.notifications
    await queue.publish("orders", "heard")
    await eventually(lambda: _true(queue.listener.notifications > seen))
    assert queue.listener.reconnects == 0


async def test_consumers_starting_together_open_one_connection(database_dsn: str) -> None:
    opened = 0

    async def connect() -> asyncpg.Connection:
        nonlocal opened
        opened += 1
        return await asyncpg.connect(database_dsn)

    listener = Listener(connect)
    try:
        with listener.waiter("orders"):  # starts an attempt, which the claims then share
            await within(asyncio.gather(*(listener.listen() for _ in range(10))))
            assert listener.connected
        assert opened == 1
    finally:
        await listener.close()


async def test_a_listener_that_cannot_connect_does_not_hold_up_claims(database_dsn: str) -> None:
    attempts = 0

    async def refused() -> asyncpg.Connection:
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError("no server here")

    listener = Listener(refused, reconnect_delay=60)
    try:
        await within(listener.listen())  # fails, and leaves it to the reconnect loop
        await within(asyncio.gather(*(listener.listen() for _ in range(10))))
        assert not listener.connected and attempts == 1
    finally:
        await listener.close()


async def test_listener_listens_again_after_its_connection_is_killed(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing")
    with queue.listener.waiter("orders"):
        await eventually(lambda: _true(queue.listener.connected))
        pids = await _listening_pids(conn)
    assert len(pids) == 1
    assert await conn.fetchval("SELECT pg_terminate_backend($1)", pids[0])

    await eventually(lambda: _true(queue.listener.reconnects >= 1 and queue.listener.connected))
    seen = queue.listener.notifications
    await queue.publish("orders", "after the drop")
    await eventually(lambda: _true(queue.listener.notifications > seen))
    assert await within(_first_payload(queue, poll_interval=60)) == "after the drop"


async def test_consumers_poll_when_no_notification_arrives(queue: pgqueue.Queue) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing")
    await queue.listener.close()  # no LISTEN at all from here on
    consumer = asyncio.create_task(_first_payload(queue, poll_interval=0.2))
    await queue.publish("orders", "found by polling")
    assert await within(consumer, 10) == "found by polling"


async def _true(value: bool) -> bool:
    return value


async def _consume_into(
    queue: pgqueue.Queue, received: asyncio.Queue[pgqueue.Message], poll_interval: float
) -> None:
    async for message in queue.consume("orders", "billing", poll_interval=poll_interval):
        await message.ack()
        await received.put(message)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_idle_consumer_claims_at_most_twice_in_two_seconds(
    queue: pgqueue.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle costs the database nothing per poll: one claim, one more after the listener's
    wake-up at connect, then nothing for the 60 s poll interval (the clock is the point)."""
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing")
    watch = ClaimWatch().install(monkeypatch, queue)
    consumer = asyncio.create_task(_consume_into(queue, asyncio.Queue(), poll_interval=60))
    try:
        await watch.until_idle()
        await asyncio.sleep(2)
        assert watch.claims <= 2, watch.claims
    finally:
        await _stop(consumer)


async def test_an_idle_consumer_is_woken_by_a_publish(
    queue: pgqueue.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing")
    watch = ClaimWatch().install(monkeypatch, queue)
    received: asyncio.Queue[pgqueue.Message] = asyncio.Queue()
    consumer = asyncio.create_task(_consume_into(queue, received, poll_interval=60))
    try:
        await watch.until_idle()  # from here on only a notification wakes it
        await queue.publish("orders", "wake up")
        assert (await within(received.get())).payload == "wake up"
    finally:
        await _stop(consumer)


async def test_an_idle_consumer_is_woken_by_a_reset(
    queue: pgqueue.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish_many("orders", ["a", "b"])
    assert await drain(queue, "orders", "billing") == ["a", "b"]
    watch = ClaimWatch().install(monkeypatch, queue)
    received: asyncio.Queue[pgqueue.Message] = asyncio.Queue()
    consumer = asyncio.create_task(_consume_into(queue, received, poll_interval=60))
    try:
        await watch.until_idle()
        await queue.reset("orders", subscriber="billing", to="earliest")
        again = [await within(received.get()) for _ in range(2)]
        assert [m.payload for m in again] == ["a", "b"]
    finally:
        await _stop(consumer)


async def _application_names(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT application_name FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY 1"
    )
    return [r["application_name"] for r in rows]


async def test_connections_carry_application_names(
    database_dsn: str, conn: asyncpg.Connection
) -> None:
    """An operator tells pgqueue's connections apart in pg_stat_activity; a name the user's
    DSN gives the pool wins, the listener keeps its own."""

    async def names_are(expected: list[str]) -> bool:
        # A closed connection's backend leaves pg_stat_activity a moment after the close.
        return await _application_names(conn) == expected

    async with pgqueue.connect(database_dsn) as queue:
        await within(queue.listener.listen())
        await eventually(lambda: names_are(["pgqueue-listener", "pgqueue-pool"]))
    mine = database_dsn + ("&" if "?" in database_dsn else "?") + "application_name=mine"
    async with pgqueue.connect(mine) as queue:
        await within(queue.listener.listen())
        await eventually(lambda: names_are(["mine", "pgqueue-listener"]))
