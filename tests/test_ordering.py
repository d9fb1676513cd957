"""Promises 2, 3 and 5: no skips under out-of-order commits, order, no stall from strangers."""

from __future__ import annotations

import asyncio

import asyncpg

import pgqueue
from tests.support import drain, within


async def _open(dsn: str) -> asyncpg.Connection:
    return await within(asyncpg.connect(dsn))


async def test_out_of_order_commit_is_still_delivered(
    queue: pgqueue.Queue, database_dsn: str
) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    t1, t2 = await _open(database_dsn), await _open(database_dsn)
    try:
        slow = t1.transaction()
        await slow.start()
        await pgqueue.publish(t1, "orders", "first")  # T1 publishes and holds
        async with t2.transaction():
            await pgqueue.publish(t2, "orders", "second")  # T2 publishes and commits
        await queue.publish("orders", "third")  # and an auto-commit publish

        assert await drain(queue, "orders", "billing") == ["second", "third"]

        await slow.commit()
        assert await drain(queue, "orders", "billing") == ["first"]
        [stats] = await queue.subscriber_stats("orders", "billing")
        assert (stats.position, stats.last_offset, stats.lag) == (3, 3, 0)
    finally:
        await t1.close()
        await t2.close()


async def test_rolled_back_publish_is_never_delivered(
    queue: pgqueue.Queue, database_dsn: str
) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    t1, t2 = await _open(database_dsn), await _open(database_dsn)
    try:
        doomed = t1.transaction()
        await doomed.start()
        await pgqueue.publish(t1, "orders", "rolled back")
        async with t2.transaction():
            await pgqueue.publish(t2, "orders", "kept")
        assert await drain(queue, "orders", "billing") == ["kept"]

        await doomed.rollback()
        assert await queue.assign("orders") == 0
        assert await drain(queue, "orders", "billing") == []
        assert [m.payload for m in await queue.read("orders")] == ["kept"]
    finally:
        await t1.close()
        await t2.close()


async def test_open_transactions_of_strangers_do_not_stall_delivery(
    queue: pgqueue.Queue, database_dsn: str
) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    stranger, slow_publisher, other = [await _open(database_dsn) for _ in range(3)]
    try:
        # An unrelated transaction that holds an xid (and so the xmin horizon) open.
        held = stranger.transaction()
        await held.start()
        await stranger.fetchval("SELECT pg_current_xact_id()")
        await stranger.execute("CREATE TEMP TABLE busy (x int)")
        # A publisher inside its own long transaction.
        slow = slow_publisher.transaction()
        await slow.start()
        await pgqueue.publish(slow_publisher, "orders", "slow")

        for i in range(3):
            async with other.transaction():
                await pgqueue.publish(other, "orders", f"in-tx {i}")
            await queue.publish("orders", f"direct {i}")

        # Everything committed is claimable now, with both transactions still open.
        delivered = await drain(queue, "orders", "billing")
        assert sorted(delivered) == sorted(
            [f"in-tx {i}" for i in range(3)] + [f"direct {i}" for i in range(3)]
        )

        await slow.commit()
        assert await drain(queue, "orders", "billing") == ["slow"]
        await held.rollback()
    finally:
        for c in (stranger, slow_publisher, other):
            await c.close()


async def test_single_consumer_receives_in_offset_order(queue: pgqueue.Queue) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish_many("orders", list(range(50)))
    for i in range(50, 60):
        await queue.publish("orders", i)
    offsets: list[int] = []
    while batch := await queue.claim("orders", "billing", 7):
        offsets.extend(m.offset for m in batch)
        await queue.ack("orders", "billing", batch)
    assert offsets == list(range(1, 61))


