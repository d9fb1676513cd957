"""Rows R2a and R2b: draining a backlog, claim + ack in batches, 1 subscriber, 4 consumers.

    R2a  drain the backlog with pgqueue      baseline: pgqueuer, same PostgreSQL      goal >= 1.0
    R2b  the same drain                      baseline: Redis Streams, fsync always    goal >= 0.5

Every system gets the same job: MESSAGES messages (default 100k) of the R1 payload wait in
the queue; CONSUMERS asyncio tasks in this process each loop "claim up to BATCH, ack them"
until a claim comes back empty. The backlog is built first and is not timed; the clock runs
from just before the consumers start (their first claim) until the last of them has returned
(its last ack). The figure is messages/s = MESSAGES / that time. Each drain is checked
afterwards (every message acked exactly once, nothing in flight): a drain that lost or
repeated messages raises rather than reporting a figure.

pgqueue is measured in two shapes, each against both baselines:

    pgqueue-plain      claim(topic, sub, BATCH), then ack(topic, sub, msgs): two commits
    pgqueue-piggyback  claim(topic, sub, BATCH, ack=previous batch): one commit per batch;
                       the final, empty claim acks the last batch

What exactly is timed for each baseline:

pgqueuer (PyPI, its schema installed into the same bench database with Queries.install(),
  durability "durable": every table LOGGED, which the run checks). Each consumer has its own
  asyncpg connection wrapped in pgqueuer's AsyncpgDriver (the shape of one pgqueuer worker;
  no pool, so no pool reset round trip) and its own queue manager id, and loops:
      jobs = await Queries.dequeue(batch_size=BATCH, entrypoints={"drain":
                 EntrypointExecutionParameter(concurrency_limit=0)}, queue_manager_id=<uuid4>,
                 global_concurrency_limit=None, heartbeat_timeout=30 s)
      await Queries.log_jobs([(job, "successful", None) for job in jobs])
  These are the two statements QueueManager itself issues (fetch_jobs, and the
  JobStatusLogBuffer flush that marks jobs done), without its event loop: no poll sleeps,
  buffering timers, heartbeats or per-job dispatch. The backlog is Queries.enqueue with lists
  (1000 jobs a call), not timed.

Redis Streams (redis-py asyncio, one client whose pool gives each consumer a connection),
  with appendonly yes and appendfsync always (set with CONFIG SET for the run and restored
  afterwards; if that fails, R2b is skipped rather than measured without durability). Each
  consumer loops:
      XREADGROUP GROUP g c<i> COUNT BATCH STREAMS <key> >
      XACK <key> g <the ids it got>
  The backlog is XADD in pipelines of 1000, not timed; the stream is deleted afterwards.

Before every timed drain, Redis's too (not timed): VACUUM ANALYZE of the bench database, so
earlier phases' dead rows and stale statistics do not land on whoever runs next (and
autovacuum has nothing left to do during a drain), and a CHECKPOINT when the role may run
one, so every drain starts with the same full-page-write state and no flush in progress.
The phases of a repetition run in the order of PHASES, reversed in every other repetition,
so that drift on a shared machine lands on both sides of a ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from pgqueuer import AsyncpgDriver, Queries
from pgqueuer.domain.types import QueueEntrypoint, QueueManagerId
from pgqueuer.ports.repository import EntrypointExecutionParameter
from redis.exceptions import RedisError
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import pgqueue
from bench import common
from bench.r1_publish import PAYLOAD, PAYLOAD_JSON

CONSUMERS = 4
BATCH = 100
PUBLISH_CHUNK = 1000  # messages per backlog-building call (not timed)
POOL_MAX_SIZE = 8
SUBSCRIBER = "workers"
ENTRYPOINT = "drain"
HEARTBEAT_TIMEOUT = timedelta(seconds=30)  # QueueManager.run's default

REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_KEY = "pgqueue-bench:r2:drain"
REDIS_GROUP = "workers"
REDIS_DURABLE = {"appendonly": "yes", "appendfsync": "always"}
REDIS_AOF_TIMEOUT = 60.0  # for the rewrite that enabling appendonly starts

PHASES = ("pgqueuer", "pgqueue-plain", "pgqueue-piggyback", "redis")
PHASE_LABELS = {
    "pgqueuer": "pgqueuer dequeue + log_jobs",
    "pgqueue-plain": "pgqueue claim, then ack",
    "pgqueue-piggyback": "pgqueue claim(ack=previous)",
    "redis": "Redis XREADGROUP + XACK",
}


@dataclass(frozen=True)
class Row:
    id: str
    what: str
    measured: str  # key of the pgqueue figure in a repetition
    baseline: str  # key of the baseline figure in the same repetition
    goal: float


BASELINES = {
    "pgqueuer": f"pgqueuer {metadata.version('pgqueuer')}: Queries.dequeue(batch_size={BATCH}) "
    "+ Queries.log_jobs(successful), same PostgreSQL",
    "redis": f"Redis Streams XREADGROUP COUNT {BATCH} + XACK, appendonly yes, appendfsync "
    f"always, redis-py {metadata.version('redis')} asyncio",
}

# What the clock covers, per phase (also in the JSON, so a figure carries its definition).
TIMED = {
    "pgqueue-plain": f"{CONSUMERS} tasks, one Queue (asyncpg pool max {POOL_MAX_SIZE}), each "
    f"looping Queue.claim(topic, sub, {BATCH}) then Queue.ack(topic, sub, msgs) until a claim "
    "is empty",
    "pgqueue-piggyback": f"{CONSUMERS} tasks, one Queue, each looping "
    f"Queue.claim(topic, sub, {BATCH}, ack=previous batch) until a claim is empty (that claim "
    "acks the last batch)",
    "pgqueuer": f"{CONSUMERS} tasks, each with its own asyncpg connection + AsyncpgDriver + "
    f"queue manager id, looping Queries.dequeue(batch_size={BATCH}, one entrypoint, no "
    "concurrency limits, heartbeat_timeout 30 s) then Queries.log_jobs(successful) until "
    "dequeue is empty",
    "redis": f"{CONSUMERS} tasks sharing one redis.asyncio client, each looping XREADGROUP "
    f"COUNT {BATCH} '>' then XACK of the ids until XREADGROUP is empty",
}

ROWS = (
    Row("r2a", f"drain: claim {BATCH}, then ack", "pgqueue-plain", "pgqueuer", 1.0),
    Row(
        "r2a-piggyback",
        f"drain: claim {BATCH} acking the previous batch",
        "pgqueue-piggyback",
        "pgqueuer",
        1.0,
    ),
    Row("r2b", f"drain: claim {BATCH}, then ack", "pgqueue-plain", "redis", 0.5),
    Row(
        "r2b-piggyback",
        f"drain: claim {BATCH} acking the previous batch",
        "pgqueue-piggyback",
        "redis",
        0.5,
    ),
)


Prepare = Callable[[], Awaitable[None]]  # the untimed step between backlog and drain


class Counter:
    """Messages acked so far in the running phase (read by the progress bar only)."""

    def __init__(self) -> None:
        self.value = 0


async def _timed_drain(consumers: list[Awaitable[int]], expected: int) -> float:
    """Runs the consumers concurrently; returns messages/s over first claim → last ack."""
    began = time.perf_counter()
    counts = await asyncio.gather(*consumers)
    elapsed = time.perf_counter() - began
    if sum(counts) != expected:
        raise RuntimeError(f"the consumers acked {sum(counts)} messages, expected {expected}")
    return expected / elapsed


async def prepare_drain(dsn: str) -> bool:
    """VACUUM ANALYZE, then CHECKPOINT if allowed (not timed); returns whether it could
    checkpoint."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
        try:
            await conn.execute("CHECKPOINT")
        except asyncpg.InsufficientPrivilegeError:
            return False
        return True
    finally:
        await conn.close()


