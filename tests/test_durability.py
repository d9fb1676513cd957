"""Promise 1, Durable (SPEC §2): a publish that returned success survives a power loss.

Each test has a PostgreSQL of its own (tests/private_server.py) whose background processes
flush no WAL (the WAL writer at most once per 10 s), so only the flushes a commit waits for
make data durable.
Publishers run concurrently; a power loss (SIGKILL to every server process at once) comes
right after the round's answers arrived, while the others are still publishing; after the
restart the log must hold every acknowledged message at its offset, once, densely numbered.
The WAL accounting tests count the flushes instead (SPEC: prove it, never by reading code).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

import pgqueue
from pgqueue import migrate
from pgqueue.settings import Settings
from tests.private_server import PrivateServer, copy_cluster, create_cluster
from tests.services.conftest import serving
from tests.support import with_database, within

TOPIC = "orders"
SUBSCRIBER = "audit"
ROUNDS = 4  # power losses per crash test
ANSWERS_PER_ROUND = 150  # acknowledged publishes (or commits) before each power loss
PUBLISHERS = 4

Payload = dict[str, str]


@pytest.fixture(scope="module")
def migrated_cluster() -> Iterator[Path]:
    """A stopped data directory whose database `queue` is migrated and holds TOPIC with the
    subscriber SUBSCRIBER; each test runs on a copy (initdb once, not per test)."""
    with tempfile.TemporaryDirectory(prefix="pgqueue-durable-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        create_cluster(pgdata)
        server = PrivateServer(pgdata)
        try:
            asyncio.run(_prepare(server))
        finally:
            server.stop()  # a checkpoint: recoveries replay the tests' WAL only
        yield pgdata


async def _prepare(server: PrivateServer) -> None:
    admin = await within(asyncpg.connect(server.dsn))
    try:
        await within(admin.execute("CREATE DATABASE queue"))
    finally:
        await within(admin.close())
    dsn = with_database(server.dsn, "queue")
    await asyncio.to_thread(migrate.upgrade, dsn)  # alembic runs its own event loop
    async with pgqueue.connect(dsn) as queue:
        await within(queue.create_topic(TOPIC))
        await within(queue.subscribe(TOPIC, SUBSCRIBER, start="earliest"))


@pytest.fixture
async def private_server(migrated_cluster: Path) -> AsyncIterator[PrivateServer]:
    """A PostgreSQL of this test's own, on a copy of migrated_cluster, which it may crash."""
    with tempfile.TemporaryDirectory(prefix="pgqueue-durable-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        await asyncio.to_thread(copy_cluster, migrated_cluster, pgdata)
        server = await asyncio.to_thread(PrivateServer, pgdata)
        try:
            yield server
        finally:
            await asyncio.to_thread(server.discard)


@pytest.fixture
def dsn(private_server: PrivateServer) -> str:
    """The private server's `queue` database."""
    return with_database(private_server.dsn, "queue")


@dataclass
class Ledger:
    """What clients were told before the power losses, to hold the restarted log against."""

    acknowledged: dict[str, int] = field(default_factory=dict)  # payload id -> offset answered
    committed: dict[str, int] = field(default_factory=dict)  # payload id -> message id
    claimed: dict[int, Any] = field(default_factory=dict)  # offset -> payload handed out
    crashes: int = 0
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def payload(self) -> Payload:
        return {"id": f"m{next(self._ids)}"}

    @property
    def answers(self) -> int:
        return len(self.acknowledged) + len(self.committed)


class Round:
    """Publishers (and a consumer) that run until a power loss, which comes as soon as
    ANSWERS_PER_ROUND more publishes were answered."""

    def __init__(self, ledger: Ledger, server: PrivateServer) -> None:
        self.ledger = ledger
        self.server = server
        self.crashed = False
        self._target = ledger.answers + ANSWERS_PER_ROUND
        self._enough = asyncio.Event()
        self.half_way = asyncio.Event()

    def _answered(self) -> None:
        if self.ledger.answers >= self._target - ANSWERS_PER_ROUND // 2:
            self.half_way.set()
        if self.ledger.answers >= self._target:
            self._enough.set()

    def acknowledge(self, payloads: list[Payload], offsets: list[int]) -> None:
        for payload, offset in zip(payloads, offsets, strict=True):
            self.ledger.acknowledged[payload["id"]] = offset
        self._answered()

    def commit(self, payload: Payload, message_id: int) -> None:
        self.ledger.committed[payload["id"]] = message_id
        self._answered()

    async def keep_publishing(
        self, publish: Callable[[list[Payload]], Awaitable[list[int]]], batch: int = 1
    ) -> None:
        """Publishes batches until the server is gone; records each answer as it arrives."""
        while True:
            payloads = [self.ledger.payload() for _ in range(batch)]
            try:
                offsets = await within(publish(payloads))
            except Exception:
                if self.crashed:
                    return  # in flight at the power loss: not acknowledged, may be either way
                raise
            self.acknowledge(payloads, offsets)

    async def keep_committing(self, conn: asyncpg.Connection) -> None:
        """Publishes inside its own transactions until the server is gone; a publish is
        answered when its COMMIT returns (with a message id: offsets come later)."""

        async def publish_in_transaction(payload: Payload) -> int:
            async with conn.transaction():
                return await pgqueue.publish(conn, TOPIC, payload)

        while True:
            payload = self.ledger.payload()
            try:
                message_id = await within(publish_in_transaction(payload))
            except Exception:
                if self.crashed:
                    return
                raise
            self.commit(payload, message_id)

    async def keep_consuming(self, queue: pgqueue.Queue) -> None:
        """Claims and acks until it has claimed something and half the round's answers are
        in. It stops there because a claim commits synchronously, which flushes everyone's
        WAL: the second half of the round depends on the publishes' own flushes alone."""
        messages: list[pgqueue.Message] = []
        claimed = 0
        while not (claimed and self.half_way.is_set()):
            try:
                messages = await within(queue.claim(TOPIC, SUBSCRIBER, 20, ack=messages))
            except Exception:
                if self.crashed:
                    return
                raise
            for message in messages:
                self.ledger.claimed[message.offset] = message.payload
            claimed += len(messages)
            if not messages:
                await asyncio.sleep(0.01)  # a poll interval, not a wait for some event

    async def run(self, workers: list[Coroutine[Any, Any, None]]) -> None:
        """Runs the workers, cuts the power once enough answers are in, collects them."""
        tasks = [asyncio.create_task(worker) for worker in workers]
        enough = asyncio.create_task(self._enough.wait())
        try:
            pending: set[asyncio.Task[Any]] = {enough, *tasks}
            while not enough.done():
                done, pending = await within(
                    asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED), 30
                )
                for task in done - {enough}:
                    task.result()  # a worker's error before the power loss fails the test
            self.server.power_loss()
            self.crashed = True
            self.ledger.crashes += 1
            await within(asyncio.gather(*tasks), 30)
        finally:
            enough.cancel()
            for task in tasks:
                task.cancel()


