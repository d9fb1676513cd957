"""Row R7: sustained mixed load, every minute against the first.

    R7  publish open loop at 50 % of the max rate for 10 minutes, 3 subscribers on the topic,
        2 consumers each (claim + ack)
        baseline: its own first minute
        goals: delivered throughput last/first >= 0.95, p99 last/first <= 1.2x,
               PostgreSQL RSS growth last/first <= 10 %

1. The max publish rate is probed first, as R3 does it (R1a's shape: CLIENTS tasks, 1 message
   per call, closed loop, PROBE_SECONDS after PROBE_WARMUP, on a topic of its own).
2. SUBSCRIBERS subscribers are created at the topic's end; a consumer process (spawned, so
   neither the open-loop generator nor the publish calls, nor the GIL they hold, can delay a
   receive timestamp) runs CONSUMERS tasks per subscriber, each looping Queue.claim(BATCH),
   then Queue.ack of what it got, waiting for the topic's NOTIFY when a claim is empty.
3. The benchmark process publishes open loop at RATE_FRACTION of the max rate: message i at
   t0 + i / rate, each publish in a task of its own, the payload carrying i and the intended
   time (as R3). Latency is receive time (a claim returned) minus intended time.
4. Per minute: delivered throughput (acked msg/s summed over the subscribers / SUBSCRIBERS,
   by ack time), latency percentiles (HdrHistogram, messages by intended send time, first
   receipt per subscriber), the RSS of the PostgreSQL server (postmaster and its children,
   but not client backends of other databases) and of the benchmark's own processes, sampled
   at the minute's end, with the pgqueue tables' dead tuples and the subscribers' backlog.
5. After the last publish the consumers have DRAIN_SECONDS to receive everything; a published
   message a subscriber has not received by then is lost (counted per subscriber).

The server's RSS needs psutil and a server on this machine: the postmaster is the parent of
our backend (else the pid in data_directory/postmaster.pid), accepted only if its start time
is pg_postmaster_start_time(). Otherwise the RSS figures are null and the RSS check is left
out. The RSS sum counts shared memory (shared_buffers) once per process that touched it; PSS
and USS sums are recorded beside it when readable.

The cluster's WAL writes and flushes are counted from just before the open loop until every
session of the run has closed (common.WalMeter), per acknowledged publish; the count includes
the consumers' claim and ack commits and the drain. Each repetition ends with R1's durability
check (one connection publishing sequentially, at least 0.95 flushes per publish); should it
fail, the row is marked "not durable: not a result".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

import pgqueue
from bench import common
from bench.r1_publish import render_durability, sequential_check
from bench.r3_latency import (
    CLIENTS,
    HIST_DIGITS,
    HIST_HIGHEST_US,
    HIST_LOWEST_US,
    PERCENTILES,
    PROBE_SECONDS,
    PROBE_WARMUP,
    RATE_FRACTION,
    probe_publish_rate,
)

try:
    import psutil  # type: ignore[import-untyped]
except ImportError:  # the bench extra brings it; without it, no memory figures
    psutil = None

TOPIC = "r7"
PROBE_TOPIC = "r7-probe"  # the probe's messages stay out of the measured topic
SUBSCRIBERS = 3
CONSUMERS = 2  # per subscriber
BATCH = 100  # claim size
POOL_MAX_SIZE = SUBSCRIBERS * CONSUMERS + 2
POLL_INTERVAL = 2.0  # an idle consumer's longest sleep without a NOTIFY (the library default)
DRAIN_SECONDS = 30.0
START_DELAY = 0.5  # between telling the consumers t0 and t0
READY_TIMEOUT = 60.0
POSTMASTER_START_SLACK = 5.0  # seconds between process create time and pg_postmaster_start_time

GOAL = 0.95
P99_GOAL = 1.2
GROWTH_GOAL = 0.10
# What the memory check compares. A plain RSS sum counts a shared_buffers page once per process
# that touched it, so it grows while backends warm up (+21 % in a 10-minute run whose private
# memory grew 8 %); PSS splits shared pages among their users, so it grows with a leak, not
# with cache warm-up. All three are recorded.
GROWTH_MEASURE = "pss"
MEASURES = ("rss", "pss", "uss")

# Dead tuples and size per pgqueue table, the log's partitions added up as "message".
TABLES_SQL = r"""
SELECT CASE WHEN relname LIKE 'message\_%' THEN 'message' ELSE relname END AS name,
       sum(n_dead_tup)::bigint AS dead,
       sum(pg_total_relation_size(relid))::bigint AS bytes
  FROM pg_stat_user_tables
 WHERE schemaname = 'pgqueue'
 GROUP BY 1
 ORDER BY 1