# -- pgqueue --------------------------------------------------------------------------------


async def _pgqueue_plain(q: pgqueue.Queue, topic: str, counter: Counter) -> int:
    acked = 0
    while True:
        messages = await q.claim(topic, SUBSCRIBER, BATCH)
        if not messages:
            return acked
        done = await q.ack(topic, SUBSCRIBER, messages)
        acked += len(done)
        counter.value += len(done)


async def _pgqueue_piggyback(q: pgqueue.Queue, topic: str, counter: Counter) -> int:
    previous: list[pgqueue.Message] = []
    acked = 0
    while True:
        # The claim that finds nothing left still acks the last batch.
        messages = await q.claim(topic, SUBSCRIBER, BATCH, ack=previous)
        acked += len(previous)
        counter.value += len(previous)
        if not messages:
            return acked
        previous = messages


async def measure_pgqueue(
    dsn: str, *, topic: str, piggyback: bool, messages: int, counter: Counter, prepare: Prepare
) -> float:
    settings = pgqueue.Settings(pool_min_size=CONSUMERS, pool_max_size=POOL_MAX_SIZE)
    async with pgqueue.connect(dsn, settings=settings) as q:
        await q.create_topic(topic)
        await q.subscribe(topic, SUBSCRIBER, start="earliest")
        for start in range(0, messages, PUBLISH_CHUNK):
            await q.publish_many(topic, [PAYLOAD] * min(PUBLISH_CHUNK, messages - start))
        await prepare()
        consumer = _pgqueue_piggyback if piggyback else _pgqueue_plain
        rate = await _timed_drain([consumer(q, topic, counter) for _ in range(CONSUMERS)], messages)
        [stats] = await q.subscriber_stats(topic, SUBSCRIBER)
        if (stats.lag, stats.in_flight, stats.retrying, stats.dead) != (0, 0, 0, 0) or (
            stats.position != messages
        ):
            raise RuntimeError(f"pgqueue drain incomplete: {stats}")
        await q.delete_topic(topic)
    return rate


