"""Natural batching of Queue.publish: shared round trips, individual results and errors."""

from __future__ import annotations

import asyncio

import pytest

import pgqueue
from tests.support import drain, within


async def test_concurrent_publishes_each_get_their_own_offset(queue: pgqueue.Queue) -> None:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    offsets = await within(
        asyncio.gather(*(queue.publish("orders", {"n": n}, key=f"k{n}") for n in range(200)))
    )
    assert sorted(offsets) == list(range(1, 201))
    by_offset = {m.offset: m for m in await queue.read("orders", limit=1000)}
    for n, offset in enumerate(offsets):
        assert by_offset[offset].payload == {"n": n}
        assert by_offset[offset].key == f"k{n}"
    assert len(await drain(queue, "orders", "billing")) == 200


async def test_a_bad_message_fails_only_its_own_caller(queue: pgqueue.Queue) -> None:
    # The topic's own limit is below the client's, so the database refuses the big one.
    await queue.create_topic("small", max_payload_bytes=100)
    results = await within(
        asyncio.gather(
            *(queue.publish("small", "x" * (500 if n == 7 else 10)) for n in range(20)),
            return_exceptions=True,
        )
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(results[7], pgqueue.PayloadTooLarge)
    assert sorted(r for r in results if isinstance(r, int)) == list(range(1, 20))


async def test_batched_idempotent_publishes_return_the_original_offset(
    queue: pgqueue.Queue,
) -> None:
    await queue.create_topic("orders")
    offsets = await within(
        asyncio.gather(*(queue.publish("orders", n, idempotency_key="same") for n in range(10)))
    )
    assert set(offsets) == {1}
    assert len(await queue.read("orders")) == 1


async def test_batching_can_be_switched_off(database_dsn: str) -> None:
    settings = pgqueue.Settings(publish_batching=False)
    async with pgqueue.connect(database_dsn, settings=settings) as queue:
        await queue.create_topic("orders")
        offsets = await within(asyncio.gather(*(queue.publish("orders", n) for n in range(20))))
        assert sorted(offsets) == list(range(1, 21))
        with pytest.raises(pgqueue.TopicNotFound):
            await queue.publish("nope", 1)
