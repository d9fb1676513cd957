"""Leases, retries and dead letters: a killed consumer, a poison message, the worker helper."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from datetime import timedelta

import asyncpg
import pytest

import pgqueue
from tests.support import drain, eventually, within

CLAIM_AND_HANG = """
import asyncio, sys, pgqueue
async def main():
    async with pgqueue.connect(sys.argv[1]) as q:
        [m] = await q.claim("orders", "billing", 1, lease=float(sys.argv[2]))
        print(m.offset, m.lease_token, m.attempt, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


async def _expire_leases(conn: asyncpg.Connection) -> None:
    """Every lease of the test's database runs out now (the clock, moved by SQL)."""
    await conn.execute("UPDATE pgqueue.delivery SET due_at = now() WHERE state = 'leased'")


async def test_killed_consumer_loses_its_lease_and_its_late_ack(
    queue: pgqueue.Queue, database_dsn: str, conn: asyncpg.Connection
) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish_many("orders", ["a", "b"])

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLAIM_AND_HANG,
        database_dsn,
        "600",
        stdout=asyncio.subprocess.PIPE,
    )
    line = await within(proc.stdout.readline(), 30)  # type: ignore[union-attr]
    offset, token, attempt = map(int, line.split())
    assert (offset, attempt) == (1, 1)
    proc.kill()
    await within(proc.wait())

    # While the lease runs, the others get only what was not claimed.
    [other] = await queue.claim("orders", "billing", 5)
    assert other.offset == 2
    await other.ack()

    # The lease runs out (moved to now rather than waited for: a 2 s lease with a clock in
    # the test failed on a slow machine, where it ran out before the claim above).
    await _expire_leases(conn)
    # After the lease, the message goes to another consumer, with attempt 2.
    [again] = await within(queue.claim("orders", "billing", 5))
    assert (again.offset, again.attempt, again.payload) == (1, 2, "a")
    assert again.lease_token != token

    # The dead consumer's ack arrives late: refused, and the new lease stands.
    assert await queue.ack("orders", "billing", [offset], [token]) == []
    with pytest.raises(pgqueue.LeaseLost):
        await queue.ack("orders", "billing", [offset], [token], strict=True)
    await again.ack()
    [stats] = await queue.subscriber_stats("orders", "billing")
    assert (stats.position, stats.in_flight) == (2, 0)


async def test_poison_message_is_dead_lettered_while_later_ones_flow(
    queue: pgqueue.Queue,
) -> None:
    await queue.create_topic("jobs")
    await queue.subscribe("jobs", "worker", start="earliest", max_attempts=3, backoff=0)
    await queue.publish_many("jobs", ["ok1", "poison", "ok2", "ok3"])
    attempts: Counter[str] = Counter()
    processed: list[str] = []

    async def handler(message: pgqueue.Message) -> None:
        attempts[message.payload] += 1
        if message.payload == "poison":
            raise ValueError("cannot handle this one")
        processed.append(message.payload)

    stop = asyncio.Event()
    worker = asyncio.create_task(queue.work("jobs", "worker", handler, batch=1, stop=stop))

    async def settled() -> bool:
        [stats] = await queue.subscriber_stats("jobs", "worker")
        return stats.dead == 1 and len(processed) == 3

    await eventually(settled)
    stop.set()
    await within(worker)

    assert processed == ["ok1", "ok2", "ok3"]
    assert attempts["poison"] == 3
    [dead] = await queue.dead_letters("jobs", "worker")
    assert (dead.offset, dead.attempts, dead.payload) == (2, 3, "poison")
    assert "ValueError: cannot handle this one" in (dead.last_error or "")
    [stats] = await queue.subscriber_stats("jobs", "worker")
    assert (stats.position, stats.lag, stats.dead) == (4, 0, 1)

    # Replay delivers it again, attempts starting over.
    assert await queue.replay_dead_letters("jobs", "worker") == 1
    [again] = await queue.claim("jobs", "worker", 5)
    assert (again.offset, again.attempt, again.payload) == (2, 1, "poison")
    await again.ack()
    assert await queue.dead_letters("jobs", "worker") == []


