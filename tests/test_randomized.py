"""A randomized run: concurrent publishers that commit late or roll back, competing consumers.

The checker: every committed message reaches every subscriber at least once, nothing rolled
back is ever delivered, each message has one offset, and duplicates are counted and reported.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

import asyncpg

import pgqueue
from tests.support import eventually, within

PUBLISHERS = 8
ROUNDS = 30
SUBSCRIBERS = ("s0", "s1", "s2")
CONSUMERS_PER_SUBSCRIBER = 3


@dataclass
class Ledger:
    committed: set[str] = field(default_factory=set)
    rolled_back: set[str] = field(default_factory=set)
    seen: dict[str, Counter[str]] = field(
        default_factory=lambda: {s: Counter() for s in SUBSCRIBERS}
    )
    offset_of: dict[str, int] = field(default_factory=dict)
    offset_conflicts: list[str] = field(default_factory=list)


async def _publisher(number: int, queue: pgqueue.Queue, dsn: str, ledger: Ledger) -> None:
    rng = random.Random(number)
    conn = await asyncpg.connect(dsn)
    try:
        for i in range(ROUNDS):
            ids = [f"p{number}-{i}-{j}" for j in range(rng.randint(1, 3))]
            if rng.random() < 0.3:
                await queue.publish_many("stress", ids)
                ledger.committed.update(ids)
                continue
            tx = conn.transaction()
            await tx.start()
            for message_id in ids:
                await pgqueue.publish(conn, "stress", message_id)
            await asyncio.sleep(rng.random() * 0.02)  # hold the transaction open a while
            if rng.random() < 0.15:
                await tx.rollback()
                ledger.rolled_back.update(ids)
            else:
                await tx.commit()
                ledger.committed.update(ids)
    finally:
        await conn.close()


async def _consumer(
    number: int, subscriber: str, queue: pgqueue.Queue, ledger: Ledger, stop: asyncio.Event
) -> None:
    rng = random.Random(1000 + number)
    while not stop.is_set():
        messages = await within(queue.claim("stress", subscriber, rng.randint(1, 10)))
        if not messages:
            await asyncio.sleep(0.005)
            continue
        for message in messages:
            ledger.seen[subscriber][message.payload] += 1
            known = ledger.offset_of.setdefault(message.payload, message.offset)
            if known != message.offset:
                ledger.offset_conflicts.append(message.payload)
        await within(queue.ack("stress", subscriber, messages, strict=True))


async def test_randomized_publishers_and_competing_consumers(database_dsn: str) -> None:
    settings = pgqueue.Settings(pool_max_size=20)
    async with pgqueue.connect(database_dsn, settings=settings) as queue:
        await queue.create_topic("stress")
        for name in SUBSCRIBERS:
            await queue.subscribe("stress", name, start="earliest")
        ledger = Ledger()
        stop = asyncio.Event()
        consumers = [
            asyncio.create_task(_consumer(n, s, queue, ledger, stop))
            for s in SUBSCRIBERS
            for n in range(CONSUMERS_PER_SUBSCRIBER)
        ]
        await within(
            asyncio.gather(
                *(_publisher(n, queue, database_dsn, ledger) for n in range(PUBLISHERS))
            ),
            120,
        )

        async def caught_up() -> bool:
            await queue.assign("stress")
            stats = await queue.subscriber_stats("stress")
            return all(s.lag == 0 and s.in_flight == 0 for s in stats)

        await eventually(caught_up, seconds=60)
        stop.set()
        await within(asyncio.gather(*consumers), 30)

    duplicates = {s: sum(n - 1 for n in seen.values() if n > 1) for s, seen in ledger.seen.items()}
    print(
        f"\ncommitted {len(ledger.committed)}, rolled back {len(ledger.rolled_back)}, "
        f"duplicates {duplicates}"
    )
    assert ledger.committed and ledger.rolled_back
    for subscriber, seen in ledger.seen.items():
        assert not ledger.committed - set(seen), f"{subscriber} missed messages"
        assert not set(seen) & ledger.rolled_back, f"{subscriber} got rolled-back messages"
        assert set(seen) <= ledger.committed
    assert ledger.offset_conflicts == []
    assert sorted(ledger.offset_of.values()) == list(range(1, len(ledger.committed) + 1))
