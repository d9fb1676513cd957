"""Publishers of three kinds, each writing what it was told into the Ledger:

- rest: `POST /topics/{t}/messages` (and `/batch`) against the server process;
- lib: `Queue.publish` / `Queue.publish_many` (auto-commit; they return offsets);
- tx: `pgqueue.publish` inside the caller's own transaction, a quarter of which roll back on
  purpose (they return message ids; offsets are looked up at the end).

A publish is acknowledged only when the call returned (HTTP 2xx, function returned, COMMIT
returned). Every failure is retried with the same idempotency key until the retry deadline, so a
publish whose answer was lost is never stored twice; one still failing then is "unconfirmed":
not acknowledged, but owed to subscribers if it did reach the log.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import asyncpg
import httpx

import pgqueue
from bench.chaos.model import Draft, Drafts

T = TypeVar("T")

CALL_TIMEOUT = 15.0  # one attempt; a hung call counts as a failure and is retried
MAX_BACKOFF = 1.0
ROLLBACK_SHARE = 0.25


@dataclass(frozen=True)
class Acked:
    topic: str
    pid: str
    via: str
    at: float  # time.time() of the acknowledgement
    offset: int | None = None  # rest, lib
    message_id: int | None = None  # tx (its offset is found after the run)


@dataclass
class Ledger:
    acked: list[Acked] = field(default_factory=list)
    rolled_back: list[tuple[str, str]] = field(default_factory=list)  # (topic, pid)
    unconfirmed: list[tuple[str, str]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # retried failures, by kind

    def settle(self, topic: str, via: str, drafts: list[Draft], results: list[int] | None) -> None:
        if results is None:
            self.unconfirmed += [(topic, d.pid) for d in drafts]
            return
        now = time.time()
        for draft, value in zip(drafts, results, strict=True):
            if via == "tx":
                self.acked.append(Acked(topic, draft.pid, via, now, message_id=value))
            else:
                self.acked.append(Acked(topic, draft.pid, via, now, offset=value))


@dataclass(frozen=True)
class Pace:
    """When a publisher stops: no new publish after `until`, no retry after `retry_until`
    (event-loop time), and how long it rests between publishes on average."""

    until: float
    retry_until: float
    gap: float

    def open(self) -> bool:
        return asyncio.get_running_loop().time() < self.until

    async def rest(self, rng: random.Random) -> None:
        await asyncio.sleep(rng.expovariate(1 / self.gap))


async def retried(
    attempt: Callable[[], Awaitable[T]], pace: Pace, ledger: Ledger, via: str
) -> T | None:
    """attempt() until it succeeds (its result) or the retry deadline passes (None)."""
    loop = asyncio.get_running_loop()
    delay = 0.05
    while True:
        try:
            return await asyncio.wait_for(attempt(), CALL_TIMEOUT)
        except Exception as error:  # during chaos every failure is worth a retry
            ledger.errors[f"{via}: {_describe(error)}"] += 1
        if loop.time() + delay > pace.retry_until:
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_BACKOFF)


def _describe(error: Exception) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    return type(error).__name__


def _batch(drafts: Drafts, rng: random.Random) -> list[Draft]:
    return [drafts.next() for _ in range(rng.choice((1, 1, 1, 2, 4)))]


# -- REST --------------------------------------------------------------------------------


async def rest_publisher(
    url: str, topics: list[str], rng: random.Random, pace: Pace, ledger: Ledger, prefix: str
) -> None:
    drafts = Drafts(prefix, rng)
    async with httpx.AsyncClient(base_url=url, timeout=CALL_TIMEOUT) as http:
        while pace.open():
            topic, batch = rng.choice(topics), _batch(drafts, rng)
            attempt = partial(_rest_publish, http, topic, batch)
            offsets = await retried(attempt, pace, ledger, "rest")
            ledger.settle(topic, "rest", batch, offsets)
            await pace.rest(rng)


async def _rest_publish(http: httpx.AsyncClient, topic: str, batch: list[Draft]) -> list[int]:
    if len(batch) == 1:
        response = await http.post(f"/topics/{topic}/messages", json=batch[0].spec())
        response.raise_for_status()
        return [response.json()["offset"]]
    body = {"messages": [d.spec() for d in batch]}
    response = await http.post(f"/topics/{topic}/messages/batch", json=body)
    response.raise_for_status()
    offsets: list[int] = response.json()["offsets"]
    return offsets


# -- library, auto-commit ----------------------------------------------------------------


async def library_publisher(
    queue: pgqueue.Queue,
    topics: list[str],
    rng: random.Random,
    pace: Pace,
    ledger: Ledger,
    prefix: str,
) -> None:
    drafts = Drafts(prefix, rng)
    while pace.open():
        topic, batch = rng.choice(topics), _batch(drafts, rng)
        offsets = await retried(partial(_lib_publish, queue, topic, batch), pace, ledger, "lib")
        ledger.settle(topic, "lib", batch, offsets)
        await pace.rest(rng)


async def _lib_publish(queue: pgqueue.Queue, topic: str, batch: list[Draft]) -> list[int]:
    if len(batch) == 1:
        draft = batch[0]
        offset = await queue.publish(
            topic, draft.payload, headers=draft.headers, key=draft.key, idempotency_key=draft.pid
        )
        return [offset]
    return await queue.publish_many(topic, [d.spec() for d in batch])


# -- inside the caller's transaction -----------------------------------------------------


class _RollBack(Exception):
    """Raised inside a transaction to roll it back on purpose."""


@dataclass
class TransactionPublisher:
    dsn: str
    conn: asyncpg.Connection | None = None

    async def run(
        self, topics: list[str], rng: random.Random, pace: Pace, ledger: Ledger, prefix: str
    ) -> None:
        drafts = Drafts(prefix, rng)
        try:
            while pace.open():
                topic, batch = rng.choice(topics), _batch(drafts, rng)
                if rng.random() < ROLLBACK_SHARE:
                    await self._roll_back(topic, batch, ledger)
                else:
                    ids = await retried(partial(self._commit, topic, batch), pace, ledger, "tx")
                    ledger.settle(topic, "tx", batch, ids)
                await pace.rest(rng)
        finally:
            await self._drop()

    async def _commit(self, topic: str, batch: list[Draft]) -> list[int]:
        conn = await self._connection()
        try:
            async with conn.transaction():
                return [await _publish_in(conn, topic, d) for d in batch]
        except BaseException:
            await self._drop()  # its state is unknown; the retry starts on a fresh one
            raise

    async def _roll_back(self, topic: str, batch: list[Draft], ledger: Ledger) -> None:
        # Whatever happens here, nothing commits: it is recorded as rolled back either way.
        ledger.rolled_back += [(topic, d.pid) for d in batch]
        try:
            conn = await asyncio.wait_for(self._connection(), CALL_TIMEOUT)
            async with conn.transaction():
                for draft in batch:
                    await asyncio.wait_for(_publish_in(conn, topic, draft), CALL_TIMEOUT)
                raise _RollBack
        except _RollBack:
            pass
        except Exception as error:
            ledger.errors[f"tx rollback: {_describe(error)}"] += 1
            await self._drop()

    async def _connection(self) -> asyncpg.Connection:
        if self.conn is None or self.conn.is_closed():
            self.conn = await asyncpg.connect(self.dsn)
        return self.conn

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.terminate()


async def _publish_in(conn: asyncpg.Connection, topic: str, draft: Draft) -> int:
    message_id: int = await pgqueue.publish(
        conn, topic, draft.payload, headers=draft.headers, key=draft.key, idempotency_key=draft.pid
    )
    return message_id


def by_way(ledger: Ledger) -> dict[str, Any]:
    return dict(Counter(a.via for a in ledger.acked))