async def test_nack_waits_for_the_backoff(queue: pgqueue.Queue) -> None:
    await queue.create_topic("jobs")
    await queue.subscribe(
        "jobs", "worker", start="earliest", backoff=600, max_backoff=600, max_attempts=5
    )
    await queue.publish("jobs", "x")
    [message] = await queue.claim("jobs", "worker")
    assert await message.nack(error="try later") == "retry"
    assert await queue.claim("jobs", "worker") == []
    [stats] = await queue.subscriber_stats("jobs", "worker")
    assert (stats.in_flight, stats.retrying, stats.position) == (0, 1, 0)

    # An explicit delay overrides the backoff.
    await queue.publish("jobs", "y")
    [second] = await queue.claim("jobs", "worker")
    assert await second.nack(delay=0) == "retry"
    [again] = await queue.claim("jobs", "worker")
    assert (again.payload, again.attempt) == ("y", 2)


async def test_nack_after_the_last_attempt_dead_letters(queue: pgqueue.Queue) -> None:
    await queue.create_topic("jobs")
    await queue.subscribe("jobs", "worker", start="earliest", max_attempts=1)
    await queue.publish("jobs", "x")
    [message] = await queue.claim("jobs", "worker")
    assert await message.nack(error="boom") == "dead"
    assert [d.last_error for d in await queue.dead_letters("jobs", "worker")] == ["boom"]
    assert await queue.purge_dead_letters("jobs", "worker") == 1
    assert await queue.dead_letters("jobs", "worker") == []


async def test_extend_and_release_leases(queue: pgqueue.Queue, conn: asyncpg.Connection) -> None:
    await queue.create_topic("jobs")
    await queue.subscribe("jobs", "worker", start="earliest")
    await queue.publish_many("jobs", ["a", "b"])
    first, second = await queue.claim("jobs", "worker", 2, lease=30)
    await first.extend(600)
    assert await queue.release("jobs", "worker", [second]) == [2]
    # The released one is claimable at once; the extended one is not claimable at all.
    [again] = await queue.claim("jobs", "worker", 2)
    assert again.offset == 2
    # A minute later by the first lease's clock (its due_at moved back, not waited for):
    # past the original 30 s lease, which the extension replaced, within the 600 s it set.
    held = await conn.fetchval('SELECT due_at - now() FROM pgqueue.delivery WHERE "offset" = 1')
    assert timedelta(seconds=590) < held <= timedelta(seconds=600)
    await conn.execute(
        "UPDATE pgqueue.delivery SET due_at = due_at - interval '60 seconds' WHERE \"offset\" = 1"
    )
    assert await queue.claim("jobs", "worker", 2) == []
    await queue.ack("jobs", "worker", [first, again], strict=True)
    assert await drain(queue, "jobs", "worker") == []


async def test_released_claims_never_exceed_max_attempts(queue: pgqueue.Queue) -> None:
    """Finding 13: a released delivery was relet with attempt + 1 whatever max_attempts said
    (the README's WebSocket example delivered attempt 6 of 5)."""
    await queue.create_topic("jobs")
    await queue.subscribe("jobs", "worker", start="earliest", max_attempts=3)
    await queue.publish("jobs", "x")
    attempts = []
    for _ in range(3):  # a consumer that takes the message and disconnects, three times
        [message] = await queue.claim("jobs", "worker")
        attempts.append(message.attempt)
        assert await queue.release("jobs", "worker", [message]) == [1]
    assert attempts == [1, 2, 3]
    assert await queue.claim("jobs", "worker") == []
    [dead] = await queue.dead_letters("jobs", "worker")
    assert (dead.offset, dead.attempts, dead.last_error) == (1, 3, "released")


async def test_giving_back_unsent_claims_counts_no_attempt(queue: pgqueue.Queue) -> None:
    """Claims a connection never sent (it ended first) go back without using an attempt, so a
    message claimed beside one that kills connections is not charged for it."""
    await queue.create_topic("jobs")
    await queue.subscribe("jobs", "worker", start="earliest", max_attempts=2)
    await queue.publish_many("jobs", ["a", "b"])
    for _ in range(5):
        claimed = await queue.claim("jobs", "worker", 2)
        assert [m.attempt for m in claimed] == [1, 1]
        assert await queue.give_back("jobs", "worker", claimed) == [1, 2]
    # A stale token gives back nothing.
    assert await queue.give_back("jobs", "worker", claimed) == []
    assert [m.payload for m in await queue.claim("jobs", "worker", 2)] == ["a", "b"]
    assert await queue.dead_letters("jobs", "worker") == []
