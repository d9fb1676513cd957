"""The evidence the checker needs, read from the database after the chaos: the log, the
offsets of in-transaction publishes, dead letters, subscriber statistics; and the drain that
gives consumers a bounded time to catch up first."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pgqueue
from bench.chaos.checker import Stored
from bench.chaos.consumers import DeliveryReader
from bench.chaos.model import SUBSCRIBERS, Delivery, payload_id
from bench.chaos.publishers import Ledger

READ_PAGE = 10_000
DRAIN_EXTRA = 8.0  # most the drain goes on past its time while deliveries still arrive
PROGRESS_WINDOW = 2.0


async def resolve(q: pgqueue.Queue, ledger: Ledger) -> dict[tuple[str, int], int | None]:
    """Offsets of the acknowledged in-transaction publishes (after an assignment round)."""
    ids: dict[str, list[int]] = defaultdict(list)
    for acked in ledger.acked:
        if acked.message_id is not None:
            ids[acked.topic].append(acked.message_id)
    resolved: dict[tuple[str, int], int | None] = {}
    for topic, message_ids in ids.items():
        await q.assign(topic)
        offsets = await q.message_offsets(topic, message_ids)
        resolved |= {(topic, m): o for m, o in zip(message_ids, offsets, strict=True)}
    return resolved


async def read_log(q: pgqueue.Queue, topics: list[str]) -> dict[str, dict[int, Stored]]:
    log: dict[str, dict[int, Stored]] = {}
    for topic in topics:
        await q.assign(topic)  # a committed in-transaction publish left unassigned is owed too
        entries: dict[int, Stored] = {}
        after = 0
        while page := await q.read(topic, from_offset=after + 1, limit=READ_PAGE):
            for m in page:
                entries[m.offset] = Stored(payload_id(m.payload), m.headers)
            after = page[-1].offset
        log[topic] = entries
    return log


async def drain(
    q: pgqueue.Queue,
    log: dict[str, dict[int, Stored]],
    readers: list[DeliveryReader],
    deliveries: list[Delivery],
    seconds: float,
) -> dict[str, Any]:
    """Waits until every durable subscriber has received (or dead-lettered) everything it is
    owed. After `seconds` it waits on only while owed messages still arrive (a subscriber
    catching up after a stall), and never longer than DRAIN_EXTRA more: a stuck subscriber
    costs the drain timeout, never a hang."""
    loop = asyncio.get_running_loop()
    began = progress = loop.time()
    owed = {
        (topic, spec.name): {o for o, s in entries.items() if spec.matches(s.headers)}
        for topic, entries in log.items()
        for spec in SUBSCRIBERS
    }
    while True:
        for reader in readers:
            for d in reader.new():
                deliveries.append(d)
                offsets = owed.get((d.topic, d.subscriber), set())
                if d.offset in offsets:
                    offsets.discard(d.offset)
                    progress = loop.time()
        for (topic, subscriber), offsets in owed.items():
            if offsets:
                offsets -= {d.offset for d in await q.dead_letters(topic, subscriber, limit=1000)}
        waiting = {f"{t}/{s}": len(offsets) for (t, s), offsets in owed.items() if offsets}
        now = loop.time()
        stalled = now - began > seconds and now - progress > PROGRESS_WINDOW
        if not waiting or stalled or now - began > seconds + DRAIN_EXTRA:
            return {"complete": not waiting, "seconds": now - began, "waiting_for": waiting}
        await asyncio.sleep(0.5)


async def dead_letters(q: pgqueue.Queue, topics: list[str]) -> dict[tuple[str, str], set[int]]:
    dead: dict[tuple[str, str], set[int]] = {}
    for topic in topics:
        for spec in SUBSCRIBERS:
            offsets: set[int] = set()
            after = 0
            while page := await q.dead_letters(topic, spec.name, after=after, limit=1000):
                offsets |= {d.offset for d in page}
                after = page[-1].offset
            dead[(topic, spec.name)] = offsets
    return dead


async def subscriber_stats(
    q: pgqueue.Queue, topics: list[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    stats = {}
    for topic in topics:
        for s in await q.subscriber_stats(topic):
            stats[(topic, s.subscriber)] = {
                "position": s.position,
                "last_offset": s.last_offset,
                "lag": s.lag,
                "in_flight": s.in_flight,
                "retrying": s.retrying,
                "dead": s.dead,
            }
    return stats


async def ephemeral(q: pgqueue.Queue, topics: list[str]) -> list[str]:
    """Ephemeral subscribers still there (every connection that had one is gone by now)."""
    return [
        f"{s.topic}/{s.name}" for t in topics for s in await q.list_subscribers(t) if s.ephemeral
    ]