# -- pgqueuer -------------------------------------------------------------------------------


async def install_pgqueuer(dsn: str) -> None:
    """pgqueuer's schema into the bench database; refuses UNLOGGED tables."""
    conn = await asyncpg.connect(dsn)
    try:
        await Queries(AsyncpgDriver(conn)).install()
        unlogged = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relname LIKE 'pgqueuer%' "
            "AND relkind IN ('r', 'p') AND relpersistence <> 'p'"
        )
    finally:
        await conn.close()
    if unlogged:
        names = ", ".join(row["relname"] for row in unlogged)
        raise SystemExit(f"refusing to benchmark pgqueuer with unlogged tables: {names}")


async def _pgqueuer_consumer(queries: Queries, counter: Counter) -> int:
    entrypoints = {QueueEntrypoint(ENTRYPOINT): EntrypointExecutionParameter(concurrency_limit=0)}
    manager = QueueManagerId(uuid.uuid4())
    acked = 0
    while True:
        jobs = await queries.dequeue(
            batch_size=BATCH,
            entrypoints=entrypoints,
            queue_manager_id=manager,
            global_concurrency_limit=None,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
        )
        if not jobs:
            return acked
        await queries.log_jobs([(job, "successful", None) for job in jobs])
        acked += len(jobs)
        counter.value += len(jobs)


async def measure_pgqueuer(dsn: str, *, messages: int, counter: Counter, prepare: Prepare) -> float:
    connections = [await asyncpg.connect(dsn) for _ in range(CONSUMERS)]
    try:
        queries = [Queries(AsyncpgDriver(conn)) for conn in connections]
        admin = queries[0]
        # A clean slate: the previous repetition's log rows (the queue itself is empty).
        await admin.clear_queue()
        await admin.clear_queue_log()
        await admin.clear_statistics_log()
        payload = PAYLOAD_JSON.encode()
        for start in range(0, messages, PUBLISH_CHUNK):
            n = min(PUBLISH_CHUNK, messages - start)
            await admin.enqueue([ENTRYPOINT] * n, [payload] * n, [0] * n)
        await prepare()
        rate = await _timed_drain([_pgqueuer_consumer(q, counter) for q in queries], messages)
        left = await connections[0].fetchval("SELECT count(*) FROM pgqueuer")
        done = await connections[0].fetchval(
            "SELECT count(DISTINCT job_id) FROM pgqueuer_log WHERE status = 'successful'"
        )
        if left != 0 or done != messages:
            raise RuntimeError(f"pgqueuer drain incomplete: {left} left, {done} successful")
    finally:
        for conn in connections:
            await conn.close()
    return rate


# -- Redis ----------------------------------------------------------------------------------


async def _redis_config(client: aioredis.Redis, *names: str) -> dict[str, str]:
    """CONFIG GET, as text whether or not the client decodes responses."""
    found: dict[str, str] = {}
    for name in names:
        reply: dict[Any, Any] = await client.config_get(name)
        for key, value in reply.items():
            found[_text(key)] = _text(value)
    return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _redis_persistence(client: aioredis.Redis) -> dict[str, str]:
    info: dict[str, Any] = await client.info("persistence")
    return {_text(key): _text(value) for key, value in info.items()}


