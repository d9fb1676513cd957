"""Helpers the tests share."""

from __future__ import annotations

import asyncio
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


async def drain(queue: Any, topic: str, subscriber: str, *, batch: int = 100) -> list[Any]:
    """Claims and acks until nothing is left; returns the payloads in delivery order."""
    payloads: list[Any] = []
    while True:
        messages = await within(queue.claim(topic, subscriber, batch))
        if not messages:
            return payloads
        await within(queue.ack(topic, subscriber, messages, strict=True))
        payloads.extend(m.payload for m in messages)


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
