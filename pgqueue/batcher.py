"""Natural batching for Queue.publish: concurrent calls to one topic share a round trip.

Like a Kafka producer with linger 0: nothing waits for a batch to fill. A call that arrives
while the topic's batch is in flight joins the next one; a lone caller goes out at once. Each
message keeps its own options (headers, key, idempotency key, delay). If a batch fails, its
messages are sent one by one, so an error reaches only the caller whose message caused it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pgqueue.errors import PgQueueError

# (topic, payload, headers, key, idempotency_key, delay, correlation_id, reply_to)
MessageArgs = tuple[Any, ...]
SendBatch = Callable[[str, list[MessageArgs]], Awaitable[list[int]]]


class Batcher:
    def __init__(self, send: SendBatch, *, max_batch: int = 500, max_in_flight: int = 2) -> None:
        self._send = send
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._waiting: dict[str, list[tuple[MessageArgs, asyncio.Future[int]]]] = {}
        self._in_flight: dict[str, int] = {}

    async def publish(self, args: MessageArgs) -> int:
        topic = args[0]
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(topic, []).append((args, future))
        if self._in_flight.get(topic, 0) < self._max_in_flight:
            self._in_flight[topic] = self._in_flight.get(topic, 0) + 1
            asyncio.get_running_loop().create_task(self._drain(topic))
        return await future

    async def _drain(self, topic: str) -> None:
        try:
            while waiting := self._waiting.get(topic):
                batch, self._waiting[topic] = waiting[: self._max_batch], waiting[self._max_batch :]
                await self._deliver(topic, batch)
        finally:
            self._in_flight[topic] -= 1
            if not self._waiting.get(topic):
                self._waiting.pop(topic, None)

    async def _deliver(
        self, topic: str, batch: Sequence[tuple[MessageArgs, asyncio.Future[int]]]
    ) -> None:
        try:
            offsets = await self._send(topic, [args for args, _ in batch])
        except PgQueueError as error:
            if len(batch) == 1:
                _settle(batch[0][1], error=error)
                return
            for item in batch:  # find out whose message it was
                await self._deliver(topic, [item])
            return
        except BaseException as error:
            for _, future in batch:
                _settle(future, error=error)
            if not isinstance(error, Exception):
                raise
            return
        for (_, future), offset in zip(batch, offsets, strict=True):
            _settle(future, result=offset)


def _settle(
    future: asyncio.Future[int], *, result: int | None = None, error: BaseException | None = None
) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
