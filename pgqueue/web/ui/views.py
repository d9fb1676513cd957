"""What the dashboard's pages show, gathered from the library and put in operators' words."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pgqueue
from pgqueue.models import Lease, SubscriberStats, Topic, TopicStats

PREVIEW_CHARS = 200
TAIL_BACKLOG = 20  # messages the live tail shows from before the page was opened


class PublishRates:
    """Publish rate per topic from successive samples of its last offset, over about a
    minute. Samples are taken when a page shows a topic, so a topic nobody looked at in the
    last minute has no rate yet (the topics page reloads itself to keep one)."""

    WINDOW = 60.0
    MIN_SPAN = 1.0  # below this a rate is mostly noise

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, topic: str, last_offset: int) -> float | None:
        """Records the topic's last offset now; returns messages per second, if known."""
        now = self._clock()
        samples = self._samples.setdefault(topic, deque())
        if samples and last_offset < samples[-1][1]:
            samples.clear()  # the topic was deleted and made again
        while samples and now - samples[0][0] > self.WINDOW:
            samples.popleft()
        rate = None
        if samples and now - samples[0][0] >= self.MIN_SPAN:
            first_time, first_offset = samples[0]
            rate = (last_offset - first_offset) / (now - first_time)
        if not samples or now - samples[-1][0] >= self.MIN_SPAN:
            samples.append((now, last_offset))
        return rate

    def forget_all_but(self, topics: Iterable[str]) -> None:
        keep = set(topics)
        for gone in self._samples.keys() - keep:
            del self._samples[gone]


@dataclass(frozen=True)
class TopicRow:
    topic: Topic
    stats: TopicStats
    rate: float | None

    @property
    def retention(self) -> str:
        return retention_text(self.topic)


@dataclass(frozen=True)
class SubscriberRow:
    stats: SubscriberStats
    consumers: int  # distinct consumers holding a live lease now


@dataclass(frozen=True)
class ConsumerLeases:
    """One consumer's share of a subscriber's leases."""

    consumer: str
    live: int
    expired: int
    oldest_offset: int


async def topic_rows(queue: pgqueue.Queue, rates: PublishRates) -> list[TopicRow]:
    stats = {s.topic: s for s in await queue.topic_stats()}
    rows = [
        TopicRow(topic, stats[topic.name], rates.observe(topic.name, stats[topic.name].last_offset))
        for topic in await queue.list_topics()
        if topic.name in stats  # deleted between the two reads
    ]
    rates.forget_all_but(stats)
    return rows


async def topic_row(queue: pgqueue.Queue, rates: PublishRates, name: str) -> TopicRow:
    """Raises pgqueue.TopicNotFound."""
    topics = await queue.list_topics(name)
    stats = await queue.topic_stats(name)
    if not topics or not stats:
        raise pgqueue.TopicNotFound(f"topic {name!r} does not exist")
    return TopicRow(topics[0], stats[0], rates.observe(name, stats[0].last_offset))


async def subscriber_rows(queue: pgqueue.Queue, topic: str) -> list[SubscriberRow]:
    rows = []
    for stats in await queue.subscriber_stats(topic):
        leases = await queue.leases(topic, stats.subscriber)
        holders = {lease.consumer for lease in leases if not lease.expired}
        rows.append(SubscriberRow(stats, len(holders)))
    return rows


def by_consumer(leases: list[Lease]) -> list[ConsumerLeases]:
    grouped: dict[str, list[Lease]] = {}
    for lease in leases:
        grouped.setdefault(lease.consumer or "unknown", []).append(lease)
    return [
        ConsumerLeases(
            consumer,
            live=sum(not lease.expired for lease in held),
            expired=sum(lease.expired for lease in held),
            oldest_offset=min(lease.offset for lease in held),
        )
        for consumer, held in sorted(grouped.items())
    ]


def retention_text(topic: Topic) -> str:
    limits = []
    if topic.retention_max_count is not None:
        limits.append(f"{topic.retention_max_count:,} messages")
    if topic.retention_max_age is not None:
        limits.append(duration_text(topic.retention_max_age))
    return " or ".join(limits) if limits else "keeps everything"


def preview(value: Any) -> str:
    """A payload as compact JSON, cut to PREVIEW_CHARS."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def duration_text(value: timedelta | float | None) -> str:
    if value is None:
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{amount}{unit}" for amount, unit in parts if amount][:2]
    return " ".join(shown)


def bytes_text(size: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    amount, unit = float(size), 0
    while amount >= 1024 and unit < len(units) - 1:
        amount /= 1024
        unit += 1
    return f"{size} B" if unit == 0 else f"{amount:.1f} {units[unit]}"


def rate_text(rate: float | None) -> str:
    if rate is None:
        return "measuring…"
    return f"{rate:,.1f}/s" if rate < 100 else f"{rate:,.0f}/s"


def tail_start(stats: TopicStats) -> int:
    """The first offset the live tail shows: the last few messages before the page opened."""
    first = stats.first_offset or stats.last_offset + 1
    return max(first, stats.last_offset - TAIL_BACKLOG + 1)


def tail_entries(messages: list[pgqueue.StoredMessage]) -> list[dict[str, Any]]:
    return [
        {
            "offset": m.offset,
            "published_at": m.published_at.isoformat(timespec="seconds"),
            "key": m.key,
            "payload": preview(m.payload),
        }
        for m in messages
    ]