"""
# Sessions of other databases (other runs sharing the server) are not ours to count.
OTHER_CLIENTS_SQL = """
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND datname IS DISTINCT FROM current_database()
"""


def _subscribers() -> list[str]:
    return [f"r7-{n}" for n in range(1, SUBSCRIBERS + 1)]


def _new_histogram() -> Any:
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_DIGITS)


def _record(hist: Any, seconds: float) -> None:
    hist.record_value(min(HIST_HIGHEST_US, max(HIST_LOWEST_US, round(seconds * 1e6))))


def _figures(hist: Any) -> dict[str, float]:
    """p50 … p99.9, max and mean in ms, plus the count (as R3's latency_figures)."""
    if hist.get_total_count() == 0:
        return {"count": 0}
    figures: dict[str, float] = {
        name: hist.get_value_at_percentile(p) / 1000 for name, p in PERCENTILES
    }
    figures["max"] = hist.get_max_value() / 1000
    figures["mean"] = hist.get_mean_value() / 1000
    figures["count"] = hist.get_total_count()
    return figures


@dataclass(frozen=True)
class Clock:
    """The open loop's minutes: minute k covers [t0 + k * minute_seconds, + minute_seconds)."""

    t0: float
    minutes: int
    minute_seconds: float

    def minute(self, at: float) -> int:
        """The minute of a wall-clock time; `minutes` (one past the last) for the drain."""
        return max(0, min(self.minutes, int((at - self.t0) / self.minute_seconds)))

    def sent_in(self, intended: float) -> int:
        """The minute of an intended send time (all of them fall in the run)."""
        return min(self.minutes - 1, self.minute(intended))


# -- the consumer process -------------------------------------------------------------------


@dataclass(frozen=True)
class ConsumerPlan:
    dsn: str
    capacity: int  # messages the open loop issues: i in [0, capacity)
    minutes: int
    minute_seconds: float


class Tally:
    """What the consumer process counts: receipts per subscriber, acks per minute."""

    def __init__(self, plan: ConsumerPlan, t0: float) -> None:
        self.clock = Clock(t0, plan.minutes, plan.minute_seconds)
        self.received = {name: bytearray(plan.capacity) for name in _subscribers()}
        self.distinct = dict.fromkeys(_subscribers(), 0)
        self.duplicates = 0
        # One slot per minute plus one for acks after the last minute (the drain).
        self.acked = {name: [0] * (plan.minutes + 1) for name in _subscribers()}
        self.latency = [_new_histogram() for _ in range(plan.minutes)]

    def receive(self, subscriber: str, at: float, payloads: list[Any]) -> None:
        received = self.received[subscriber]
        for payload in payloads:
            i = payload["i"]
            if received[i]:
                self.duplicates += 1
                received[i] = min(255, received[i] + 1)
                continue
            received[i] = 1
            self.distinct[subscriber] += 1
            intended = payload["t"]
            _record(self.latency[self.clock.sent_in(intended)], at - intended)

    def ack(self, subscriber: str, at: float, count: int) -> None:
        self.acked[subscriber][self.clock.minute(at)] += count

    def result(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "acked": self.acked,
            "latency_ms": [_figures(hist) for hist in self.latency],
        }


async def _consume(q: pgqueue.Queue, subscriber: str, tally: Tally, stop: asyncio.Event) -> None:
    """Claim, ack what came, until stop; an empty claim waits for the topic's NOTIFY (as the
    library's consume loop does)."""
    with q.listener.waiter(TOPIC) as wake:
        while not stop.is_set():
            wake.clear()  # before the claim: a NOTIFY arriving during it is not lost
            messages = await q.claim(TOPIC, subscriber, BATCH)
            if not messages:
                await _either(wake, stop, await q.idle_wait(TOPIC, subscriber, POLL_INTERVAL))
                continue
            tally.receive(subscriber, time.time(), [m.payload for m in messages])
            done = await q.ack(TOPIC, subscriber, messages)
            tally.ack(subscriber, time.time(), len(done))


async def _either(first: asyncio.Event, second: asyncio.Event, seconds: float) -> None:
    waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _consumer_worker(plan: ConsumerPlan, pipe: Connection) -> None:
    try:
        asyncio.run(_consumers(plan, pipe))
    except BaseException as error:
        with contextlib.suppress(OSError):
            pipe.send(("error", repr(error)))
        raise


async def _consumers(plan: ConsumerPlan, pipe: Connection) -> None:
    settings = pgqueue.Settings(pool_min_size=SUBSCRIBERS * CONSUMERS, pool_max_size=POOL_MAX_SIZE)
    async with pgqueue.connect(plan.dsn, settings=settings) as q:
        pipe.send(("ready",))
        command, t0 = await _receive(pipe)
        if command != "start":
            raise RuntimeError(f"unexpected command {command!r}")
        tally = Tally(plan, t0)
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(_consume(q, name, tally, stop))
            for name in _subscribers()
            for _ in range(CONSUMERS)
        ]
        finish = asyncio.ensure_future(_receive(pipe))
        # A consumer that fails ends the run now, not at the finish command.
        await asyncio.wait([finish, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                task.result()
        command, expected, deadline = await finish
        if command != "finish":
            raise RuntimeError(f"unexpected command {command!r}")
        while min(tally.distinct.values()) < expected and time.time() < deadline:
            if any(task.done() for task in tasks):
                break
            await asyncio.sleep(0.1)
        stop.set()
        # Each consumer ends after its current claim + ack round.
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    pipe.send(("done", tally.result()))


async def _receive(pipe: Connection) -> Any:
    """The parent's next command. Not through a thread: one blocked in recv would keep
    asyncio.run from returning, and so the error of a failed consumer from being sent."""
    loop = asyncio.get_running_loop()
    while not pipe.poll():
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(pipe.fileno(), _set_once, readable)
        try:
            await readable
        finally:
            loop.remove_reader(pipe.fileno())
    return pipe.recv()


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Consumers:
    """The consumer process (spawned: a fork would inherit our event loop and connections)."""

    def __init__(self, plan: ConsumerPlan) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(
            target=_consumer_worker, args=(plan, child), name="bench-r7-consumers", daemon=True
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def start(self) -> None:
        self._process.start()
        await self._expect("ready", READY_TIMEOUT)

    def begin(self, t0: float) -> None:
        self._pipe.send(("start", t0))

    def check(self) -> None:
        """Raises if the process failed or died before its time."""
        if self._pipe.poll():
            raise RuntimeError(f"the consumer process failed: {self._recv()[1:]}")
        if not self._process.is_alive():
            raise RuntimeError(f"the consumer process exited ({self._process.exitcode})")

    async def finish(self, expected: int, deadline: float) -> dict[str, Any]:
        """The tally once every subscriber received `expected` messages or at the deadline."""
        self._pipe.send(("finish", expected, deadline))
        _, tally = await self._expect("done", deadline - time.time() + 90)
        result: dict[str, Any] = tally
        return result

    async def _expect(self, kind: str, within: float) -> tuple[Any, ...]:
        if not await asyncio.to_thread(self._pipe.poll, max(0.0, within)):
            raise RuntimeError(f"the consumer process sent no {kind!r} within {within:.0f} s")
        message = self._recv()
        if message[0] == "error":
            raise RuntimeError(f"the consumer process failed: {message[1]}")
        if message[0] != kind:
            raise RuntimeError(f"the consumer process sent {message[0]!r}, not {kind!r}")
        return message

    def _recv(self) -> tuple[Any, ...]:
        try:
            message: tuple[Any, ...] = self._pipe.recv()
        except EOFError:  # the process is gone without a word
            self._process.join(timeout=5)
            return ("error", f"exited with {self._process.exitcode}")
        return message

    def close(self) -> None:
        if self._process.pid is not None:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join()
        self._pipe.close()


# -- the open loop --------------------------------------------------------------------------


class Publishing:
    """What the open loop counts per minute (by intended send time)."""

    def __init__(self, total: int, minutes: int) -> None:
        self.published = bytearray(total)
        self.count = [0] * minutes
        self.errors = [0] * minutes
        self.error_examples: list[str] = []
        self.max_lag = [0.0] * minutes
        self.call = [_new_histogram() for _ in range(minutes)]  # publish → call returned


async def open_loop(q: pgqueue.Queue, clock: Clock, rate: float) -> Publishing:
    loop = asyncio.get_running_loop()
    total = round(clock.minutes * clock.minute_seconds * rate)
    figures = Publishing(total, clock.minutes)
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, intended: float, minute: int) -> None:
        try:
            await q.publish(TOPIC, {"i": i, "t": intended})
        except Exception as error:
            figures.errors[minute] += 1
            if len(figures.error_examples) < 5:
                figures.error_examples.append(repr(error))
            return
        figures.published[i] = 1
        figures.count[minute] += 1
        _record(figures.call[minute], time.time() - intended)

    for i in range(total):
        intended = clock.t0 + i / rate
        # Yield to the publish tasks also when late; a late message goes out at once.
        await asyncio.sleep(max(0.0, intended - time.time()))
        minute = clock.sent_in(intended)
        figures.max_lag[minute] = max(figures.max_lag[minute], time.time() - intended)
        task = loop.create_task(one(i, intended, minute))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    return figures


# -- memory and table samples ---------------------------------------------------------------


async def find_postmaster(conn: asyncpg.Connection) -> tuple[int | None, str]:
    """(pid, how it was found) of the server's postmaster on this machine, or (None, why)."""
    if psutil is None:
        return None, "psutil is not installed"
    started = float(await conn.fetchval("SELECT extract(epoch FROM pg_postmaster_start_time())"))
    candidates: list[tuple[int, str]] = []
    with contextlib.suppress(psutil.Error):
        candidates.append((psutil.Process(conn.get_server_pid()).ppid(), "parent of our backend"))
    try:
        directory = await conn.fetchval("SELECT current_setting('data_directory')")
        pid_file = Path(directory) / "postmaster.pid"
        candidates.append((int(pid_file.read_text().split()[0]), str(pid_file)))
    except (asyncpg.PostgresError, OSError, ValueError, IndexError):
        pass
    for pid, how in candidates:
        with contextlib.suppress(psutil.Error):
            if abs(psutil.Process(pid).create_time() - started) <= POSTMASTER_START_SLACK:
                return pid, how
    return None, "no local process started at pg_postmaster_start_time(): not a local server?"


def server_memory(postmaster: int, exclude: set[int]) -> dict[str, Any] | None:
    """RSS (and PSS, USS when readable) summed over the postmaster and its children."""
    try:
        root = psutil.Process(postmaster)
        processes = [root, *(p for p in root.children() if p.pid not in exclude)]
    except psutil.Error:
        return None
    rss = 0
    pss: int | None = 0
    uss: int | None = 0
    counted = 0
    for process in processes:
        try:
            rss += process.memory_info().rss
        except psutil.NoSuchProcess:  # a backend that just ended
            continue
        counted += 1
        try:
            full = process.memory_full_info()
        except psutil.Error:
            pss = uss = None
            continue
        if pss is not None and uss is not None:
            pss += full.pss
            uss += full.uss
    return {"rss": rss, "pss": pss, "uss": uss, "processes": counted}


def bench_memory(consumer_pid: int | None) -> dict[str, Any] | None:
    """RSS of this process, of the consumer process, and of both with every other child."""
    if psutil is None:
        return None
    me = psutil.Process()
    publisher = me.memory_info().rss
    consumers = 0
    total = publisher
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            rss = child.memory_info().rss
            total += rss
            if child.pid == consumer_pid:
                consumers = rss
    return {"publisher": publisher, "consumers": consumers, "total": total}


@dataclass
class Monitor:
    conn: asyncpg.Connection  # a session of its own on the bench database
    q: pgqueue.Queue
    postmaster: int | None
    consumer_pid: int | None

    async def sample(self) -> dict[str, Any]:
        tables = await self.conn.fetch(TABLES_SQL)
        backlog = sum(s.lag for s in await self.q.subscriber_stats(TOPIC))
        server = None
        if self.postmaster is not None:
            exclude = {row["pid"] for row in await self.conn.fetch(OTHER_CLIENTS_SQL)}
            server = await asyncio.to_thread(server_memory, self.postmaster, exclude)
        return {
            "backlog": backlog,
            "server_memory": server,
            "bench_memory": await asyncio.to_thread(bench_memory, self.consumer_pid),
            "dead_tuples": {row["name"]: row["dead"] for row in tables},
            "table_bytes": {row["name"]: row["bytes"] for row in tables},
        }


# -- one run --------------------------------------------------------------------------------


async def sustained(
    dsn: str,
    *,
    minutes: int,
    minute_seconds: float,
    progress: Progress,
    phase: TaskID,
    label: str,
    console: Console,
) -> dict[str, Any]:
    """Probe, then the open loop with its consumers; returns the run's figures."""
    async with pgqueue.connect(dsn) as q:
        await q.create_topic(TOPIC)
        await q.create_topic(PROBE_TOPIC)
        probing = f"{label}: probing the max publish rate"
        async with _bar(progress, phase, probing, PROBE_WARMUP + PROBE_SECONDS):
            max_rate = await probe_publish_rate(functools.partial(q.publish, PROBE_TOPIC))
        rate = max_rate * RATE_FRACTION
        console.print(
            f"{label}: max publish rate {max_rate:,.0f} msg/s ({CLIENTS} tasks, closed loop); "
            f"open loop at {rate:,.0f} msg/s for {minutes} × {minute_seconds:g} s"
        )
        for name in _subscribers():
            await q.subscribe(TOPIC, name, start="latest")
        capacity = round(minutes * minute_seconds * rate)
        consumers = Consumers(ConsumerPlan(dsn, capacity, minutes, minute_seconds))
        monitor_conn = await asyncpg.connect(dsn)
        try:
            await consumers.start()
            postmaster, postmaster_how = await find_postmaster(monitor_conn)
            monitor = Monitor(monitor_conn, q, postmaster, consumers.pid)
            at_start = await monitor.sample()
            # Waits for the probe's and the consumers' idle sessions to report (about 11 s);
            # read again once every session of the run has closed, below.
            meter = common.WalMeter(dsn, ignore_pids=[monitor_conn.get_server_pid()])
            await meter.__aenter__()
            clock = Clock(time.time() + START_DELAY, minutes, minute_seconds)
            consumers.begin(clock.t0)
            samples: list[dict[str, Any]] = []
            # The sampler raises when the consumer process fails: that stops the publisher.
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    _sample_minutes(monitor, consumers, clock, samples, console, label)
                )
                publishing_task = group.create_task(open_loop(q, clock, rate))
                loaded = f"{label}: {rate:,.0f} msg/s, {SUBSCRIBERS} subscribers"
                async with _bar(progress, phase, loaded, START_DELAY + minutes * minute_seconds):
                    await asyncio.wait([publishing_task])
            publishing = publishing_task.result()
            progress.update(phase, description=f"{label}: draining (≤ {DRAIN_SECONDS:.0f} s)")
            expected = publishing.published.count(1)
            tally = await consumers.finish(expected, time.time() + DRAIN_SECONDS)
        finally:
            await monitor_conn.close()
            await asyncio.to_thread(consumers.close)
    await meter.__aexit__(None, None, None)
    acknowledged = publishing.published.count(1)
    wal = meter.figures(
        acknowledged,
        per="publish",
        messages=acknowledged,
        note="open loop and drain; includes the consumers' claim and ack commits",
    )
    return _run_figures(
        wal=wal,
        max_rate=max_rate,
        rate=rate,
        clock=clock,
        publishing=publishing,
        tally=tally,
        samples=samples,
        at_start=at_start,
        postmaster=postmaster,
        postmaster_how=postmaster_how,
    )


@asynccontextmanager
async def _bar(
    progress: Progress, phase: TaskID, label: str, seconds: float
) -> AsyncIterator[None]:
    """The phase's bar follows the clock while the block runs (as R1's phases do)."""
    progress.reset(phase, total=seconds, description=label)
    began = time.monotonic()

    async def tick() -> None:
        while True:
            progress.update(phase, completed=min(seconds, time.monotonic() - began))
            await asyncio.sleep(0.5)

    ticker = asyncio.create_task(tick())
    try:
        yield
    finally:
        ticker.cancel()
        progress.update(phase, completed=seconds)


async def _sample_minutes(
    monitor: Monitor,
    consumers: Consumers,
    clock: Clock,
    samples: list[dict[str, Any]],
    console: Console,
    label: str,
) -> None:
    for minute in range(1, clock.minutes + 1):
        await asyncio.sleep(max(0.0, clock.t0 + minute * clock.minute_seconds - time.time()))
        consumers.check()
        sample = await monitor.sample()
        samples.append(sample)
        server = sample["server_memory"]
        dead = [f"{name} {n:,}" for name, n in sample["dead_tuples"].items() if n]
        console.print(
            f"{label}: minute {minute}/{clock.minutes}: backlog {sample['backlog']:,}, "
            f"PostgreSQL RSS {_mib(server['rss'] if server else None)} MiB, "
            f"PSS {_mib(server['pss'] if server else None)} MiB; dead tuples "
            + (", ".join(dead) or "none")
        )


def _run_figures(
    *,
    wal: dict[str, Any],
    max_rate: float,
    rate: float,
    clock: Clock,
    publishing: Publishing,
    tally: dict[str, Any],
    samples: list[dict[str, Any]],
    at_start: dict[str, Any],
    postmaster: int | None,
    postmaster_how: str,
) -> dict[str, Any]:
    series = []
    for minute in range(clock.minutes):
        acked = [counts[minute] for counts in tally["acked"].values()]
        series.append(
            {
                "minute": minute + 1,
                "published_per_s": publishing.count[minute] / clock.minute_seconds,
                "publish_errors": publishing.errors[minute],
                "publish_call_ms": _figures(publishing.call[minute]),
                "generator_max_lag_ms": publishing.max_lag[minute] * 1000,
                "delivered_per_s": sum(acked) / clock.minute_seconds / SUBSCRIBERS,
                "acked": acked,
                "latency_ms": tally["latency_ms"][minute],
                **samples[minute],
            }
        )
    published = publishing.published
    received: dict[str, bytearray] = tally["received"]
    lost_by_subscriber = {
        name: sum(1 for p, r in zip(published, got, strict=True) if p and not r)
        for name, got in received.items()
    }
    lost_messages = sum(
        1 for i, p in enumerate(published) if p and not all(got[i] for got in received.values())
    )
    first, last = series[0], series[-1]
    first_memory = first["server_memory"] or {}
    last_memory = last["server_memory"] or {}
    return {
        "max_rate": max_rate,
        "rate": rate,
        "issued": len(published),
        "published": published.count(1),
        "publish_errors": sum(publishing.errors),
        "publish_error_examples": publishing.error_examples,
        "delivered": sum(sum(1 for r in got if r) for got in received.values()),
        "acked": sum(sum(counts) for counts in tally["acked"].values()),
        "acked_in_drain": sum(counts[-1] for counts in tally["acked"].values()),
        "lost": sum(lost_by_subscriber.values()),  # (message, subscriber) pairs
        "lost_by_subscriber": lost_by_subscriber,
        "lost_messages": lost_messages,  # missed by at least one subscriber
        "duplicates": tally["duplicates"],
        "postmaster": {"pid": postmaster, "how": postmaster_how},
        "wal": wal,
        "at_start": at_start,
        "delivered_first_per_s": first["delivered_per_s"],
        "delivered_last_per_s": last["delivered_per_s"],
        "throughput_ratio": _ratio(last["delivered_per_s"], first["delivered_per_s"]),
        "p99_ratio": _ratio(last["latency_ms"].get("p99"), first["latency_ms"].get("p99")),
        # PostgreSQL's memory at the last minute's end against the first's, less one.
        "memory_growth": {
            measure: _growth(first_memory.get(measure), last_memory.get(measure))
            for measure in MEASURES
        },
        "minutes": series,
    }


def _growth(first: int | None, last: int | None) -> float | None:
    return last / first - 1 if first and last is not None else None


def _ratio(last: float | None, first: float | None) -> float:
    # A minute with nothing delivered is a total loss, not a division error.
    return last / first if last is not None and first else 0.0


# -- the run --------------------------------------------------------------------------------


async def run(
    maintenance_dsn: str,
    *,
    minutes: int,
    minute_seconds: float,
    repeat: int,
    keep_db: bool,
    console: Console,
) -> dict[str, Any]:
    machine = common.machine_info()
    runs: list[dict[str, Any]] = []
    settings: dict[str, str] = {}
    autovacuum: str | None = None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        refresh_per_second=2,  # the publisher shares the GIL with rich's refresh thread
    ) as progress:
        phase = progress.add_task("", total=1)
        for rep in range(1, repeat + 1):
            console.print(f"creating and migrating database {common.BENCH_DATABASE} …")
            dsn = await common.create_bench_database(maintenance_dsn)
            try:
                settings = await common.server_settings(dsn)
                problems = common.durability_problems(settings)
                if problems:
                    raise SystemExit(
                        "refusing to benchmark with lowered durability: " + "; ".join(problems)
                    )
                autovacuum = await _setting(dsn, "autovacuum")
                figures = await sustained(
                    dsn,
                    minutes=minutes,
                    minute_seconds=minute_seconds,
                    progress=progress,
                    phase=phase,
                    label=f"rep {rep}/{repeat}",
                    console=console,
                )
                console.print(f"rep {rep}/{repeat}: durability check (sequential publisher) …")
                figures["durability_check_phase"] = (await sequential_check(dsn)).wal
                runs.append(figures)
            finally:
                if not keep_db:
                    await common.drop_bench_database(maintenance_dsn)

    series = [
        {"repetition": rep, **minute}
        for rep, figures in enumerate(runs, start=1)
        for minute in figures.pop("minutes")
    ]
    durability = common.durability_verdict([figures["durability_check_phase"] for figures in runs])
    rows = [_row(runs, minutes)]
    common.mark_not_durable(rows, durability)
    return {
        "benchmark": "r7",
        "config": {
            "minutes": minutes,
            "minute_seconds": minute_seconds,
            "repeat": repeat,
            "rate_fraction": RATE_FRACTION,
            "probe_clients": CLIENTS,
            "probe_seconds": PROBE_SECONDS,
            "subscribers": SUBSCRIBERS,
            "consumers_per_subscriber": CONSUMERS,
            "batch": BATCH,
            "drain_seconds": DRAIN_SECONDS,
            "consumer": f"one spawned process, {SUBSCRIBERS * CONSUMERS} tasks sharing one Queue "
            f"(pool max {POOL_MAX_SIZE}), each looping Queue.claim({BATCH}) then Queue.ack",
            "publisher": "Queue.publish (publish batching as configured), one task per "
            "message, in the benchmark process",
        },
        "reportable": minutes >= 10 and minute_seconds == 60 and durability["met"],
        "settings": settings,
        "autovacuum": autovacuum,
        "machine": machine,
        "published": sum(figures["published"] for figures in runs),
        "delivered": sum(figures["delivered"] for figures in runs),
        "lost": sum(figures["lost"] for figures in runs),
        "duplicates": sum(figures["duplicates"] for figures in runs),
        "wal_accounting": {
            "caveat": common.WAL_CAVEAT,
            "per": "per acknowledged publish (1 message per call), over the open loop and drain",
        },
        "durability_check": durability,
        "repetitions": runs,
        "minutes": series,
        "rows": rows,
    }


