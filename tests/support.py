"""Helpers the tests share."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")


def with_database(dsn: str, database: str) -> str:
    """The same server URL pointing at another database (tests only; the library never
    rewrites a DSN)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


async def within(awaitable: Awaitable[T], seconds: float = 10.0) -> T:
    """Every await in a test has a timeout."""
    return await asyncio.wait_for(awaitable, seconds)


async def drain(
    queue: Any, topic: str, subscriber: str, *, batch: int = 100, empty_claims: int = 20
) -> list[Any]:
    """Claims and acks until nothing is left; returns the payloads in delivery order.

    An empty claim alone does not mean that: another assignment round may be stamping
    offsets on committed publishes, or a competing claim holds the rows a moment. Done is
    lag 0 with no committed publish waiting for its offset. What can stay is what is not due
    (a delayed message, a retry waiting for its backoff, a lease held elsewhere): after
    `empty_claims` empty claims in a row, drain returns with it left in place.
    """
    payloads: list[Any] = []
    empty = 0
    while True:
        messages = await within(queue.claim(topic, subscriber, batch))
        if messages:
            empty = 0
            await within(queue.ack(topic, subscriber, messages, strict=True))
            payloads.extend(m.payload for m in messages)
            continue
        [stats] = await within(queue.subscriber_stats(topic, subscriber))
        [log_stats] = await within(queue.topic_stats(topic))
        empty += 1
        if (stats.lag == 0 and log_stats.pending == 0) or empty >= empty_claims:
            return payloads
        await asyncio.sleep(0.01)  # a retry loop's pause, not a clock: the bound is the count


async def eventually(
    check: Callable[[], Awaitable[T]], *, seconds: float = 10.0, every: float = 0.02
) -> T:
    """Awaits check() until it returns something truthy (for waits on the clock, such as a
    lease running out; never used to order concurrent steps)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {seconds} s")
        await asyncio.sleep(every)


class ClaimWatch:
    """Counts Queue.claim calls (in any thread) and signals an *idle* claim: one that came back
    empty and began with the listener already connected. Such a claim was made after the
    listener's wake-up at connect, so once it has returned, only a notification (or the poll
    interval) can make that consumer claim again: a test that publishes after it proves that
    NOTIFY, not a poll or a leftover wake-up, delivered the message."""

    def __init__(self) -> None:
        self.claims = 0
        self.idle_claims = 0
        self._lock = threading.Lock()
        self._idle = threading.Event()

    def install(self, monkeypatch: Any, target: Any = None) -> ClaimWatch:
        """Wraps target.claim (a Queue, or by default the Queue class: every queue)."""
        import pgqueue

        owner = pgqueue.Queue if target is None else target
        original = owner.claim
        bound = target is not None

        async def claim(*args: Any, **kwargs: Any) -> Any:
            queue = target if bound else args[0]
            listening = queue.listener.connected
            messages = await original(*args, **kwargs)
            with self._lock:
                self.claims += 1
                if not messages and listening:
                    self.idle_claims += 1
                    self._idle.set()
            return messages

        monkeypatch.setattr(owner, "claim", claim)
        return self

    async def until_idle(self, seconds: float = 10.0) -> None:
        """Returns once some consumer has made an idle claim (see the class)."""
        if not await asyncio.to_thread(self._idle.wait, seconds):
            raise AssertionError(f"no idle claim within {seconds} s")


async def store_unpublishable(conn: Any, topic: str, offset: int, payload_json: str) -> None:
    """Puts a payload that publish refuses (nested too deep for the read paths) at an offset,
    as data stored before that limit existed would be: the read paths must still cost only
    that message."""
    await conn.execute(
        "UPDATE pgqueue.message m SET payload = $3::text::jsonb FROM pgqueue.topic t "
        'WHERE t.topic_id = m.topic_id AND t.name = $1 AND m."offset" = $2',
        topic,
        offset,
        payload_json,
    )