@contextlib.asynccontextmanager
async def durable_redis(client: aioredis.Redis, console: Console) -> AsyncIterator[dict[str, str]]:
    """appendonly yes + appendfsync always for the duration; yields the settings in force.

    fsync first, so the AOF is never on with a weaker policy; then waits for the rewrite that
    turning appendonly on starts. Restores the previous values (appendonly first) on exit.
    Raises RedisError or RuntimeError when durability cannot be had.
    """
    previous = await _redis_config(client, "appendonly", "appendfsync")
    try:
        await client.config_set("appendfsync", "always")
        await client.config_set("appendonly", "yes")
        deadline = time.monotonic() + REDIS_AOF_TIMEOUT
        while True:
            info = await _redis_persistence(client)
            if info.get("aof_last_bgrewrite_status") not in (None, "ok"):
                raise RuntimeError(f"Redis AOF rewrite failed: {info}")
            if info.get("aof_enabled") == "1" and (
                info.get("aof_rewrite_in_progress"),
                info.get("aof_rewrite_scheduled"),
            ) == ("0", "0"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis AOF not ready after {REDIS_AOF_TIMEOUT} s: {info}")
            await asyncio.sleep(0.1)
        now = await _redis_config(client, "appendonly", "appendfsync")
        if now != REDIS_DURABLE:
            raise RuntimeError(f"Redis did not take the durable settings: {now}")
        yield now
    finally:
        try:
            await client.config_set("appendonly", previous["appendonly"])
            await client.config_set("appendfsync", previous["appendfsync"])
        except (RedisError, KeyError) as error:
            console.print(
                f"[red]could not restore Redis settings {previous}: {error!r}; run CONFIG SET "
                "appendonly/appendfsync by hand[/]"
            )


async def _check_durable(client: aioredis.Redis) -> None:
    """Another run on the same Redis (R3 also switches durability on and back) may have
    restored its own previous settings under this one: such a drain must not count."""
    now = await _redis_config(client, "appendonly", "appendfsync")
    if now != REDIS_DURABLE:
        raise RuntimeError(f"Redis durability changed during the run (by another client?): {now}")


async def _redis_consumer(client: aioredis.Redis, name: str, counter: Counter) -> int:
    acked = 0
    while True:
        reply: Any = await client.xreadgroup(REDIS_GROUP, name, {REDIS_KEY: ">"}, count=BATCH)
        entries = reply[0][1] if reply else []
        if not entries:
            return acked
        done: int = await client.xack(REDIS_KEY, REDIS_GROUP, *(e[0] for e in entries))
        acked += done
        counter.value += done


async def measure_redis(
    client: aioredis.Redis, *, messages: int, counter: Counter, prepare: Prepare
) -> float:
    await client.delete(REDIS_KEY)
    try:
        fields = {"payload": PAYLOAD_JSON}
        for start in range(0, messages, PUBLISH_CHUNK):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(PUBLISH_CHUNK, messages - start)):
                pipe.xadd(REDIS_KEY, fields)  # type: ignore[arg-type]
            await pipe.execute()
        await client.xgroup_create(REDIS_KEY, REDIS_GROUP, id="0")
        await prepare()  # PostgreSQL quiet during this drain too
        await _check_durable(client)
        rate = await _timed_drain(
            [_redis_consumer(client, f"c{i}", counter) for i in range(CONSUMERS)], messages
        )
        await _check_durable(client)
        pending: dict[str, Any] = await client.xpending(REDIS_KEY, REDIS_GROUP)
        if pending["pending"] != 0:
            raise RuntimeError(f"Redis drain incomplete: {pending['pending']} pending")
    finally:
        await client.delete(REDIS_KEY)
    return rate


# -- the run --------------------------------------------------------------------------------