async def check_log(dsn: str, ledger: Ledger) -> None:
    """Holds the restarted log against the ledger (every assertion names what broke)."""
    async with pgqueue.connect(dsn) as queue:
        if ledger.committed:
            await within(queue.assign(TOPIC))  # in-transaction publishes get their offsets
        log: dict[int, Any] = {}  # offset -> payload
        while batch := await within(
            queue.read(TOPIC, from_offset=max(log, default=0) + 1, limit=10_000)
        ):
            log.update((m.offset, m.payload) for m in batch)
        committed_offsets = (
            await within(queue.message_offsets(TOPIC, list(ledger.committed.values())))
            if ledger.committed
            else []
        )
        subscribers = await within(queue.list_subscribers(TOPIC))
        last_offset = max(log, default=0)

    after = f"after {ledger.crashes} power losses"
    assert sorted(log) == list(range(1, last_offset + 1)), f"offsets are not dense {after}"
    twice = [p for p, n in Counter(json.dumps(p) for p in log.values()).items() if n > 1]
    assert not twice, f"{len(twice)} payloads stored at two offsets {after}: {twice[:5]}"

    lost = {p: o for p, o in ledger.acknowledged.items() if o not in log}
    assert not lost, (
        f"{len(lost)} of {len(ledger.acknowledged)} acknowledged publishes lost {after} "
        f"(log ends at {last_offset}): {sorted(lost.items(), key=lambda x: x[1])[:10]}"
    )
    reused = {o: log[o] for p, o in ledger.acknowledged.items() if log[o] != {"id": p}}
    assert not reused, f"{len(reused)} acknowledged offsets hold another payload {after}: {reused}"

    in_log = {p["id"]: o for o, p in log.items()}
    uncommitted = [p for p in ledger.committed if p not in in_log]
    assert not uncommitted, (
        f"{len(uncommitted)} of {len(ledger.committed)} committed in-transaction publishes "
        f"lost {after}: {uncommitted[:10]}"
    )
    by_id = dict(zip(ledger.committed.values(), committed_offsets, strict=True))
    wrong = {p: (by_id[m], in_log[p]) for p, m in ledger.committed.items() if by_id[m] != in_log[p]}
    assert not wrong, f"message_offsets disagrees with the log {after}: {wrong}"

    moved = {o: (p, log.get(o)) for o, p in ledger.claimed.items() if log.get(o) != p}
    assert not moved, f"{len(moved)} claimed offsets now hold another message {after}: {moved}"
    beyond = [(s.name, s.position) for s in subscribers if s.position > last_offset]
    assert not beyond, f"subscribers past the log end {last_offset} {after}: {beyond}"