async def _setting(dsn: str, name: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        value: str = await conn.fetchval("SELECT current_setting($1)", name)
    finally:
        await conn.close()
    return value


def _row(runs: list[dict[str, Any]], minutes: int) -> dict[str, Any]:
    """The shape of R1's rows (so the report renders it), the runs being the repetitions."""
    last = [figures["delivered_last_per_s"] for figures in runs]
    first = [figures["delivered_first_per_s"] for figures in runs]
    ratio = common.summarize([figures["throughput_ratio"] for figures in runs])
    p99 = common.summarize([figures["p99_ratio"] for figures in runs])
    row: dict[str, Any] = {
        "id": "r7",
        "what": f"sustained load {minutes} min: publish at 50 % of max, {SUBSCRIBERS} "
        f"subscribers × {CONSUMERS} consumers; delivered per subscriber, last vs first minute",
        "unit": "msg/s",
        "baseline_name": "first minute",
        "pgqueue": common.summarize(last),
        "baseline": common.summarize(first),
        "ratio": ratio,
        "goal": GOAL,
        "met": ratio.median >= GOAL,
        "wal": {
            "pgqueue": common.wal_summary([figures["wal"] for figures in runs]),
            "pgqueue_per": "publish",
            "baseline": None,
            "baseline_per": None,
        },
        "checks": [
            {
                "name": "p99 last/first",
                "value": p99,
                "goal": f"≤ {P99_GOAL:g}×",
                "met": p99.median <= P99_GOAL,
            }
        ],
    }
    growth = [figures["memory_growth"][GROWTH_MEASURE] for figures in runs]
    if all(value is not None for value in growth):
        summary = common.summarize(growth)
        row["checks"].append(
            {
                "name": f"{GROWTH_MEASURE.upper()} growth",
                "value": summary,
                "goal": f"≤ {GROWTH_GOAL * 100:g} %",
                "met": summary.median <= GROWTH_GOAL,
            }
        )
    else:
        # Not local, or no psutil: the check is left out rather than passed or failed.
        row["memory_unavailable"] = "; ".join(
            sorted({figures["postmaster"]["how"] for figures in runs})
        )
    return row


# -- output ---------------------------------------------------------------------------------


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:,.0f}"