async def test_competing_consumers_get_disjoint_claims(queue: pgqueue.Queue) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish_many("orders", list(range(400)))
    start = asyncio.Event()

    async def consumer() -> list[int]:
        await start.wait()
        mine: list[int] = []
        while batch := await within(queue.claim("orders", "billing", 9)):
            mine.extend(m.offset for m in batch)
            await within(queue.ack("orders", "billing", batch, strict=True))
        return mine

    tasks = [asyncio.create_task(consumer()) for _ in range(4)]
    start.set()
    results = await within(asyncio.gather(*tasks), 60)
    every = [o for r in results for o in r]
    assert len(every) == len(set(every)) == 400
    assert set(every) == set(range(1, 401))
    assert all(r == sorted(r) for r in results)


async def test_a_round_inside_a_publishing_transaction_strands_nothing(
    queue: pgqueue.Queue, database_dsn: str
) -> None:
    """Finding 4: PostgreSQL never lists the current transaction in its own snapshot, so a round
    run after a publish in the same transaction took the publisher for committed: it numbered
    the first message and left the second outside every later round's window."""
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    conn = await _open(database_dsn)
    try:
        async with conn.transaction():
            await pgqueue.publish(conn, "orders", "first")
            # A claim that may number messages, inside the publishing transaction.
            await conn.fetch("SELECT * FROM pgqueue.claim('orders', 'billing', 10, assign => true)")
            await conn.fetchval("SELECT pgqueue.message_offsets('orders', '{1}', true)")
            await pgqueue.publish(conn, "orders", "second")
        await queue.publish("orders", "after")
        assert await drain(queue, "orders", "billing") == ["first", "second", "after"]
        async with conn.transaction():
            assert await conn.fetchval("SELECT count(*) FROM pgqueue.pending") == 0
    finally:
        await conn.close()


async def test_offsets_follow_commit_order_across_sessions(
    queue: pgqueue.Queue, database_dsn: str
) -> None:
    """Finding 6: within a round offsets followed message ids, which come from per-session
    sequence caches: a transaction that started after another had committed could get the
    lower offset."""
    await queue.create_topic("orders")
    early, late = await _open(database_dsn), await _open(database_dsn)
    try:
        # The late session draws ids first (its sequence cache then holds the lower ones) ...
        async with late.transaction():
            await pgqueue.publish(late, "orders", "warm-up")
        await queue.assign("orders")
        # ... the early session publishes and commits ...
        async with early.transaction():
            await pgqueue.publish(early, "orders", "committed first")
        # ... and only then does the late one begin: it must come after.
        async with late.transaction():
            await pgqueue.publish(late, "orders", "began after")
        await queue.assign("orders")
        payloads = [m.payload for m in await queue.read("orders")]
        assert payloads == ["warm-up", "committed first", "began after"]
    finally:
        await early.close()
        await late.close()


async def test_after_a_restore_into_another_cluster_in_transaction_publishes_get_offsets(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    """A logical restore keeps the old cluster's transaction ids in the log's round snapshots
    and in pending rows; pgqueue.after_restore() lets rounds number them again."""
    await queue.create_topic("t")
    await queue.publish("t", "before")  # a round records its snapshot on the last row
    async with conn.transaction():
        [message_id] = await pgqueue.publish_many(conn, "t", ["restored"])
    # As the restored rows look to the new cluster: ids from far ahead of its counter.
    await conn.execute(
        """
        UPDATE pgqueue.pending
           SET xid = (pg_current_xact_id()::text::bigint + 1000000)::text::xid8;
        UPDATE pgqueue.message
           SET round_snapshot = ((pg_current_xact_id()::text::bigint + 1000000) || ':'
                                 || (pg_current_xact_id()::text::bigint + 1000000) || ':')
                                ::pg_snapshot
         WHERE round_snapshot IS NOT NULL
        """
    )
    await queue.assign("t")
    assert await queue.message_offsets("t", [message_id]) == [None]

    await conn.execute("SELECT pgqueue.after_restore()")
    await queue.assign("t")
    assert await queue.message_offsets("t", [message_id]) == [2]
    assert [m.payload for m in await queue.read("t")] == ["before", "restored"]