async def crash_rounds(
    server: PrivateServer,
    dsn: str,
    workers: Callable[[Round, AsyncExitStack], Awaitable[list[Coroutine[Any, Any, None]]]],
) -> Ledger:
    """ROUNDS times: fresh clients, publishing, power loss, restart, check."""
    ledger = Ledger()
    for _ in range(ROUNDS):
        round_ = Round(ledger, server)
        async with AsyncExitStack() as clients:
            await round_.run(await workers(round_, clients))
        await asyncio.to_thread(server.start)
        await check_log(dsn, ledger)
    return ledger


def library_publishers(
    round_: Round, queue: pgqueue.Queue, singles: int = PUBLISHERS, batches: int = 2
) -> list[Coroutine[Any, Any, None]]:
    async def publish(payloads: list[Payload]) -> list[int]:
        return [await queue.publish(TOPIC, payloads[0])]

    async def publish_many(payloads: list[Payload]) -> list[int]:
        return await queue.publish_many(TOPIC, payloads)

    return [
        *(round_.keep_publishing(publish) for _ in range(singles)),
        *(round_.keep_publishing(publish_many, batch=5) for _ in range(batches)),
    ]


def assert_rounds(ledger: Ledger) -> None:
    assert ledger.crashes == ROUNDS
    assert ledger.answers >= ROUNDS * ANSWERS_PER_ROUND
    assert ledger.claimed, "the consumer claimed nothing"


@pytest.mark.timeout(90)
async def test_library_publishes_survive_power_loss(
    private_server: PrivateServer, dsn: str
) -> None:
    """Queue.publish (batched by the library when concurrent) and Queue.publish_many."""

    async def workers(round_: Round, clients: AsyncExitStack) -> list[Coroutine[Any, Any, None]]:
        queue = await clients.enter_async_context(pgqueue.connect(dsn))
        return [*library_publishers(round_, queue), round_.keep_consuming(queue)]

    assert_rounds(await crash_rounds(private_server, dsn, workers))


