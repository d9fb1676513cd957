"""The consume loop and the worker helper built on Queue.claim."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pgqueue.delivery import Claims
from pgqueue.errors import LeaseLost

if TYPE_CHECKING:
    from pgqueue.client import Queue
    from pgqueue.models import Message

log = logging.getLogger(__name__)


async def consume(
    queue: Queue,
    topic: str,
    subscriber: str,
    *,
    batch: int,
    lease: timedelta | float | None,
    poll_interval: float,
) -> AsyncIterator[Message]:
    """Claims batches and yields their messages in offset order, forever.

    The claiming, waiting, resets and outages are pgqueue.delivery.Claims'. When the
    subscriber is reset, messages claimed before the reset and not yet yielded are dropped,
    since the reset cleared their leases. When the caller stops (break, aclose, cancel), the
    rest of the batch goes back at once, with no delivery attempt counted.
    """
    with Claims(queue, topic, subscriber, lease=lease, poll_interval=poll_interval) as claims:
        waiting: deque[Message] = deque()
        try:
            while True:
                waiting.extend(await claims.next_batch(batch))
                while waiting:
                    message = waiting.popleft()
                    if not claims.is_current(message):
                        waiting.clear()  # claimed before a reset, which cleared its lease
                        break
                    yield message
        finally:
            if waiting:
                await claims.give_back(list(waiting))


async def work(
    queue: Queue,
    topic: str,
    subscriber: str,
    handler: Callable[[Message], Awaitable[Any]],
    *,
    concurrency: int,
    batch: int,
    lease: timedelta | float | None,
    stop: asyncio.Event | None,
) -> None:
    """Runs `concurrency` competing consumers until `stop` is set (or forever).

    On stop, a consumer in the middle of a message finishes it (handler, then ack or nack);
    one waiting for messages is cancelled.
    """
    handling: set[asyncio.Task[None]] = set()

    async def one_consumer() -> None:
        me = asyncio.current_task()
        assert me is not None
        async for message in queue.consume(topic, subscriber, batch=batch, lease=lease):
            handling.add(me)
            try:
                await _handle(message, handler)
            finally:
                handling.discard(me)
            if stop is not None and stop.is_set():
                return

    tasks = [asyncio.create_task(one_consumer()) for _ in range(concurrency)]
    try:
        if stop is None:
            await asyncio.gather(*tasks)
        else:
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            # No await between the check and the cancel: a consumer cannot start a message
            # in between, and one that is handling returns once it is done (stop is set).
            for task in tasks:
                if task not in handling:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _handle(message: Message, handler: Callable[[Message], Awaitable[Any]]) -> None:
    try:
        await handler(message)
    except Exception as error:
        log.info(
            "handler failed on %s/%s offset %d (attempt %d), nacking: %r",
            message.topic,
            message.subscriber,
            message.offset,
            message.attempt,
            error,
            extra={"topic": message.topic, "offset": message.offset, "attempt": message.attempt},
        )
        try:
            await message.nack(error=f"{type(error).__name__}: {error}"[:2000])
        except LeaseLost:
            log.warning("lease of offset %d lost before its nack", message.offset)
        return
    try:
        await message.ack()
    except LeaseLost:
        log.warning("lease of offset %d lost before its ack", message.offset)