def _count(value: int) -> str:
    return f"{value / 1000:,.0f}k" if value >= 100_000 else f"{value:,}"


def _percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{fraction * 100:+.1f} %"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def render(results: dict[str, Any], console: Console) -> None:
    config = results["config"]
    for rep, figures in enumerate(results["repetitions"], start=1):
        table = Table(
            title=f"R7 rep {rep}: per minute ({config['minute_seconds']:g} s), open loop at "
            f"{figures['rate']:,.0f} msg/s (max {figures['max_rate']:,.0f})",
            caption="latency ms from the intended send time; PostgreSQL RSS and PSS in MiB; "
            "dead tuples of pgqueue.delivery",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            collapse_padding=True,
        )
        for column in (
            "min",
            "pub/s",
            "del/s",
            "p50",
            "p99",
            "max",
            "backlog",
            "RSS",
            "PSS",
            "dead",
        ):
            table.add_column(column, justify="right", no_wrap=True)
        for minute in results["minutes"]:
            if minute["repetition"] != rep:
                continue
            latency = minute["latency_ms"]
            server = minute["server_memory"] or {}
            table.add_row(
                str(minute["minute"]),
                f"{minute['published_per_s']:,.0f}",
                f"{minute['delivered_per_s']:,.0f}",
                _ms(latency.get("p50")),
                _ms(latency.get("p99")),
                _ms(latency.get("max")),
                f"{minute['backlog']:,}",
                _mib(server.get("rss")),
                _mib(server.get("pss")),
                _count(minute["dead_tuples"].get("delivery", 0)),
            )
        console.print(table)
        console.print(
            f"  published {figures['published']:,}, delivered {figures['delivered']:,} "
            f"(message × subscriber), lost {figures['lost']:,} "
            f"(not received {config['drain_seconds']:.0f} s after the last publish), "
            f"duplicates {figures['duplicates']:,}, publish errors {figures['publish_errors']:,}"
        )
        growth = figures["memory_growth"]
        bench = [
            minute["bench_memory"] for minute in results["minutes"] if minute["repetition"] == rep
        ]
        console.print(
            "  PostgreSQL memory last/first − 1: "
            + ", ".join(f"{m.upper()} {_percent(growth[m])}" for m in MEASURES)
            + "; benchmark processes' RSS "
            + (f"{_mib(bench[0]['total'])} → {_mib(bench[-1]['total'])} MiB" if bench[0] else "–")
        )
        wal = figures["wal"]
        if "flushes" in wal:
            console.print(
                f"  WAL: {wal['flushes']:,} flushes ({wal['flush_counter']}), "
                f"{wal['wal_write']:,} writes for {wal['acknowledged']:,} acknowledged publishes: "
                f"{wal['flushes_per_ack']:.3f} per publish (consumers' commits included; "
                "cluster-wide, an upper bound)"
            )
    for row in results["rows"]:
        parts = [
            f"throughput last/first {row['ratio'].median:.3f} (goal ≥ {row['goal']:g}: "
            + ("[green]met[/])" if row["met"] else "[red]not met[/])")
        ]
        for check in row["checks"]:
            value = check["value"].median
            shown = _percent(value) if check["name"].endswith("growth") else f"{value:.2f}×"
            verdict = "[green]met[/]" if check["met"] else "[red]not met[/]"
            parts.append(f"{check['name']} {shown} (goal {check['goal']}: {verdict})")
        if "memory_unavailable" in row:
            parts.append(f"PostgreSQL memory not measured: {row['memory_unavailable']}")
        if "not_a_result" in row:
            parts.append(f"[red]{row['not_a_result']}[/]")
        console.print("R7: " + "; ".join(parts))
    render_durability(results, console)
    console.print(
        f"PostgreSQL: {common.settings_line(results['settings'])}, "
        f"autovacuum={results['autovacuum']}"
    )
    if not results["reportable"]:
        console.print("[yellow]shorter than 10 one-minute minutes: a smoke run[/]")


def main(
    maintenance_dsn: str,
    *,
    minutes: int,
    minute_seconds: float,
    repeat: int,
    keep_db: bool,
    output: Path | None,
) -> None:
    common.run_and_save(
        "r7",
        lambda console: run(
            maintenance_dsn,
            minutes=minutes,
            minute_seconds=minute_seconds,
            repeat=repeat,
            keep_db=keep_db,
            console=console,
        ),
        render,
        output,
    )