@pytest.mark.timeout(90)
async def test_rest_publishes_survive_power_loss(private_server: PrivateServer, dsn: str) -> None:
    """POST /topics/{t}/messages and /batch on a real uvicorn server: a 201 is a promise."""

    async def workers(round_: Round, clients: AsyncExitStack) -> list[Coroutine[Any, Any, None]]:
        # A server per round: the point is what a 201 promised, not reconnecting.
        settings = Settings(database_url=SecretStr(dsn), retention_interval=0)
        server = clients.enter_context(serving(settings))
        http = await clients.enter_async_context(httpx.AsyncClient(base_url=server.url, timeout=10))
        queue = await clients.enter_async_context(pgqueue.connect(dsn))

        async def post(payloads: list[Payload]) -> list[int]:
            response = await http.post(f"/topics/{TOPIC}/messages", json={"payload": payloads[0]})
            assert response.status_code == 201, response.text
            return [response.json()["offset"]]

        async def post_batch(payloads: list[Payload]) -> list[int]:
            body = {"messages": [{"payload": p} for p in payloads]}
            response = await http.post(f"/topics/{TOPIC}/messages/batch", json=body)
            assert response.status_code == 201, response.text
            offsets: list[int] = response.json()["offsets"]
            return offsets

        return [
            *(round_.keep_publishing(post) for _ in range(PUBLISHERS)),
            *(round_.keep_publishing(post_batch, batch=5) for _ in range(2)),
            round_.keep_consuming(queue),
        ]

    assert_rounds(await crash_rounds(private_server, dsn, workers))


@pytest.mark.timeout(90)
async def test_transactional_publishes_survive_power_loss(
    private_server: PrivateServer, dsn: str
) -> None:
    """pgqueue.publish inside the caller's transaction: once COMMIT returned, the message is
    in the log after a power loss, at the offset message_offsets reports. A direct publisher
    runs beside them, so assignment rounds also run in its asynchronous commits."""

    async def workers(round_: Round, clients: AsyncExitStack) -> list[Coroutine[Any, Any, None]]:
        queue = await clients.enter_async_context(pgqueue.connect(dsn))
        connections = [await within(asyncpg.connect(dsn)) for _ in range(PUBLISHERS)]
        for conn in connections:
            clients.callback(conn.terminate)
        return [
            *(round_.keep_committing(conn) for conn in connections),
            *library_publishers(round_, queue, singles=1, batches=0),
            round_.keep_consuming(queue),
        ]

    ledger = await crash_rounds(private_server, dsn, workers)
    assert_rounds(ledger)
    assert ledger.committed and ledger.acknowledged


