"""The delivery loop consume() and the WebSocket session share (pgqueue.delivery.Claims)."""

from __future__ import annotations

import asyncpg

import pgqueue
from tests.support import store_unpublishable, within

# PostgreSQL stores this (publish refuses it, older data may hold it); Python's json cannot
# decode it (RecursionError near 1,000 levels).
TOO_DEEP = "[" * 1500 + "1" + "]" * 1500


async def test_consume_gives_back_what_it_never_yielded(queue: pgqueue.Queue) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish_many("orders", ["a", "b", "c", "d"])
    consumer = queue.consume("orders", "billing", batch=10, poll_interval=60)
    first = await within(anext(consumer))  # the claim took all four
    await first.ack()
    await within(consumer.aclose())  # the caller stops: b, c and d were never handed over
    [stats] = await queue.subscriber_stats("orders", "billing")
    assert (stats.in_flight, stats.retrying) == (0, 3)
    again = await queue.claim("orders", "billing", 10)
    assert [(m.payload, m.attempt) for m in again] == [("b", 1), ("c", 1), ("d", 1)]


async def test_an_undecodable_message_is_dead_lettered_alone(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    await queue.create_topic("jobs")
    await queue.subscribe("jobs", "worker", start="earliest", max_attempts=3, backoff=0)
    await queue.publish_many("jobs", ["before", "placeholder", "after"])
    await store_unpublishable(conn, "jobs", 2, TOO_DEEP)

    received = []
    async for message in queue.consume("jobs", "worker", batch=10, poll_interval=60):
        received.append(message.payload)
        await message.ack()
        if len(received) == 2:
            break
    assert received == ["before", "after"]
    # Each claim that met it nacked it alone; its last attempt took it to the dead letters.
    for _ in range(2):
        assert await within(queue.claim("jobs", "worker", 10)) == []
    # Read with SQL: Queue.dead_letters() would have to decode the payload too.
    [dead] = await conn.fetch('SELECT "offset", attempts, last_error FROM pgqueue.dead_letter')
    assert (dead["offset"], dead["attempts"]) == (2, 3)
    assert "undeliverable: RecursionError" in dead["last_error"]
    [stats] = await queue.subscriber_stats("jobs", "worker")
    assert (stats.position, stats.lag, stats.in_flight, stats.retrying) == (3, 0, 0, 0)