async def run(
    maintenance_dsn: str,
    *,
    messages: int,
    repeat: int,
    keep_db: bool,
    redis_url: str,
    console: Console,
    database: str = common.BENCH_DATABASE,
) -> dict[str, Any]:
    """Measures every phase `repeat` times; returns the results (also what goes to JSON)."""
    machine = common.machine_info()
    console.print(f"creating and migrating database {database} …")
    dsn = await common.create_bench_database(maintenance_dsn, database)
    redis_info: dict[str, Any] = {"url": redis_url}
    checkpoints: list[bool] = []
    try:
        settings = await common.server_settings(dsn)
        problems = common.durability_problems(settings)
        if problems:
            raise SystemExit(
                "refusing to benchmark with lowered durability: " + "; ".join(problems)
            )
        await install_pgqueuer(dsn)
        async with contextlib.AsyncExitStack() as stack:
            client = aioredis.Redis.from_url(redis_url, max_connections=POOL_MAX_SIZE)
            stack.push_async_callback(client.aclose)
            durable: aioredis.Redis | None = None
            try:
                server: dict[str, Any] = await client.info("server")
                redis_info["version"] = server.get("redis_version")
                redis_info["durable"] = await stack.enter_async_context(
                    durable_redis(client, console)
                )
                durable = client
            except (RedisError, OSError, RuntimeError) as error:
                redis_info["skipped"] = (
                    f"no Redis with appendonly yes + appendfsync always: {error}"
                )
                console.print(f"[red]R2b skipped: {redis_info['skipped']}[/]")
            repetitions = await _repetitions(
                dsn,
                durable,
                messages=messages,
                repeat=repeat,
                checkpoints=checkpoints,
                console=console,
            )
    finally:
        if not keep_db:
            await common.drop_bench_database(maintenance_dsn, database)

    return {
        "benchmark": "r2",
        "config": {
            "messages": messages,
            "repeat": repeat,
            "consumers": CONSUMERS,
            "batch": BATCH,
            "publish_chunk": PUBLISH_CHUNK,
            "pgqueue_pool_max_size": POOL_MAX_SIZE,
            "phase_order": [*PHASES, "(reversed in even repetitions)"],
        },
        # The plan's figure: a 100k backlog, at least 3 repetitions.
        "reportable": repeat >= 3 and messages >= 100_000,
        "settings": settings,
        "checkpoint_before_drain": all(checkpoints) if checkpoints else None,
        "machine": machine,
        "versions": {
            "pgqueuer": metadata.version("pgqueuer"),
            "redis-py": metadata.version("redis"),
            "hiredis": _version_or_none("hiredis"),
        },
        "redis": redis_info,
        "baselines": BASELINES,
        "timed": TIMED,
        "payload": PAYLOAD_JSON,
        "payload_bytes": len(PAYLOAD_JSON.encode()),
        "repetitions": repetitions,
        "rows": [_summarize_row(row, repetitions, redis_info) for row in ROWS],
    }


def _version_or_none(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


async def _phase(
    key: str,
    dsn: str,
    client: aioredis.Redis | None,
    *,
    rep: int,
    messages: int,
    counter: Counter,
    prepare: Prepare,
) -> float:
    if key == "pgqueuer":
        return await measure_pgqueuer(dsn, messages=messages, counter=counter, prepare=prepare)
    if key in ("pgqueue-plain", "pgqueue-piggyback"):
        piggyback = key == "pgqueue-piggyback"
        return await measure_pgqueue(
            dsn,
            topic=f"drain-{rep}-{'piggyback' if piggyback else 'plain'}",
            piggyback=piggyback,
            messages=messages,
            counter=counter,
            prepare=prepare,
        )
    if key == "redis" and client is not None:
        return await measure_redis(client, messages=messages, counter=counter, prepare=prepare)
    raise ValueError(f"no phase {key!r}")


async def _repetitions(
    dsn: str,
    client: aioredis.Redis | None,
    *,
    messages: int,
    repeat: int,
    checkpoints: list[bool],
    console: Console,
) -> list[dict[str, float]]:
    phases = [p for p in PHASES if p != "redis" or client is not None]
    repetitions: list[dict[str, float]] = []

    async def prepare() -> None:
        checkpoints.append(await prepare_drain(dsn))

    # Few refreshes: the consumers share the GIL with rich's refresh thread.
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        refresh_per_second=2,
    ) as progress:
        overall = progress.add_task("all phases", total=repeat * len(phases))
        bar = progress.add_task("", total=messages)

        async def follow(counter: Counter) -> None:
            while True:
                progress.update(bar, completed=counter.value)
                await asyncio.sleep(0.5)

        for rep in range(1, repeat + 1):
            figures: dict[str, float] = {}
            for key in phases if rep % 2 else phases[::-1]:
                label = f"rep {rep}/{repeat}: {PHASE_LABELS[key]}"
                progress.reset(bar, total=messages, description=label)
                counter = Counter()
                ticker = asyncio.create_task(follow(counter))
                try:
                    figures[key] = await _phase(
                        key,
                        dsn,
                        client,
                        rep=rep,
                        messages=messages,
                        counter=counter,
                        prepare=prepare,
                    )
                finally:
                    ticker.cancel()
                progress.update(bar, completed=counter.value)
                progress.advance(overall)
            repetitions.append(figures)
    return repetitions


