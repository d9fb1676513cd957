"""Gauges of what the database holds and of the pool, read when Prometheus scrapes.

A refresh costs the database one topic_stats and one subscriber_stats call (which tells
ephemeral subscribers, named at random, from named ones). Scrapes within
metrics_cache seconds of a refresh reuse it, and scrapes that arrive together share one. When
the database does not answer, pgqueue_database_up is 0 and its gauges are left out, while the
process's own metrics still go out: an outage is when an operator needs them most.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric

import pgqueue

log = logging.getLogger(__name__)

EPHEMERAL = "(ephemeral)"  # names are [A-Za-z0-9._-]: no subscriber is called this
READ_TIMEOUT = 5.0  # seconds; a scrape must answer even when the database is slow

TOPIC_GAUGES = {
    "last_offset": ("pgqueue_topic_last_offset", "Offset of the topic's newest message."),
    "messages": ("pgqueue_topic_messages", "Messages the topic's log keeps (after retention)."),
    "bytes": ("pgqueue_topic_log_bytes", "Size of the topic's log on disk, indexes included."),
    "pending": (
        "pgqueue_topic_pending_messages",
        "Messages published inside transactions that have no offset yet.",
    ),
    "subscribers": ("pgqueue_topic_subscribers", "Subscribers of the topic, ephemeral ones too."),
}
SUBSCRIBER_GAUGES = {
    "lag": ("pgqueue_subscriber_lag_messages", "Messages past the subscriber's position."),
    "lag_seconds": (
        "pgqueue_subscriber_lag_seconds",
        "How long the oldest message the subscriber has not done has waited.",
    ),
    "in_flight": ("pgqueue_subscriber_in_flight_messages", "Messages leased to consumers now."),
    "expired": (
        "pgqueue_subscriber_expired_leases",
        "Leases that ran out without an ack; claimed again next.",
    ),
    "retrying": (
        "pgqueue_subscriber_retrying_messages",
        "Messages waiting for a retry or a delayed first delivery.",
    ),
    "dead": ("pgqueue_subscriber_dead_letters", "Messages in the subscriber's dead letters."),
}


@dataclass(frozen=True)
class Snapshot:
    """What one refresh read; subscribers by (topic, label), ephemeral ones folded together."""

    up: bool = False
    topics: list[pgqueue.TopicStats] = field(default_factory=list)
    subscribers: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    positions: dict[tuple[str, str], int] = field(default_factory=dict)


class DatabaseStats:
    """A collector of topic and subscriber gauges; refresh() before each exposition."""

    def __init__(self, cache: float) -> None:
        self.cache = cache
        self.snapshot = Snapshot()
        self._fresh_until = 0.0
        self._lock = asyncio.Lock()

    async def refresh(self, queue: pgqueue.Queue) -> None:
        async with self._lock:
            if time.monotonic() < self._fresh_until:
                return
            self.snapshot = await _read(queue)
            self._fresh_until = time.monotonic() + self.cache

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        up = GaugeMetricFamily(
            "pgqueue_database_up", "1 when the last scrape read the database's statistics."
        )
        up.add_metric([], 1 if snapshot.up else 0)
        yield up
        if not snapshot.up:
            return
        for attribute, (name, help_text) in TOPIC_GAUGES.items():
            topic_gauge = GaugeMetricFamily(name, help_text, labels=["topic"])
            for t in snapshot.topics:
                topic_gauge.add_metric([t.topic], getattr(t, attribute))
            yield topic_gauge
        position = GaugeMetricFamily(
            "pgqueue_subscriber_position",
            "Offset up to which the named subscriber has done every message.",
            labels=["topic", "subscriber"],
        )
        for labels, value in snapshot.positions.items():
            position.add_metric(list(labels), value)
        yield position
        for attribute, (name, help_text) in SUBSCRIBER_GAUGES.items():
            gauge = GaugeMetricFamily(name, help_text, labels=["topic", "subscriber"])
            for labels, values in snapshot.subscribers.items():
                gauge.add_metric(list(labels), values[attribute])
            yield gauge


async def _read(queue: pgqueue.Queue) -> Snapshot:
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            topics = await queue.topic_stats()
            subscribers = await queue.subscriber_stats()
    except pgqueue.DatabaseUnavailable:
        return Snapshot()  # the Queue has logged the outage
    except (pgqueue.PgQueueError, TimeoutError) as error:
        log.warning("metrics: the database's statistics could not be read: %s", error)
        return Snapshot()
    folded: dict[tuple[str, str], dict[str, float]] = {}
    positions: dict[tuple[str, str], int] = {}
    for s in subscribers:
        if not s.ephemeral:
            folded[(s.topic, s.subscriber)] = {a: getattr(s, a) for a in SUBSCRIBER_GAUGES}
            positions[(s.topic, s.subscriber)] = s.position
            continue
        # Summed, except the age of the oldest waiting message, which is the oldest of all.
        into = folded.setdefault((s.topic, EPHEMERAL), dict.fromkeys(SUBSCRIBER_GAUGES, 0.0))
        for attribute in SUBSCRIBER_GAUGES:
            value = getattr(s, attribute)
            combine = max if attribute == "lag_seconds" else operator.add
            into[attribute] = combine(into[attribute], value)
    return Snapshot(up=True, topics=topics, subscribers=folded, positions=positions)


class PoolUse:
    """A collector of the database pool's connections: open, in use, idle, and the most."""

    def __init__(self, queue: Callable[[], pgqueue.Queue | None]) -> None:
        self._queue = queue

    def collect(self) -> Iterator[Metric]:
        queue = self._queue()
        if queue is None:  # before the app started, or after it stopped
            return
        pool = queue.pool
        size, idle = pool.get_size(), pool.get_idle_size()
        for name, help_text, value in (
            ("pgqueue_pool_open_connections", "Connections the pool has open.", size),
            (
                "pgqueue_pool_in_use_connections",
                "Connections checked out of the pool.",
                size - idle,
            ),
            ("pgqueue_pool_idle_connections", "Open connections waiting in the pool.", idle),
            (
                "pgqueue_pool_max_connections",
                "The most connections the pool opens.",
                pool.get_max_size(),
            ),
        ):
            gauge = GaugeMetricFamily(name, help_text)
            gauge.add_metric([], value)
            yield gauge