@pytest.mark.timeout(90)
async def test_publish_and_commit_is_durable_with_synchronous_commit_off(
    private_server: PrivateServer, dsn: str
) -> None:
    """CALL pgqueue.publish_and_commit (and publish_batch_and_commit) from sessions whose own
    synchronous_commit is off: the procedures answer only after a flush all the same."""

    async def workers(round_: Round, clients: AsyncExitStack) -> list[Coroutine[Any, Any, None]]:
        queue = await clients.enter_async_context(pgqueue.connect(dsn))
        connections = [
            await within(asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"}))
            for _ in range(PUBLISHERS)
        ]
        for conn in connections:
            clients.callback(conn.terminate)
            assert await within(conn.fetchval("SHOW synchronous_commit")) == "off"

        def call(conn: asyncpg.Connection) -> Callable[[list[Payload]], Awaitable[list[int]]]:
            async def publish(payloads: list[Payload]) -> list[int]:
                offset: int = await conn.fetchval(
                    "CALL pgqueue.publish_and_commit($1::text, $2::jsonb)",
                    TOPIC,
                    json.dumps(payloads[0]),
                )
                return [offset]

            return publish

        async def call_batch(payloads: list[Payload]) -> list[int]:
            offsets: list[int] = await connections[0].fetchval(
                "CALL pgqueue.publish_batch_and_commit($1::text, $2::jsonb[])",
                TOPIC,
                [json.dumps(p) for p in payloads],
            )
            return offsets

        return [
            round_.keep_publishing(call_batch, batch=5),
            *(round_.keep_publishing(call(conn)) for conn in connections[1:]),
            round_.keep_consuming(queue),
        ]

    assert_rounds(await crash_rounds(private_server, dsn, workers))


# -- WAL accounting --------------------------------------------------------------------------

ACCOUNTED = 200  # sequential publishes per accounting test


async def wal_fsyncs(conn: asyncpg.Connection) -> int:
    """WAL fsyncs so far, server-wide, with this session's own counts flushed first."""
    await conn.execute("SELECT pg_stat_force_next_flush()")  # reported as the session idles
    version = await conn.fetchval("SELECT current_setting('server_version_num')::int")
    if version >= 180000:  # pg_stat_wal lost its I/O columns to pg_stat_io in 18
        count = await conn.fetchval(
            "SELECT sum(fsyncs)::bigint FROM pg_stat_io WHERE object = 'wal'"
        )
    else:
        count = await conn.fetchval("SELECT wal_sync FROM pg_stat_wal")
    return int(count)


async def unflushed_after(conn: asyncpg.Connection) -> bool:
    """Whether WAL inserted so far is not flushed yet. The insert position is read first, in
    the same statement, so a flush that covers it covers everything before this call."""
    row = await conn.fetchrow(
        "SELECT pg_current_wal_insert_lsn() AS inserted, pg_current_wal_flush_lsn() AS flushed"
    )
    return bool(row["flushed"] < row["inserted"])


@pytest.mark.timeout(60)
async def test_every_publish_and_commit_returns_after_a_flush(
    private_server: PrivateServer, dsn: str
) -> None:
    """ACCOUNTED sequential CALLs on one connection: each returns with its WAL flushed, and
    the server counts at least one WAL fsync per call."""
    conn = await within(asyncpg.connect(dsn))
    try:
        before = await within(wal_fsyncs(conn))
        unflushed = 0
        for i in range(ACCOUNTED):
            await within(
                conn.fetchval(
                    "CALL pgqueue.publish_and_commit($1::text, $2::jsonb)", TOPIC, json.dumps(i)
                )
            )
            unflushed += await within(unflushed_after(conn))
        fsyncs = await within(wal_fsyncs(conn)) - before
    finally:
        await conn.close()
    assert unflushed == 0 and fsyncs >= ACCOUNTED, (
        f"{unflushed} of {ACCOUNTED} publishes returned before a WAL flush; "
        f"{fsyncs} WAL fsyncs for {ACCOUNTED} publishes"
    )


@pytest.mark.timeout(60)
async def test_every_library_publish_returns_after_a_flush(
    private_server: PrivateServer, dsn: str
) -> None:
    """The same through Queue.publish, one at a time, on a pool of one connection (whose
    statistics wal_fsyncs can flush)."""
    settings = Settings(pool_min_size=1, pool_max_size=1)
    async with pgqueue.connect(dsn, settings=settings) as queue:
        observer = await within(asyncpg.connect(dsn))
        try:
            async with queue.pool.acquire() as publisher_conn:
                before = await within(wal_fsyncs(publisher_conn))
            unflushed = 0
            for i in range(ACCOUNTED):
                await within(queue.publish(TOPIC, i))
                unflushed += await within(unflushed_after(observer))
            async with queue.pool.acquire() as publisher_conn:
                fsyncs = await within(wal_fsyncs(publisher_conn)) - before
        finally:
            await observer.close()
    assert unflushed == 0 and fsyncs >= ACCOUNTED, (
        f"{unflushed} of {ACCOUNTED} publishes returned before a WAL flush; "
        f"{fsyncs} WAL fsyncs for {ACCOUNTED} publishes"
    )


async def test_power_loss_drops_unflushed_commits(private_server: PrivateServer, dsn: str) -> None:
    """The harness itself: commits not yet flushed are gone after power_loss, flushed ones
    stay."""
    conn = await within(asyncpg.connect(dsn))
    try:
        await within(conn.execute("CREATE TABLE probe (i integer)"))  # synchronous: flushed
        await within(conn.execute("INSERT INTO probe VALUES (0)"))
        await within(conn.execute("SET synchronous_commit = off"))
        inserted = 0
        # The WAL writer flushes everything every 10 s: a batch it happened to cover is
        # followed by another.
        for _ in range(3):
            for _ in range(100):
                inserted += 1
                await within(conn.execute("INSERT INTO probe VALUES ($1)", inserted))
            if await within(unflushed_after(conn)):
                break
        else:
            raise AssertionError("every asynchronous commit was flushed")
        private_server.power_loss()
    finally:
        conn.terminate()
    await asyncio.to_thread(private_server.start)
    conn = await within(asyncpg.connect(dsn))
    try:
        kept = await within(conn.fetchval("SELECT array_agg(i ORDER BY i) FROM probe"))
    finally:
        await within(conn.close())
    # What survives is what was flushed: a prefix, never the last commit.
    assert kept == list(range(len(kept))), kept
    assert len(kept) <= inserted, f"all {inserted} unflushed commits survived the power loss"


# -- readers ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_browsed_offset_is_never_given_to_another_message(
    private_server: PrivateServer, dsn: str
) -> None:
    """SPEC promise 1: no reader is shown a message whose commit is not yet flushed, and an
    offset once shown is never given to another message.

    The publisher's session has a slow disk: commit_delay (with commit_siblings 0) makes each
    of its flushes sleep 100 ms first, holding open the moment between publish_and_commit's
    COMMIT and its flush. The reader browses meanwhile; the moment it sees the message, the
    publisher's backend is frozen, so the moment lasts until the power loss."""
    publisher = await within(
        asyncpg.connect(dsn, server_settings={"commit_delay": "100000", "commit_siblings": "0"})
    )
    backend = await within(publisher.fetchval("SELECT pg_backend_pid()"))
    observer = await within(asyncpg.connect(dsn))
    shown: pgqueue.StoredMessage | None = None
    async with pgqueue.connect(dsn) as queue:
        for attempt in range(10):  # a reader too slow to see it in time tries again
            payload = {"id": f"browsed-{attempt}"}
            call = asyncio.create_task(
                publisher.fetchval(
                    "CALL pgqueue.publish_and_commit($1::text, $2::jsonb)",
                    TOPIC,
                    json.dumps(payload),
                )
            )
            while shown is None and not call.done():
                tail = await within(queue.read(TOPIC, from_offset=attempt + 1))
                shown = next((m for m in tail if m.payload == payload), None)
            if shown is not None:
                os.kill(backend, signal.SIGSTOP)
                if await within(unflushed_after(observer)):
                    break  # shown, and not on disk
                os.kill(backend, signal.SIGCONT)  # already flushed: too late, try again
                shown = None
            await within(call)
        else:
            return  # never shown before its flush: the promise holds
        private_server.power_loss()
    publisher.terminate()
    observer.terminate()
    with contextlib.suppress(asyncpg.PostgresConnectionError, ConnectionError):
        await within(call)

    await asyncio.to_thread(private_server.start)
    async with pgqueue.connect(dsn) as queue:
        await within(queue.publish(TOPIC, {"id": "next"}))
        now = {m.offset: m.payload for m in await within(queue.read(TOPIC))}
    assert now.get(shown.offset) == shown.payload, (
        f"offset {shown.offset} was shown holding {shown.payload}; "
        f"after the power loss it holds {now.get(shown.offset)}"
    )


async def test_wal_statistics_show_each_flush_while_the_queue_is_open(
    private_server: PrivateServer, dsn: str
) -> None:
    """An outside observer counting fsyncs in pg_stat_wal / pg_stat_io right after the
    publishes, while the publishing Queue is still connected, sees one per publish: the
    flushing transaction reports its statistics before it answers (an idle backend reports
    them up to 10 s later, which made 200 durable publishes look like 3 to 5 flushes)."""
    observer = await within(asyncpg.connect(dsn))
    try:
        async with pgqueue.connect(dsn) as queue:
            await within(queue.publish(TOPIC, "warm-up"))  # pool connections made
            before = await within(wal_fsyncs(observer))
            for i in range(ACCOUNTED):
                await within(queue.publish(TOPIC, i))
            fsyncs = await within(wal_fsyncs(observer)) - before
    finally:
        await observer.close()
    assert fsyncs >= ACCOUNTED, f"{fsyncs} WAL fsyncs seen for {ACCOUNTED} publishes"
