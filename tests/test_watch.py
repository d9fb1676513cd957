"""The shared check of idle consumers (pgqueue.watch) keeps the delivery promises: an idle
consumer claims nothing per poll interval, yet finds what no notification announced."""

from __future__ import annotations

import asyncio

import pytest

import pgqueue
from tests.support import ClaimWatch, within


async def _first(queue: pgqueue.Queue, received: asyncio.Queue[pgqueue.Message]) -> None:
    async for message in queue.consume("orders", "billing", poll_interval=0.2):
        await message.ack()
        await received.put(message)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_lost_notification_is_made_up_for_by_the_shared_check(
    queue: pgqueue.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing")
    watch = ClaimWatch().install(monkeypatch, queue)
    received: asyncio.Queue[pgqueue.Message] = asyncio.Queue()
    consumer = asyncio.create_task(_first(queue, received))
    try:
        await watch.until_idle()
        # The listener stays connected, but the topic's notifications go nowhere.
        monkeypatch.setattr(queue.listener, "_wake", lambda topic: None)
        await queue.publish("orders", "never announced")
        assert (await within(received.get())).payload == "never announced"
        assert queue.listener.connected
    finally:
        await _stop(consumer)


async def test_a_nack_in_another_process_reaches_an_idle_consumer(
    queue: pgqueue.Queue, database_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A nack sends no notification; the retry it schedules is found by the check."""
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing")
    await queue.publish("orders", "retry me")
    async with pgqueue.connect(database_dsn) as elsewhere:
        [held] = await elsewhere.claim("orders", "billing", lease=3600)
        watch = ClaimWatch().install(monkeypatch, queue)
        received: asyncio.Queue[pgqueue.Message] = asyncio.Queue()
        consumer = asyncio.create_task(_first(queue, received))
        try:
            await watch.until_idle()  # its due time is an hour away
            assert await elsewhere.nack(held, delay=0) == "retry"
            again = await within(received.get())
            assert (again.payload, again.attempt) == ("retry me", 2)
        finally:
            await _stop(consumer)
