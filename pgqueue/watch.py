"""Shared wake-ups for idle consumers: one check per topic and process, not a claim per
consumer and poll interval.

A consumer whose claim found nothing, and whose subscriber has nothing falling due, waits
for its wake-up event alone. What sets it:

- a NOTIFY on its topic, a reset, a poke (pgqueue.listener, pgqueue.delivery);
- this watch. Every poll interval it makes one pgqueue.subscribers_due call per topic that
  has waiting consumers in this process (which first numbers committed in-transaction
  publishes, as a claim would), and wakes the consumers of every subscriber with work now:
  messages past its cursor, or a retry, delayed message or lease that has fallen due;
- while the listener is not connected, every waiting consumer, every poll interval, as if it
  polled alone: notifications are being lost, and a message published inside a transaction
  gets its offset from a claim (or a publish) on its topic, so the check could not see it.

PostgreSQL delivers every notification to a session that is listening, so a NOTIFY is lost
only with the listener's connection, and the listener wakes every consumer when it is back.
The check finds what falls due with time (retries, expired leases, delayed messages) and
covers whatever a lost notification would have said.

2,000 idle WebSockets on a topic cost the database one query per poll interval, not 4,000
(a claim and a due-time check each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pgqueue.errors import PgQueueError

if TYPE_CHECKING:
    from pgqueue.client import Queue

log = logging.getLogger(__name__)

# (topic, poll interval): consumers with different intervals are checked at their own pace.
_Key = tuple[str, float]


class IdleWatch:
    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._waiting: dict[_Key, dict[str, set[asyncio.Event]]] = {}
        self._checks: dict[_Key, asyncio.Task[None]] = {}

    @contextlib.contextmanager
    def watching(
        self, topic: str, subscriber: str, every: float, wake: asyncio.Event
    ) -> Iterator[None]:
        """Sets `wake` when the subscriber may have work, checking at least every `every`
        seconds, for as long as the context lasts."""
        key = (topic, every)
        self._waiting.setdefault(key, {}).setdefault(subscriber, set()).add(wake)
        if key not in self._checks:
            self._checks[key] = asyncio.get_running_loop().create_task(self._check_every(key))
        try:
            yield
        finally:
            subscribers = self._waiting.get(key, {})
            events = subscribers.get(subscriber, set())
            events.discard(wake)
            if not events:
                subscribers.pop(subscriber, None)
            if not subscribers:
                self._waiting.pop(key, None)  # the check ends at its next turn

    async def close(self) -> None:
        checks = list(self._checks.values())
        self._checks.clear()
        for check in checks:
            check.cancel()
        await asyncio.gather(*checks, return_exceptions=True)

    async def _check_every(self, key: _Key) -> None:
        topic, every = key
        while True:
            await asyncio.sleep(every)
            if not self._waiting.get(key):
                del self._checks[key]
                return
            try:
                await self._check(key, topic)
            except Exception as error:
                # A check must outlive a bad turn; its consumers are woken to look themselves.
                log.exception("idle check of topic %s failed: %s", topic, error)
                self._wake(key, None)

    async def _check(self, key: _Key, topic: str) -> None:
        if not self._queue.listener.connected:
            self._wake(key, None)
            return
        try:
            due = await self._queue.subscribers_due(topic)
        except PgQueueError as error:
            # Their claims meet the same error and handle it (an outage: with back-off).
            log.debug("idle check of topic %s failed: %s", topic, error)
            self._wake(key, None)
            return
        idle = {name for name, seconds in due.items() if seconds is None or seconds > 0}
        self._wake(key, idle)

    def _wake(self, key: _Key, idle: set[str] | None) -> None:
        """Wakes the waiting consumers of every subscriber but the idle ones (all, for None).
        A subscriber the check did not see (created or removed meanwhile) is woken too."""
        for subscriber, events in self._waiting.get(key, {}).items():
            if idle is None or subscriber not in idle:
                for event in events:
                    event.set()
