"""`pgqueue top`: a live view of topics and subscribers, with rates from successive samples."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pgqueue.client import Queue
from pgqueue.errors import TopicNotFound
from pgqueue.models import SubscriberStats, TopicStats


@dataclass(frozen=True)
class Sample:
    """The queue's figures at one moment (monotonic seconds)."""

    at: float
    topics: list[TopicStats]
    subscribers: list[SubscriberStats]


async def take_sample(queue: Queue, topic: str | None) -> Sample:
    topics = await queue.topic_stats(topic)
    if topic is not None and not topics:
        raise TopicNotFound(f"topic {topic!r} does not exist")
    subscribers = await queue.subscriber_stats(topic)
    return Sample(time.monotonic(), topics, subscribers)


def _per_second(now: int, before: int | None, seconds: float) -> str:
    # A reset moves a position back: that is not a negative ack rate.
    if before is None or seconds <= 0:
        return "-"
    return f"{max(0, now - before) / seconds:,.1f}"


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def render(now: Sample, before: Sample | None) -> Group:
    """Two tables: topics with their publish rate, subscribers with lag and ack rate.

    Rates need two samples; the first view shows '-' for them. The ack rate is how fast the
    position advances (acks past a gap count once the gap is acked).
    """
    elapsed = now.at - before.at if before else 0.0
    last_before = {t.topic: t.last_offset for t in before.topics} if before else {}
    position_before = (
        {(s.topic, s.subscriber): s.position for s in before.subscribers} if before else {}
    )
    topics = Table(
        "topic", "messages", "last offset", "publish/s", "subscribers",
        title="topics", title_justify="left", box=None, header_style="bold",
    )  # fmt: skip
    for t in now.topics:
        topics.add_row(
            t.topic,
            f"{t.messages:,}",
            str(t.last_offset),
            _per_second(t.last_offset, last_before.get(t.topic), elapsed),
            str(t.subscribers),
        )
    subscribers = Table(
        "topic", "subscriber", "position", "lag", "lag age", "in flight", "expired",
        "retrying", "dead", "ack/s",
        title="subscribers", title_justify="left", box=None, header_style="bold",
    )  # fmt: skip
    for s in now.subscribers:
        subscribers.add_row(
            s.topic,
            s.subscriber,
            str(s.position),
            f"{s.lag:,}",
            _age(s.lag_seconds),
            str(s.in_flight),
            str(s.expired),
            str(s.retrying),
            Text(str(s.dead), style="red" if s.dead else ""),
            _per_second(s.position, position_before.get((s.topic, s.subscriber)), elapsed),
        )
    return Group(topics, Text(), subscribers)


async def show_once(queue: Queue, topic: str | None, interval: float, console: Console) -> None:
    """One view, from two samples `interval` apart so that it has rates."""
    before = await take_sample(queue, topic)
    await asyncio.sleep(interval)
    console.print(render(await take_sample(queue, topic), before))


async def watch(
    queue: Queue,
    topic: str | None,
    interval: float,
    console: Console,
    *,
    started: Callable[[str], None],
) -> None:
    """Redraws every `interval` seconds until cancelled (Ctrl-C); calls `started` with a
    hint once the view is up (from then on Ctrl-C cancels this coroutine cleanly)."""
    before = None
    now = await take_sample(queue, topic)
    with Live(render(now, before), console=console, auto_refresh=False) as live:
        started("pgqueue top: Ctrl-C to quit")
        while True:
            await asyncio.sleep(interval)
            before, now = now, await take_sample(queue, topic)
            live.update(render(now, before), refresh=True)
