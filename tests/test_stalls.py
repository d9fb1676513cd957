"""Promise 5 at its edges: what one session holds open never stalls the others.

Each case opens a transaction that holds something (an idempotency key, a claim with
in-transaction publishes waiting to be numbered, a subscriber row) and then runs the operations
everyone else needs, each with a 2 s bound; a retention pass runs beside such a holder, and an
assignment round cannot be started inside a transaction at all. Every holder is a real open
transaction on its own connection; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest

import pgqueue
from tests.support import eventually, within

BOUND = 2.0  # seconds each victim may take while the holder keeps its transaction open

Holder = Callable[[asyncpg.Connection], Awaitable[None]]


async def _hold_idempotency_key(conn: asyncpg.Connection) -> None:
    await pgqueue.publish(conn, "orders", "held", idempotency_key="k-held")


async def _hold_claim(conn: asyncpg.Connection) -> None:
    # A consumer that claims inside its own transaction, to ack with its business writes.
    await conn.fetch("SELECT * FROM pgqueue.claim('orders', 'billing', 10)")


async def _hold_subscriber_row(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pgqueue.alter_subscriber('orders', 'billing', max_attempts => 7)")


HOLDERS: dict[str, Holder] = {
    "idempotency key": _hold_idempotency_key,
    "claim in a transaction": _hold_claim,
    "alter_subscriber in a transaction": _hold_subscriber_row,
}


async def _waiting_on_a_lock(conn: asyncpg.Connection) -> bool:
    """Whether some other session waits on a lock (the duplicate, on the holder's key)."""
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    )
    return bool(waiting)


@asynccontextmanager
async def _holding(dsn: str, holder: Holder) -> AsyncIterator[None]:
    conn = await within(asyncpg.connect(dsn))
    transaction = conn.transaction()
    await transaction.start()
    try:
        await within(holder(conn))
        yield
    finally:
        await transaction.rollback()
        await conn.close()


async def _setup(queue: pgqueue.Queue, conn: asyncpg.Connection) -> None:
    await queue.create_topic("orders", retention_max_count=10, segment_size=10)
    await queue.create_topic("audit")
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.subscribe("orders", "shipping", start="earliest")
    await queue.publish_many("orders", list(range(40)))  # retention has segments to remove
    # Committed in-transaction publishes waiting for a round.
    async with conn.transaction():
        await pgqueue.publish(conn, "orders", "waiting")


@pytest.mark.parametrize("holder", list(HOLDERS))
async def test_an_open_transaction_stalls_no_one(
    holder: str, queue: pgqueue.Queue, conn: asyncpg.Connection, database_dsn: str
) -> None:
    await _setup(queue, conn)
    async with _holding(database_dsn, HOLDERS[holder]):
        # A publish to the same topic (direct: takes the topic's assignment lock) ...
        offset = await asyncio.wait_for(queue.publish("orders", "same topic"), BOUND)
        # ... with a key of its own, a batch, and a publish to another topic.
        await asyncio.wait_for(queue.publish("orders", "keyed", idempotency_key="k-2"), BOUND)
        await asyncio.wait_for(queue.publish_many("orders", ["a", "b"]), BOUND)
        await asyncio.wait_for(queue.publish("audit", "other topic"), BOUND)
        # Another subscriber's consumer, and a read of the log.
        claimed = await asyncio.wait_for(queue.claim("orders", "shipping", 100), BOUND)
        assert offset in [m.offset for m in claimed]
        await asyncio.wait_for(queue.read("orders", from_offset=offset), BOUND)
        # A competing consumer of the held subscriber returns (maybe empty), never hangs.
        await asyncio.wait_for(queue.claim("orders", "billing", 10), BOUND)
        # And an in-transaction publish elsewhere.
        other = await within(asyncpg.connect(database_dsn))
        try:
            async with other.transaction():
                await asyncio.wait_for(pgqueue.publish(other, "orders", "in-tx"), BOUND)
        finally:
            await other.close()


