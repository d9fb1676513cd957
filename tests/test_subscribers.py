"""Fan-out, filters, online reset, idempotent and delayed publishing."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

import pgqueue
from tests.support import drain, eventually, within


async def test_fan_out_delivers_everything_to_each_subscriber_storing_it_once(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    await queue.create_topic("events")
    for name in ("a", "b", "c"):
        await queue.subscribe("events", name, start="earliest")
    await queue.publish_many("events", list(range(20)))
    for name in ("a", "b", "c"):
        assert await drain(queue, "events", name) == list(range(20))
    assert await conn.fetchval("SELECT count(*) FROM pgqueue.message") == 20


async def test_filter_skips_non_matching_messages_without_holding_the_position(
    queue: pgqueue.Queue,
) -> None:
    await queue.create_topic("events")
    await queue.subscribe(
        "events",
        "alerts",
        start="earliest",
        filter={"match": {"type": "alerts.*"}, "payload": {"level": "high"}},
    )
    await queue.subscribe("events", "eu", start="earliest", filter={"headers": {"region": "eu"}})
    published = [
        ({"level": "high"}, {"type": "alerts.cpu", "region": "eu"}),
        ({"level": "low"}, {"type": "alerts.disk"}),
        ({"level": "high"}, {"type": "metrics.cpu", "region": "eu"}),
        ({"level": "high", "host": "x"}, {"type": "alerts.mem"}),
        ({"level": "high"}, {"type": "alertsXcpu"}),
        ({"level": "high"}, {}),
    ]
    await queue.publish_many("events", [{"payload": p, "headers": h} for p, h in published])
    claimed = await queue.claim("events", "alerts", 100)
    assert [m.offset for m in claimed] == [1, 4]
    await queue.ack("events", "alerts", claimed, strict=True)
    [stats] = await queue.subscriber_stats("events", "alerts")
    assert (stats.position, stats.lag) == (6, 0)  # the trailing non-matching ones are passed

    assert [m.offset for m in await queue.claim("events", "eu", 100)] == [1, 3]
    [sub] = [s for s in await queue.list_subscribers("events") if s.name == "alerts"]
    assert sub.filter == {"match": {"type": "alerts.*"}, "payload": {"level": "high"}}


@pytest.fixture
async def live_consumer(
    queue: pgqueue.Queue,
) -> AsyncIterator[asyncio.Queue[int]]:
    """A consumer running for the whole test, acking everything; yields offsets received.

    poll_interval is long, so anything it receives promptly came through NOTIFY."""
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    received: asyncio.Queue[int] = asyncio.Queue()

    async def run() -> None:
        async for message in queue.consume("orders", "billing", batch=5, poll_interval=60):
            await message.ack()
            await received.put(message.offset)

    task = asyncio.create_task(run())
    yield received
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _take(received: asyncio.Queue[int], n: int) -> list[int]:
    return [await within(received.get()) for _ in range(n)]


async def test_every_reset_mode_while_a_consumer_runs(
    queue: pgqueue.Queue, live_consumer: asyncio.Queue[int], database_dsn: str
) -> None:
    received = live_consumer
    await queue.publish_many("orders", list(range(1, 11)))
    assert await _take(received, 10) == list(range(1, 11))

    # Resets come from elsewhere (another client), as they would from REST or psql.
    async with pgqueue.connect(database_dsn) as admin:

        async def reset(to: object, dry_run: bool = False) -> pgqueue.ResetResult:
            [result] = await admin.reset("orders", subscriber="billing", to=to, dry_run=dry_run)
            return result

        dry = await reset("earliest", dry_run=True)
        assert (dry.old_position, dry.new_position, dry.applied) == (10, 0, False)
        await queue.publish("orders", 11)
        assert await _take(received, 1) == [11]  # the dry run moved nothing

        assert (await reset(4)).new_position == 3
        assert await _take(received, 8) == list(range(4, 12))

        assert (await reset("earliest")).new_position == 0
        assert await _take(received, 11) == list(range(1, 12))

        assert (await reset("latest")).new_position == 11
        await queue.publish("orders", 12)
        assert await _take(received, 1) == [12]

        # 1-10 share one batch's publish time; 11 and 12 were published one by one.
        [twelfth] = await queue.read("orders", from_offset=12, limit=1)
        assert (await reset(twelfth.published_at)).new_position == 11
        assert await _take(received, 1) == [12]

        assert (await reset(timedelta(hours=1))).new_position == 0  # everything is newer
        assert await _take(received, 12) == list(range(1, 13))

        assert (await reset("-3")).new_position == 9
        assert await _take(received, 3) == [10, 11, 12]

        forward = await reset("+5", dry_run=True)
        assert (forward.old_position, forward.new_position) == (12, 12)  # clamped to the end

        # A reset of every subscriber of the topic, through SQL.
        conn = await asyncpg.connect(database_dsn)
        try:
            rows = await conn.fetch("SELECT * FROM pgqueue.reset('orders', to_offset => 12)")
        finally:
            await conn.close()
        assert [(r["subscriber"], r["new_position"]) for r in rows] == [("billing", 11)]
        assert await _take(received, 1) == [12]
    assert received.empty()


async def test_reset_clears_in_flight_claims(queue: pgqueue.Queue) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish_many("orders", ["a", "b", "c"])
    claimed = await queue.claim("orders", "billing", 3)
    await queue.reset("orders", subscriber="billing", to=2)
    with pytest.raises(pgqueue.LeaseLost):
        await queue.ack("orders", "billing", claimed, strict=True)
    assert await drain(queue, "orders", "billing") == ["b", "c"]


async def test_idempotent_publish_returns_the_original_offset(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    await queue.create_topic("orders")
    first = await queue.publish("orders", {"n": 1}, idempotency_key="order-1")
    again = await queue.publish("orders", {"n": 2}, idempotency_key="order-1")
    assert first == again == 1
    batch = await queue.publish_many(
        "orders",
        [
            {"payload": 3, "idempotency_key": "order-2"},
            {"payload": 4, "idempotency_key": "order-2"},
            {"payload": 5, "idempotency_key": "order-1"},
        ],
    )
    assert batch == [2, 2, 1]
    async with conn.transaction():
        in_tx = await pgqueue.publish(conn, "orders", {"n": 6}, idempotency_key="order-3")
    async with conn.transaction():
        assert await pgqueue.publish(conn, "orders", {"n": 7}, idempotency_key="order-3") == in_tx
    # Reading numbers committed in-transaction publishes first (no explicit assign).
    assert [m.payload for m in await queue.read("orders")] == [{"n": 1}, 3, {"n": 6}]
    assert await queue.assign("orders") == 0


async def test_delayed_message_is_not_delivered_early(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish("orders", "later", delay=3600)
    await queue.publish("orders", "now")
    [now] = await queue.claim("orders", "billing", 10)
    assert now.payload == "now"
    await now.ack()
    assert await queue.claim("orders", "billing", 10) == []
    # Scheduled for its time: an hour after it was published.
    due, published = await conn.fetchrow(
        "SELECT d.due_at, m.published_at FROM pgqueue.delivery d "
        'JOIN pgqueue.message m USING (topic_id, "offset") WHERE d."offset" = 1'
    )
    assert due - published == timedelta(hours=1)
    # An hour later (the clock moved by SQL rather than waited for), it is delivered.
    await conn.execute('UPDATE pgqueue.delivery SET due_at = now() WHERE "offset" = 1')
    [later] = await within(queue.claim("orders", "billing", 10))
    assert (later.offset, later.payload, later.attempt) == (1, "later", 1)
    [stats] = await queue.subscriber_stats("orders", "billing")
    assert stats.position == 0  # the delayed first message is not done until acked
    await later.ack()
    [stats] = await queue.subscriber_stats("orders", "billing")
    assert stats.position == 2


async def test_subscriber_start_positions(queue: pgqueue.Queue) -> None:
    await queue.create_topic("orders")
    for n in range(1, 6):  # one by one, so each has its own publish time
        await queue.publish("orders", n)
    [third] = await queue.read("orders", from_offset=3, limit=1)
    starts = {"earliest": 0, "latest": 5, 3: 2, third.published_at: 2}
    for i, (start, position) in enumerate(starts.items()):
        subscriber = await queue.subscribe("orders", f"s{i}", start=start)
        assert subscriber.position == position, start
    with pytest.raises(pgqueue.SubscriberExists):
        await queue.subscribe("orders", "s0")
    await queue.unsubscribe("orders", "s0")
    with pytest.raises(pgqueue.SubscriberNotFound):
        await queue.claim("orders", "s0")


async def test_claims_carry_the_reset_epoch(queue: pgqueue.Queue, database_dsn: str) -> None:
    """A consumer drops exactly what was claimed before a reset, whichever arrives first:
    the reset's NOTIFY or a claim made after the reset."""
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish_many("orders", ["a", "b", "c"])
    before = await queue.claim("orders", "billing", 3)
    assert {(m.epoch, m.reset_position) for m in before} == {(0, None)}

    async with pgqueue.connect(database_dsn) as admin:
        await admin.reset("orders", subscriber="billing", to=2)
    after = await queue.claim("orders", "billing", 3)  # may run before the NOTIFY arrives
    assert [(m.offset, m.epoch, m.reset_position) for m in after] == [(2, 1, 1), (3, 1, 1)]
    assert all(m.epoch >= queue.reset_epoch("orders", "billing") for m in after)

    await eventually(lambda: _true(queue.reset_epoch("orders", "billing") == 1))
    assert all(m.epoch < queue.reset_epoch("orders", "billing") for m in before)
    await queue.ack("orders", "billing", after, strict=True)
    with pytest.raises(pgqueue.LeaseLost):
        await queue.ack("orders", "billing", before, strict=True)