def _summarize_row(
    row: Row, repetitions: list[dict[str, float]], redis_info: dict[str, Any]
) -> dict[str, Any]:
    head = {
        "id": row.id,
        "what": row.what,
        "unit": "msg/s",
        "baseline_name": row.baseline,
        "goal": row.goal,
    }
    if any(row.baseline not in rep for rep in repetitions):
        return head | {"skipped": redis_info.get("skipped", "not measured")}
    measured = [rep[row.measured] for rep in repetitions]
    baseline = [rep[row.baseline] for rep in repetitions]
    # The ratio of each repetition, not the ratio of medians: pairs measured side by side.
    ratios = [m / b for m, b in zip(measured, baseline, strict=True)]
    ratio = common.summarize(ratios)
    return head | {
        "pgqueue": common.summarize(measured),
        "baseline": common.summarize(baseline),
        "ratio": ratio,
        "met": ratio.median >= row.goal,
    }


def render(results: dict[str, Any], console: Console) -> None:
    config = results["config"]
    table = Table(
        title=f"R2: drain {config['messages']:,} messages, {config['consumers']} consumers, "
        f"batch {config['batch']}, median of repetitions",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("row", no_wrap=True)
    for column in ("pgqueue msg/s", "baseline msg/s", "ratio", "min–max", "goal", "met"):
        table.add_column(column, justify="right")
    for row in results["rows"]:
        if "skipped" in row:
            table.add_row(row["id"], "", "", "", "", f"≥ {row['goal']}", "skipped")
            continue
        ratio: common.Summary = row["ratio"]
        table.add_row(
            row["id"],
            f"{row['pgqueue'].median:,.0f}",
            f"{row['baseline'].median:,.0f}",
            f"{ratio.median:.2f}",
            f"{ratio.min:.2f}–{ratio.max:.2f}",
            f"≥ {row['goal']}",
            "[green]yes[/]" if row["met"] else "[red]no[/]",
        )
    console.print(table)
    for row in ROWS:
        console.print(f"  {row.id}: {row.what}; baseline {row.baseline}")
    for name, text in BASELINES.items():
        console.print(f"  {name}: {text}")
    console.print(f"server: {common.settings_line(results['settings'])}")
    redis_info = results["redis"]
    if "skipped" in redis_info:
        console.print(f"[red]redis: {redis_info['skipped']}[/]")
    else:
        durable = redis_info["durable"]
        console.print(
            f"redis: {redis_info.get('version')} at {redis_info['url']}, appendonly="
            f"{durable['appendonly']}, appendfsync={durable['appendfsync']} (previous values "
            f"restored); hiredis {results['versions']['hiredis'] or 'not installed'}"
        )
    console.print(
        f"payload {results['payload_bytes']} bytes; {config['repeat']} repetition(s); "
        f"checkpoint before each drain: {results['checkpoint_before_drain']}; "
        f"load average at start {results['machine']['loadavg_at_start'][0]:.2f}"
    )
    if not results["reportable"]:
        console.print(
            "[yellow]fewer than 3 repetitions or a backlog under 100k: a smoke run, not a "
            "reportable figure[/]"
        )


def main(
    maintenance_dsn: str,
    *,
    messages: int,
    repeat: int,
    keep_db: bool,
    redis_url: str = REDIS_URL,
    output: Path | None = None,
    database: str = common.BENCH_DATABASE,
) -> None:
    common.run_and_save(
        "r2",
        lambda console: run(
            maintenance_dsn,
            messages=messages,
            repeat=repeat,
            keep_db=keep_db,
            redis_url=redis_url,
            database=database,
            console=console,
        ),
        render,
        output,
    )