async def test_a_keyed_publish_waits_for_its_key_only_and_gets_the_holders_offset(
    queue: pgqueue.Queue, conn: asyncpg.Connection, database_dsn: str
) -> None:
    """Finding 8: the keyed publish waited on the key while holding the topic's lock (every
    direct publish stalled), then returned a NULL offset; if the key's holder ran a round,
    the two deadlocked."""
    await queue.create_topic("orders")
    holder = await within(asyncpg.connect(database_dsn))
    try:
        held = holder.transaction()
        await held.start()
        await pgqueue.publish(holder, "orders", "first", idempotency_key="order-1")

        duplicate = asyncio.create_task(queue.publish("orders", "again", idempotency_key="order-1"))
        await eventually(lambda: _waiting_on_a_lock(holder))
        # The duplicate waits on the key; keyless publishes go on meanwhile.
        assert await asyncio.wait_for(queue.publish("orders", "other"), BOUND) == 1
        assert not duplicate.done()
        await held.commit()
        # Once the holder commits, the duplicate answers with the holder's message's offset.
        offset = await within(duplicate)
        assert offset == 2
        assert [(m.offset, m.payload) for m in await queue.read("orders")] == [
            (1, "other"),
            (2, "first"),
        ]
    finally:
        await holder.close()


async def test_a_round_in_the_key_holders_transaction_does_not_deadlock(
    queue: pgqueue.Queue, database_dsn: str
) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    holder = await within(asyncpg.connect(database_dsn))
    try:
        held = holder.transaction()
        await held.start()
        await pgqueue.publish(holder, "orders", "first", idempotency_key="order-1")
        duplicate = asyncio.create_task(queue.publish("orders", "again", idempotency_key="order-1"))
        await eventually(lambda: _waiting_on_a_lock(holder))
        await asyncio.wait_for(queue.publish("orders", "other"), BOUND)
        # A claim that runs a round inside the holder's transaction: before the fix the
        # duplicate held the topic lock the round needed while waiting for the holder's key.
        await asyncio.wait_for(
            holder.fetch("SELECT * FROM pgqueue.claim('orders', 'billing', 10, assign => true)"),
            BOUND,
        )
        await held.commit()
        assert await within(duplicate) == 2
    finally:
        await holder.close()


async def test_retention_never_waits_holding_the_log(
    queue: pgqueue.Queue, conn: asyncpg.Connection, database_dsn: str
) -> None:
    """Finding 9: retention took ACCESS EXCLUSIVE on the log, then waited without a timeout for
    a subscriber row held by an open transaction, stalling every topic."""
    await queue.create_topic("orders", retention_max_count=10, segment_size=10)
    await queue.create_topic("audit")
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish_many("orders", list(range(40)))
    async with _holding(database_dsn, _hold_subscriber_row):
        retention = asyncio.create_task(queue.enforce_retention())
        # Publishes and claims on every topic go on while the pass runs and after it.
        await asyncio.wait_for(queue.publish("audit", "x"), BOUND)
        await asyncio.wait_for(queue.publish("orders", "y"), BOUND)
        [result] = await asyncio.wait_for(retention, BOUND)
        assert result.segments_removed == 0  # the pass gave up on the held topic
        # A reader of the log next to the holder does not deadlock.
        await asyncio.wait_for(queue.read("orders"), BOUND)
    # Once the row is free, the next pass removes the segments.
    [result] = await within(queue.enforce_retention())
    assert result.segments_removed > 0


async def test_a_claim_in_a_caller_transaction_keeps_no_topic_lock(
    queue: pgqueue.Queue, conn: asyncpg.Connection, database_dsn: str
) -> None:
    """Finding 10: the claim's round kept the topic's assignment lock until the consumer
    committed, so direct publishers waited for the consumer's processing."""
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    async with conn.transaction():
        await pgqueue.publish(conn, "orders", "waiting")  # committed, not numbered yet
    async with _holding(database_dsn, _hold_claim):
        assert await asyncio.wait_for(queue.publish("orders", "direct"), BOUND) == 2
    locks = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid::bigint = 1903390001"  # the topics' assignment locks
    )
    assert locks == 0


async def test_an_assignment_round_cannot_be_left_open_in_a_transaction(
    queue: pgqueue.Queue, conn: asyncpg.Connection, database_dsn: str
) -> None:
    """assign() is a procedure that commits: inside a transaction block it fails before it
    takes the topic's lock, instead of holding it until the caller commits."""
    await queue.create_topic("orders")
    async with conn.transaction():
        await pgqueue.publish(conn, "orders", "waiting")
    holder = await within(asyncpg.connect(database_dsn))
    try:
        held = holder.transaction()
        await held.start()
        with pytest.raises(asyncpg.InvalidTransactionTerminationError):
            await holder.execute("CALL pgqueue.assign('orders', NULL)")
        assert await asyncio.wait_for(queue.publish("orders", "direct"), BOUND) == 2
        await held.rollback()
    finally:
        await holder.close()
    # On its own it numbers and commits.
    async with conn.transaction():
        await pgqueue.publish(conn, "orders", "later")
    assert await conn.fetchval("CALL pgqueue.assign('orders', NULL)") == 1
