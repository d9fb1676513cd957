"""Consumers that work for the durable subscribers, each in a reconnect loop: WebSocket clients
(`/ws/topics/{t}?subscriber=S&ack=manual`, acking by frames) and library consumers
(`Queue.consume` with one ack per message, or `Queue.claim` with one ack per batch).

At-least-once aware: a delivery is written to the process's DeliveryLog when it arrives and
acked only afterwards, so a crash between the two costs a redelivery, never a record.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import websockets

import pgqueue
from bench.chaos.model import (
    LEASE_SECONDS,
    SUBSCRIBERS,
    Delivery,
    Place,
    consumer_name,
    payload_id,
)

RECONNECT_DELAY = 0.3
IDLE_POLL = 0.25  # the claiming consumer's rest when it found nothing
ACK_BATCH = 20  # most frames one ack covers
BATCH = 20
WORK_SECONDS = 0.02  # mean handling time of a batch


class DeliveryLog:
    """Deliveries of one process as JSON lines, line-buffered: a frozen or terminated process
    has written all it recorded, and the orchestrator can read along."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", buffering=1)

    def record(self, delivery: Delivery) -> None:
        self._file.write(delivery.line())

    def close(self) -> None:
        self._file.close()


class DeliveryReader:
    """Reads a DeliveryLog as it grows (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._position = 0
        self._partial = ""

    def new(self) -> list[Delivery]:
        if not self.path.exists():
            return []
        with self.path.open() as file:
            file.seek(self._position)
            text = self._partial + file.read()
            self._position = file.tell()
        *lines, self._partial = text.split("\n")
        return [Delivery.parse(line) for line in lines if line]


@dataclass
class ConsumerStats:
    name: str
    connects: int = 0
    received: int = 0
    last_received: float | None = None  # time.time()
    errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = dict(self.errors)
        return data


def _receive(stats: ConsumerStats, log: DeliveryLog, delivery: Delivery) -> None:
    log.record(delivery)
    stats.received += 1
    stats.last_received = delivery.at


# -- WebSocket ---------------------------------------------------------------------------


async def websocket_consumer(
    ws_base: str,
    topic: str,
    subscriber: str,
    prefetch: int,
    log: DeliveryLog,
    stats: ConsumerStats,
) -> None:
    query = urlencode(
        {
            "subscriber": subscriber,
            "start": "earliest",
            "ack": "manual",
            "prefetch": prefetch,
            "lease": LEASE_SECONDS,
        }
    )
    url = f"{ws_base}/ws/topics/{topic}?{query}"
    work = random.Random(stats.name)
    while True:
        try:
            async with websockets.connect(
                url, open_timeout=5, close_timeout=1, max_size=None
            ) as ws:
                stats.connects += 1
                while True:
                    frames = await _frames(ws)
                    offsets = [_on_frame(f, topic, subscriber, log, stats) for f in frames]
                    acks = [o for o in offsets if o is not None]
                    if acks:
                        await _work(work)
                        await ws.send(json.dumps({"type": "ack", "offsets": acks}))
        except (OSError, TimeoutError, websockets.WebSocketException) as error:
            stats.errors[type(error).__name__] += 1
        await asyncio.sleep(RECONNECT_DELAY)


async def _work(rng: random.Random) -> None:
    """Handling time between receipt and ack: messages are in flight when a fault strikes."""
    await asyncio.sleep(rng.uniform(0, 2 * WORK_SECONDS))


async def _frames(ws: Any) -> list[dict[str, Any]]:
    """The next frame, plus whatever else has already arrived (one ack for all of them)."""
    frames = [json.loads(await ws.recv())]
    while len(frames) < ACK_BATCH:
        try:
            # Cancelling recv() loses nothing in websockets' asyncio implementation.
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 0.005)))
        except TimeoutError:
            break
    return frames


def _on_frame(
    frame: dict[str, Any], topic: str, subscriber: str, log: DeliveryLog, stats: ConsumerStats
) -> int | None:
    """Records a message frame and returns its offset to ack; notes any other frame."""
    if frame.get("type") != "message":
        if frame.get("type") == "error":
            stats.errors[f"frame {frame.get('code')}"] += 1
        return None
    offset: int = frame["offset"]
    delivery = Delivery(
        topic,
        subscriber,
        offset,
        payload_id(frame["payload"]),
        stats.name,
        frame["attempt"],
        time.time(),
    )
    _receive(stats, log, delivery)
    return offset


# -- library -----------------------------------------------------------------------------


def _delivery(message: pgqueue.Message, stats: ConsumerStats) -> Delivery:
    return Delivery(
        message.topic,
        message.subscriber,
        message.offset,
        payload_id(message.payload),
        stats.name,
        message.attempt,
        time.time(),
    )


async def consuming_consumer(
    queue: pgqueue.Queue, topic: str, subscriber: str, log: DeliveryLog, stats: ConsumerStats
) -> None:
    """Queue.consume (NOTIFY wake-ups, poll fallback), one ack per message."""
    work = random.Random(stats.name)
    while True:
        stats.connects += 1
        try:
            async for message in queue.consume(topic, subscriber, batch=BATCH, lease=LEASE_SECONDS):
                _receive(stats, log, _delivery(message, stats))
                await _work(work)
                try:
                    await message.ack()
                except pgqueue.PgQueueError as error:  # LeaseLost, or the database went away
                    stats.errors[f"ack {type(error).__name__}"] += 1
        except Exception as error:  # the loop must outlive anything the chaos throws at it
            stats.errors[type(error).__name__] += 1
        await asyncio.sleep(RECONNECT_DELAY)


async def claiming_consumer(
    queue: pgqueue.Queue, topic: str, subscriber: str, log: DeliveryLog, stats: ConsumerStats
) -> None:
    """Queue.claim and one Queue.ack per batch, polling when idle."""
    work = random.Random(stats.name)
    stats.connects += 1
    while True:
        try:
            messages = await queue.claim(topic, subscriber, BATCH, lease=LEASE_SECONDS)
            if not messages:
                await asyncio.sleep(IDLE_POLL)
                continue
            for message in messages:
                _receive(stats, log, _delivery(message, stats))
            await _work(work)
            done = await queue.ack(topic, subscriber, messages)
            if len(done) < len(messages):
                stats.errors["ack lease lost"] += len(messages) - len(done)
        except Exception as error:  # the loop must outlive anything the chaos throws at it
            stats.errors[type(error).__name__] += 1
            await asyncio.sleep(RECONNECT_DELAY)


# -- a process's share -------------------------------------------------------------------


def start_consumers(
    place: Place,
    topics: list[str],
    queue: pgqueue.Queue,
    ws_base: str,
    log: DeliveryLog,
) -> tuple[list[asyncio.Task[None]], list[ConsumerStats]]:
    """Starts the consumers that SUBSCRIBERS place in this process. Library consumers use
    Queue.consume in the main process and Queue.claim in the worker, so both paths run."""
    tasks: list[asyncio.Task[None]] = []
    stats: list[ConsumerStats] = []
    library = consuming_consumer if place == "main" else claiming_consumer
    for topic in topics:
        for subscriber in SUBSCRIBERS:
            for number, spec in enumerate(subscriber.consumers):
                if spec.place != place:
                    continue
                mine = ConsumerStats(consumer_name(spec, topic, subscriber.name, number))
                stats.append(mine)
                if spec.kind == "ws":
                    work = websocket_consumer(
                        ws_base, topic, subscriber.name, spec.prefetch, log, mine
                    )
                else:
                    work = library(queue, topic, subscriber.name, log, mine)
                tasks.append(asyncio.create_task(work, name=mine.name))
    return tasks, stats