async def _true(value: bool) -> bool:
    return value


async def test_a_filtered_claim_looks_past_any_number_of_non_matching_messages(
    queue: pgqueue.Queue,
) -> None:
    """Finding 14: with 5,000 non-matching messages ahead of the matching ones, claims returned
    nothing (and looked caught up) until enough of them had moved the cursor along."""
    await queue.create_topic("events")
    await queue.subscribe("events", "eu", start="earliest", filter={"headers": {"region": "eu"}})
    await queue.publish_many(
        "events", [{"payload": n, "headers": {"region": "us"}} for n in range(5000)]
    )
    await queue.publish_many("events", [{"payload": "eu", "headers": {"region": "eu"}}] * 3)
    claimed = await queue.claim("events", "eu", 10)
    assert [m.offset for m in claimed] == [5001, 5002, 5003]
    # Delayed messages ahead do not hide ready ones either.
    await queue.subscribe("events", "all", start="latest")
    await queue.publish_many("events", [{"payload": "later", "delay": 3600}] * 20)
    await queue.publish("events", "now")
    assert [m.payload for m in await queue.claim("events", "all", 5)] == ["now"]


async def test_ephemeral_subscribers_of_a_vanished_owner_are_removed(
    queue: pgqueue.Queue, conn: asyncpg.Connection, database_dsn: str
) -> None:
    """Finding 16: the ephemeral subscribers of a server killed without a clean shutdown stayed
    forever. Their owner holds a session lock while it lives; once nobody holds it for the
    grace period, they go."""
    await queue.create_topic("live")
    owner = await within(asyncpg.connect(database_dsn))
    await owner.execute("SELECT pg_advisory_lock_shared(1903390004, 77)")
    await conn.execute(
        "SELECT pgqueue.create_subscriber('live', 'eph', ephemeral => true, owner => 77)"
    )
    await conn.execute("SELECT pgqueue.create_subscriber('live', 'durable')")
    remove = "SELECT pgqueue.remove_orphans(interval '0')"
    assert await conn.fetchval(remove) == 0  # its owner holds the lock
    await owner.close()  # the owner dies (its session lock goes with it) ...

    async def owner_gone() -> bool:  # ... once its backend has ended
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 77"
        )
        return held == 0

    await eventually(owner_gone)
    assert await conn.fetchval(remove) == 0  # first seen orphaned: marked only
    assert await conn.fetchval(remove) == 1
    assert [s.name for s in await queue.list_subscribers("live")] == ["durable"]

    # An owner that comes back within the grace period keeps its subscriber.
    await conn.execute(
        "SELECT pgqueue.create_subscriber('live', 'eph2', ephemeral => true, owner => 78)"
    )
    assert await conn.fetchval("SELECT pgqueue.remove_orphans(interval '1 hour')") == 0
    back = await within(asyncpg.connect(database_dsn))
    try:
        await back.execute("SELECT pg_advisory_lock_shared(1903390004, 78)")
        assert await conn.fetchval(remove) == 0
        assert await conn.fetchval(
            "SELECT orphaned_since IS NULL FROM pgqueue.subscriber WHERE name = 'eph2'"
        )
    finally:
        await back.close()


HOLD_AN_EPHEMERAL = """
import asyncio, sys, pgqueue
async def main():
    async with pgqueue.connect(sys.argv[1]) as q:
        sub = await q.subscribe("live", "eph-of-a-dead-process", ephemeral=True)
        print(sub.name, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


async def test_a_killed_process_leaves_no_ephemeral_subscriber_behind(
    queue: pgqueue.Queue, database_dsn: str
) -> None:
    await queue.create_topic("live")
    mine = await queue.subscribe("live", "eph-of-a-live-queue", ephemeral=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD_AN_EPHEMERAL, database_dsn, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert (await within(proc.stdout.readline(), 30)).strip()  # type: ignore[union-attr]
        assert await queue.remove_orphans(0) == 0  # both owners alive
    finally:
        proc.kill()  # no clean shutdown: nothing removes its subscriber but the pass
        await proc.wait()

    async def removed() -> bool:
        return await queue.remove_orphans(0) == 1  # seen orphaned, then removed

    await eventually(removed)
    assert [s.name for s in await queue.list_subscribers("live")] == [mine.name]


async def test_leases_show_who_holds_what_since_when_and_stats_tell_live_from_run_out(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    await queue.create_topic("t")
    await queue.subscribe("t", "s", start="earliest")
    await queue.publish_many("t", [1, 2, 3, 4])
    await queue.claim("t", "s", 2, lease=60, consumer="worker-a")
    await queue.claim("t", "s", 1, lease=60)
    # Offset 3's lease has run out, and offset 1 was published an hour ago.
    await conn.execute(
        """
        UPDATE pgqueue.delivery SET due_at = now() - interval '1 second' WHERE "offset" = 3;
        UPDATE pgqueue.message SET published_at = now() - interval '1 hour' WHERE "offset" = 1;
        """
    )

    leases = await queue.leases("t", "s")
    assert [(x.offset, x.attempt, x.consumer, x.expired) for x in leases] == [
        (1, 1, "worker-a", False),
        (2, 1, "worker-a", False),
        (3, 1, pgqueue.client.DEFAULT_CONSUMER, True),
    ]
    assert all(x.leased_at is not None and x.leased_at < x.lease_ends for x in leases[:2])
    [stats] = await queue.subscriber_stats("t", "s")
    assert (stats.lag, stats.in_flight, stats.expired) == (4, 2, 1)
    assert 3590 < stats.lag_seconds < 3700

    # Taken again by another consumer: the lease shows the new holder and attempt.
    [again] = await queue.claim("t", "s", 1, lease=60, consumer="worker-b")
    assert again.offset == 3
    assert [(x.offset, x.attempt, x.consumer) for x in await queue.leases("t", "s")][2] == (
        3,
        2,
        "worker-b",
    )
    await queue.ack("t", "s", [again, *await queue.claim("t", "s", 1, consumer="w")])
    [stats] = await queue.subscriber_stats("t", "s")
    assert (stats.lag, stats.in_flight, stats.expired) == (4, 2, 0)


async def test_subscribers_due_says_who_has_work_now_later_or_never(queue: pgqueue.Queue) -> None:
    await queue.create_topic("t")
    await queue.subscribe("t", "idle")
    await queue.subscribe("t", "busy", start="earliest")
    assert await queue.subscribers_due("t") == {"busy": None, "idle": None}
    await queue.publish("t", 1)
    assert await queue.subscribers_due("t") == {"busy": 0, "idle": 0}
    [message] = await queue.claim("t", "busy", 1)
    [_] = await queue.claim("t", "idle", 1)
    await queue.nack(message, delay=60)
    due = await queue.subscribers_due("t")
    assert due["idle"] is not None and 0 < due["idle"] <= 30  # its lease falls due
    assert due["busy"] is not None and 30 < due["busy"] <= 60  # its retry falls due
