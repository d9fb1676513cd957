"""Row R3: publish → receive latency at 50 % of the max publish rate, open loop.

    R3  publish → WebSocket receive latency   no baseline: absolute ms   goal p50 ≤ 5, p99 ≤ 20

Each system in SYSTEMS is measured the same way (pgqueue, and Redis Streams and NATS JetStream
as reference rows; `--systems` picks some):

1. The maximum publish rate is found first: CLIENTS tasks publish back to back for
   PROBE_SECONDS (after PROBE_WARMUP unmeasured seconds). The target rate is RATE_FRACTION of
   it, unless --rate or --max-rate says otherwise.
2. Open loop: one task issues message i at its intended time t0 + i / rate, each in a task of
   its own, whether or not earlier ones have completed. The payload carries i and the
   intended time. Latency is receive time minus intended time, so a publisher or server that
   falls behind shows up in the figures (no coordinated omission).
3. The receiver runs in a separate process, so neither the open-loop generator nor the
   publish calls can delay a receive timestamp; both processes read the same wall clock.
4. The first `warmup` seconds of messages are not measured. After the last publish
   completes, the receiver has DRAIN_SECONDS to get everything; what it has not got by then
   is lost. Latencies go into an HdrHistogram (microseconds, 3 significant digits).
5. Each repetition uses a fresh subscriber, removed afterwards; a row reports the median of
   the repetitions with their min–max.

For pgqueue the publisher is the library (`Queue.publish`, the call of R1a: concurrent calls
share a round trip) and the receiver a WebSocket of `pgqueue serve`, run as a subprocess on a
fresh bench database, with ack=auto and prefetch=PREFETCH. Each pgqueue repetition records the
cluster's WAL writes and flushes over its open loop and drain (common.WalMeter, per acknowledged
publish; the server's claim and ack commits count too; the readings wait about 11 s for the
publisher's and the server's idle sessions to report), and after the repetitions R1's
durability check runs once (one connection publishing sequentially, at least 0.95 flushes per
publish): should it fail, the row is not durable and not a result.

Redis Streams (reference): redis-py asyncio XADD into a stream; the receiver reads with
XREADGROUP BLOCK (COUNT up to PREFETCH) in a consumer group created at the stream's end ($) and
XACKs each batch after taking its receive time. For the whole of its run the server gets
`CONFIG SET appendonly yes` and `appendfsync always` (an XADD is answered only after the AOF
fsync); the previous values are restored afterwards. Should that fail, or should someone change
them during the run, the row says it is not durable.

NATS JetStream (reference): nats-py `js.publish` (awaits the PubAck) into a stream with file
storage and one replica; the receiver is a durable push consumer (deliver new, explicit ack,
max_ack_pending=PREFETCH) that acks each message. JetStream file storage fsyncs at the server's
sync_interval (default 2 min), not per message: a PubAck means stored, not necessarily on disk.

The reference servers are the local ones, PGQUEUE_BENCH_REDIS_URL (default REDIS_URL) and
PGQUEUE_BENCH_NATS_URL (default NATS_URL); the benchmark's streams are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]
from rich import box
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import ClientConnection, connect

import pgqueue
from bench import common
from bench.r1_publish import sequential_check

if TYPE_CHECKING:  # imported where used: a pgqueue-only run needs neither package
    import redis.asyncio as aioredis
    from nats.js import JetStreamContext

TOPIC = "lat"
PROBE_TOPIC = "lat-probe"  # the rate probe's messages stay out of the measured topic
CLIENTS = 4  # publishers of the rate probe
PROBE_WARMUP = 1.0
PROBE_SECONDS = 5.0
RATE_FRACTION = 0.5
DRAIN_SECONDS = 5.0
PREFETCH = 100
POLL_INTERVAL = "2"  # PGQUEUE_POLL_INTERVAL of the server: NOTIFY, not polling, must wake it

# HdrHistogram range in microseconds: 1 µs to 60 s; larger values are recorded as 60 s.
HIST_LOWEST_US = 1
HIST_HIGHEST_US = 60_000_000
HIST_DIGITS = 3
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))
STATS = (*(name for name, _ in PERCENTILES), "max")

# A repetition whose generator got this far behind is flagged in the output (not dropped).
FELL_BEHIND_RATE = 0.95  # achieved / target rate
FELL_BEHIND_LAG_MS = 1000.0

SERVER_START_TIMEOUT = 60.0
RECEIVER_READY_TIMEOUT = 60.0
SERVER_LOG = common.RESULTS_DIR / "r3-server.log"

Payload = dict[str, Any]
Publish = Callable[[Payload], Awaitable[object]]
# Run in the receiver process: entered once subscribed (so nothing published afterwards is
# missed), it yields (receive time, payload) per message.
Source = Callable[[], AbstractAsyncContextManager[AsyncIterator[tuple[float, Any]]]]


@dataclass(frozen=True)
class Plan:
    """What every system's run gets from the command line."""

    seconds: int
    repeat: int
    warmup: int
    rate: float | None  # msg/s; None: RATE_FRACTION of the probed (or given) maximum
    max_rate: float | None  # msg/s; None: probe it


@dataclass(frozen=True)
class Goal:
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class System:
    id: str
    name: str
    what: str
    goal: Goal | None  # None for reference rows
    # Returns the system's part of the results: rate figures, the repetitions, and
    # "durability" (what a publish acknowledgement guarantees) with "durable" (a bool).
    measure: Callable[[str, Plan, Console], Awaitable[dict[str, Any]]]
    # Measured on the fresh bench database (its DSN goes to measure); the others get the
    # maintenance DSN and ignore it.
    database: bool = False


# -- latency figures ------------------------------------------------------------------------


def histogram(seconds: Sequence[float]) -> Any:
    hist = HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_DIGITS)
    for value in seconds:
        hist.record_value(min(HIST_HIGHEST_US, max(HIST_LOWEST_US, round(value * 1e6))))
    return hist


def latency_figures(seconds: Sequence[float]) -> dict[str, float]:
    """p50 … p99.9 and max in ms (HdrHistogram: within 0.1 %), plus the count."""
    if not seconds:
        return {"count": 0}
    hist = histogram(seconds)
    figures: dict[str, float] = {
        name: hist.get_value_at_percentile(p) / 1000 for name, p in PERCENTILES
    }
    figures["max"] = hist.get_max_value() / 1000
    figures["mean"] = hist.get_mean_value() / 1000
    figures["count"] = hist.get_total_count()
    return figures


def timeline(
    indices: Sequence[int], latencies: Sequence[float], rate: float, first: int
) -> list[dict[str, Any]]:
    """Per measured second (by intended send time): count, p50 and max in ms, exact."""
    buckets: dict[int, list[float]] = {}
    for i, latency in zip(indices, latencies, strict=True):
        if i >= first:
            buckets.setdefault(int((i - first) / rate), []).append(latency * 1000)
    return [
        {
            "second": second,
            "count": len(values),
            "p50_ms": round(statistics.median(values), 3),
            "max_ms": round(max(values), 3),
        }
        for second, values in sorted(buckets.items())
    ]


# -- the receiver process -------------------------------------------------------------------


def _receiver_worker(source: Source, pipe: Connection) -> None:
    try:
        asyncio.run(_receive(source, pipe))
    except BaseException as error:
        with contextlib.suppress(OSError):
            pipe.send(("error", repr(error)))
        raise


async def _receive(source: Source, pipe: Connection) -> None:
    """Records the first arrival of each message; counts repeated ones. Stops when the parent
    says how many to expect and they have all come, or at the parent's deadline."""
    indices: array[int] = array("q")
    latencies: array[float] = array("d")
    seen: set[int] = set()
    duplicates = 0
    expected: int | None = None
    complete = asyncio.Event()

    async with source() as messages:

        async def read() -> None:
            nonlocal duplicates
            async for received, payload in messages:
                i = payload["i"]
                if i in seen:
                    duplicates += 1
                    continue
                seen.add(i)
                indices.append(i)
                latencies.append(received - payload["t"])
                if expected is not None and len(seen) >= expected:
                    complete.set()

        reader = asyncio.create_task(read())
        pipe.send(("ready",))
        command, expected, deadline = await asyncio.to_thread(pipe.recv)
        if command != "finish":
            raise RuntimeError(f"unexpected command {command!r}")
        if len(seen) >= expected:
            complete.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(complete.wait(), max(0.0, deadline - time.time()))
        if reader.done():  # the stream ended or failed before everything came
            reader.result()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    pipe.send(("done", indices, latencies, duplicates))


class Receiver:
    """A receiver process (spawned: a fork would inherit our event loop and connections)."""

    def __init__(self, source: Source) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(
            target=_receiver_worker, args=(source, child), name="bench-r3-receiver", daemon=True
        )

    async def start(self) -> None:
        self._process.start()
        await self._expect("ready", RECEIVER_READY_TIMEOUT)

    async def finish(self, expected: int, deadline: float) -> tuple[list[int], list[float], int]:
        """(indices, latencies in s, duplicates) once `expected` distinct messages came or the
        deadline (a time.time()) passed."""
        self._pipe.send(("finish", expected, deadline))
        _, indices, latencies, duplicates = await self._expect("done", deadline - time.time() + 30)
        return list(indices), list(latencies), int(duplicates)

    async def _expect(self, kind: str, within: float) -> tuple[Any, ...]:
        if not await asyncio.to_thread(self._pipe.poll, max(0.0, within)):
            raise RuntimeError(f"the receiver process sent no {kind!r} within {within:.0f} s")
        message: tuple[Any, ...] = self._pipe.recv()
        if message[0] == "error":
            raise RuntimeError(f"the receiver process failed: {message[1]}")
        if message[0] != kind:
            raise RuntimeError(f"the receiver process sent {message[0]!r}, not {kind!r}")
        return message

    def close(self) -> None:
        if self._process.pid is not None:  # started
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join()
        self._pipe.close()


# -- the open loop --------------------------------------------------------------------------


async def open_loop(
    publish: Publish, source: Source, *, rate: float, warmup: int, seconds: int
) -> dict[str, Any]:
    """One repetition: `rate` msg/s for warmup + seconds, then the drain."""
    receiver = Receiver(source)
    try:
        await receiver.start()
        return await _drive(publish, receiver, rate=rate, warmup=warmup, seconds=seconds)
    finally:
        await asyncio.to_thread(receiver.close)


async def _drive(
    publish: Publish, receiver: Receiver, *, rate: float, warmup: int, seconds: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    total = round((warmup + seconds) * rate)
    first = round(warmup * rate)  # the first measured message
    published: set[int] = set()
    errors: list[str] = []
    acked: list[float] = []  # publish → durable (the call returned), measured messages
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, intended: float) -> None:
        try:
            await publish({"i": i, "t": intended})
        except Exception as error:
            errors.append(repr(error))
            return
        published.add(i)
        if i >= first:
            acked.append(time.time() - intended)

    max_lag = 0.0
    issued_first = issued_last = 0.0
    t0 = time.time() + 0.05
    for i in range(total):
        intended = t0 + i * interval
        delay = intended - time.time()
        # Yield to the publish tasks also when late; a late message goes out at once.
        await asyncio.sleep(max(0.0, delay))
        now = time.time()
        task = loop.create_task(one(i, intended))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if i >= first:
            max_lag = max(max_lag, now - intended)
            if i == first:
                issued_first = now
            issued_last = now
    await asyncio.gather(*pending)
    ended = time.time()

    indices, latencies, duplicates = await receiver.finish(len(published), ended + DRAIN_SECONDS)
    received = set(indices)
    measured = [lat for i, lat in zip(indices, latencies, strict=True) if i >= first]
    span = issued_last - issued_first
    return {
        "rate_target": rate,
        "rate_achieved": (total - first - 1) / span if span > 0 else None,
        "issued": total,
        "measured_messages": total - first,
        "published": len(published),
        "publish_errors": len(errors),
        "publish_error_examples": errors[:5],
        "received": len(received),
        "lost": len(published - received),
        "lost_measured": len({i for i in published - received if i >= first}),
        "duplicates": duplicates,
        "latency_ms": latency_figures(measured),
        "publish_ack_ms": latency_figures(acked),
        "generator_max_lag_ms": max_lag * 1000,
        "timeline": timeline(indices, latencies, rate, first),
        "loadavg_at_end": list(os.getloadavg()),
    }


# -- pgqueue --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pgqueue_command() -> list[str]:
    """The console script of the interpreter running us, else the one on PATH."""
    beside = Path(sys.executable).parent / "pgqueue"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("pgqueue")
    if found is None:
        raise FileNotFoundError("no pgqueue console script beside python or on PATH")
    return [found]


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@asynccontextmanager
async def pgqueue_server(dsn: str, log_path: Path) -> AsyncIterator[str]:
    """`pgqueue serve` on a free port of 127.0.0.1 until exit; yields its base URL."""
    port = _free_port()
    env = {
        **os.environ,
        "PGQUEUE_DATABASE_URL": dsn,
        "PGQUEUE_POLL_INTERVAL": POLL_INTERVAL,
        "PGQUEUE_API_TOKENS": "{}",  # no authentication, whatever the environment says
    }
    base = f"http://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *_pgqueue_command(),
            "serve",
            "--port",
            str(port),
            env=env,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await _wait_healthy(base, process, log_path)
            yield base
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 15)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def _wait_healthy(base: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    async with httpx.AsyncClient(base_url=base, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(
                    f"pgqueue serve exited with {process.returncode}:\n{_log_tail(log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(
        f"pgqueue serve not healthy within {SERVER_START_TIMEOUT:.0f} s:\n{_log_tail(log_path)}"
    )


async def _create_topics(base: str, names: Sequence[str]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10.0) as http:
        for name in names:
            response = await http.post("/topics", json={"name": name})
            if response.status_code != 201:
                raise RuntimeError(f"POST /topics {name}: {response.status_code} {response.text}")


async def probe_max_rate(q: pgqueue.Queue) -> float:
    """Closed loop: CLIENTS tasks publishing back to back, the payload of the open loop."""
    return await probe_publish_rate(functools.partial(q.publish, PROBE_TOPIC))


async def probe_publish_rate(publish: Publish) -> float:
    """Closed loop of any system: CLIENTS tasks calling `publish` back to back for
    PROBE_SECONDS after PROBE_WARMUP, the payload of the open loop; returns msg/s."""
    loop = asyncio.get_running_loop()
    start = loop.time() + PROBE_WARMUP
    stop = start + PROBE_SECONDS

    async def publisher() -> int:
        count = 0
        while True:
            await publish({"i": -1, "t": time.time()})
            now = loop.time()
            if now >= stop:
                return count
            if now >= start:
                count += 1

    counts = await asyncio.gather(*(publisher() for _ in range(CLIENTS)))
    return sum(counts) / PROBE_SECONDS


@asynccontextmanager
async def websocket_messages(url: str) -> AsyncIterator[AsyncIterator[tuple[float, Any]]]:
    """A Source: subscribed once the welcome frame came."""
    async with connect(url, open_timeout=30, max_size=None) as ws:
        welcome = json.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"expected a welcome frame, got {welcome}")
        yield _message_frames(ws)


async def _message_frames(ws: ClientConnection) -> AsyncIterator[tuple[float, Any]]:
    async for raw in ws:
        received = time.time()  # before parsing: the frame is here
        frame = json.loads(raw)
        if frame.get("type") != "message":
            raise RuntimeError(f"unexpected frame: {frame}")
        yield received, frame["payload"]


def _ws_url(base: str, subscriber: str) -> str:
    query = urlencode(
        {"subscriber": subscriber, "start": "latest", "ack": "auto", "prefetch": PREFETCH}
    )
    return f"{base.replace('http://', 'ws://', 1)}/ws/topics/{TOPIC}?{query}"


async def measure_pgqueue(dsn: str, plan: Plan, console: Console) -> dict[str, Any]:
    async with pgqueue_server(dsn, SERVER_LOG) as base, pgqueue.connect(dsn) as q:
        await _create_topics(base, [TOPIC, PROBE_TOPIC])
        rate, max_rate, rate_source = plan.rate, plan.max_rate, "--rate"
        if rate is None:
            if max_rate is None:
                console.print(
                    f"pgqueue: probing the max publish rate ({CLIENTS} tasks, closed loop, "
                    f"{PROBE_SECONDS:.0f} s after {PROBE_WARMUP:.0f} s) …"
                )
                max_rate, rate_source = await probe_max_rate(q), "probed"
            else:
                rate_source = "--max-rate"
            rate = max_rate * RATE_FRACTION
        console.print(
            f"pgqueue: max publish rate {_rate(max_rate)}, open loop at {rate:,.0f} msg/s"
        )
        repetitions = []
        for rep in range(1, plan.repeat + 1):
            subscriber = f"r3-{rep}-{uuid.uuid4().hex[:8]}"
            console.print(
                f"pgqueue: rep {rep}/{plan.repeat}: {plan.warmup} s warm-up + "
                f"{plan.seconds} s at {rate:,.0f} msg/s, subscriber {subscriber} …"
            )

            async def publish(payload: Payload) -> int:
                return await q.publish(TOPIC, payload)

            source = _websocket_source(_ws_url(base, subscriber))
            async with common.WalMeter(dsn) as meter:
                result = await open_loop(
                    publish, source, rate=rate, warmup=plan.warmup, seconds=plan.seconds
                )
            result["wal"] = meter.figures(
                result["published"],
                per="publish",
                messages=result["published"],
                note="open loop (warm-up included) and drain; includes the server's claim and "
                "ack commits",
            )
            result["subscriber"] = subscriber
            # Lost or late? Unacked messages are still queued (claimed ones included, and so
            # the last batch the server sent but had not acked yet when the receiver stopped).
            stats = await q.subscriber_stats(TOPIC, subscriber)
            result["extra"] = {"unacked at stop": sum(x.lag for x in stats)}
            repetitions.append(result)
            # Named subscribers outlive their connection; one left behind is one more for
            # the next repetition's publishes.
            await q.unsubscribe(TOPIC, subscriber)
        console.print("pgqueue: durability check (1 connection publishing sequentially) …")
        check = await sequential_check(dsn)
    durability = common.durability_verdict([check.wal])
    settings = await common.server_settings(dsn)
    return {
        "durability": _postgres_durability(settings)
        + (
            f"; checked: {durability['name']} {durability['value'].min:.2f}"
            if durability["met"]
            else f"; NOT DURABLE: {durability['reason']}"
        ),
        "durable": bool(durability["met"]),
        "durability_check": durability,
        "durability_check_phase": check.wal,
        "wal_accounting": {"caveat": common.WAL_CAVEAT, "per": "per acknowledged publish"},
        "max_rate": max_rate,
        "rate_source": rate_source,
        "rate": rate,
        "publisher": "pgqueue library Queue.publish (publish batching as configured), "
        "in the benchmark process",
        "receiver": f"WebSocket /ws/topics/{TOPIC}?start=latest&ack=auto&prefetch={PREFETCH} "
        "(websockets client, permessage-deflate as negotiated), in a separate process",
        "server": f"pgqueue serve subprocess, PGQUEUE_POLL_INTERVAL={POLL_INTERVAL}",
        "server_log": SERVER_LOG,
        "repetitions": repetitions,
    }


def _websocket_source(url: str) -> Source:
    # A partial of a module-level function: it goes to the receiver process by pickle.
    return functools.partial(websocket_messages, url)


def _rate(value: float | None) -> str:
    return "not measured" if value is None else f"{value:,.0f} msg/s"


# -- shared by the reference systems --------------------------------------------------------


async def target_rate(
    label: str, plan: Plan, console: Console, publish: Publish
) -> tuple[float, float | None, str]:
    """(rate, max rate, how the rate was chosen), as pgqueue's: the probe publishes with
    `publish` (to a stream of its own, out of the measured one)."""
    rate, max_rate, rate_source = plan.rate, plan.max_rate, "--rate"
    if rate is None:
        if max_rate is None:
            console.print(
                f"{label}: probing the max publish rate ({CLIENTS} tasks, closed loop, "
                f"{PROBE_SECONDS:.0f} s after {PROBE_WARMUP:.0f} s) …"
            )
            max_rate, rate_source = await probe_publish_rate(publish), "probed"
        else:
            rate_source = "--max-rate"
        rate = max_rate * RATE_FRACTION
    console.print(f"{label}: max publish rate {_rate(max_rate)}, open loop at {rate:,.0f} msg/s")
    return rate, max_rate, rate_source


async def repetitions(
    label: str,
    plan: Plan,
    console: Console,
    *,
    rate: float,
    publish: Publish,
    source: Callable[[str], Source],
    after: Callable[[str], Awaitable[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """plan.repeat open loops, each with a fresh subscriber (consumer group, consumer):
    `source(name)` subscribes it in the receiver process; `after(name)` returns what is left
    unacknowledged (the "extra" figures) and removes it."""
    results = []
    for rep in range(1, plan.repeat + 1):
        subscriber = f"r3-{rep}-{uuid.uuid4().hex[:8]}"
        console.print(
            f"{label}: rep {rep}/{plan.repeat}: {plan.warmup} s warm-up + "
            f"{plan.seconds} s at {rate:,.0f} msg/s, subscriber {subscriber} …"
        )
        try:
            result = await open_loop(
                publish, source(subscriber), rate=rate, warmup=plan.warmup, seconds=plan.seconds
            )
            result["subscriber"] = subscriber
        finally:
            extra = await after(subscriber)
        result["extra"] = extra
        results.append(result)
    return results


def _payload(payload: Payload) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


# -- Redis Streams (reference) --------------------------------------------------------------

REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_STREAM = "pgqueue-bench:r3:lat"
REDIS_PROBE_STREAM = "pgqueue-bench:r3:probe"
REDIS_CONSUMER = "r3"
REDIS_BLOCK_MS = 1000  # XREADGROUP BLOCK: a new message ends the wait at once
REDIS_POOL = 100  # publisher connections; more concurrent publishes wait for one
# Every write fsynced before the reply. Set in this order, restored in the reverse one.
REDIS_DURABLE = {"appendfsync": "always", "appendonly": "yes"}
REDIS_AOF_TIMEOUT = 120.0  # for the AOF rewrite that `appendonly yes` starts


def _redis_url() -> str:
    return os.environ.get("PGQUEUE_BENCH_REDIS_URL", REDIS_URL)


async def _redis_config(client: aioredis.Redis) -> dict[str, str]:
    config: dict[str, str] = {}
    for name in REDIS_DURABLE:
        reply: dict[Any, Any] = await client.config_get(name)
        config[name] = _text(reply.get(name, reply.get(name.encode(), "?")))
    return config


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _redis_persistence(client: aioredis.Redis) -> dict[str, Any]:
    info: dict[str, Any] = await client.info("persistence")
    return info


async def _redis_wait_aof(client: aioredis.Redis) -> None:
    """Until the AOF that `appendonly yes` turned on is written (the server rewrites the
    data set into it first) and writes to it succeed."""
    deadline = time.monotonic() + REDIS_AOF_TIMEOUT
    while True:
        info = await _redis_persistence(client)
        if (
            int(info.get("aof_enabled", 0)) == 1
            and int(info.get("aof_rewrite_in_progress", 1)) == 0
            and int(info.get("aof_rewrite_scheduled", 1)) == 0
        ):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the AOF rewrite did not finish within {REDIS_AOF_TIMEOUT:.0f} s")
        await asyncio.sleep(0.2)
    for key in ("aof_last_bgrewrite_status", "aof_last_write_status"):
        if _text(info.get(key, "ok")) != "ok":
            raise RuntimeError(f"{key} is {info.get(key)!r}")


@asynccontextmanager
async def redis_durable(client: aioredis.Redis, console: Console) -> AsyncIterator[dict[str, Any]]:
    """appendonly yes + appendfsync always for the block, then the previous values back.
    Yields the durability record; "durable" is False (with the "problems") when the settings
    could not be made, or were not in effect at the start and the end of the block."""
    previous = await _redis_config(client)
    state: dict[str, Any] = {
        "requested": dict(REDIS_DURABLE),
        "previous": previous,
        "problems": [],
    }
    try:
        try:
            for name, value in REDIS_DURABLE.items():
                await client.config_set(name, value)
            await _redis_wait_aof(client)
        except Exception as error:
            state["problems"].append(f"could not turn on AOF fsync=always: {error!r}")
        state["at_start"] = await _redis_config(client)
        if state["at_start"] != REDIS_DURABLE:
            state["problems"].append(f"in effect at the start: {state['at_start']}")
        state["durable"] = not state["problems"]
        if not state["durable"]:
            console.print(f"[red]redis: NOT durable: {'; '.join(state['problems'])}[/]")
        yield state
        state["at_end"] = await _redis_config(client)
        if state["at_end"] != REDIS_DURABLE:
            state["problems"].append(f"changed during the run, at the end: {state['at_end']}")
            state["durable"] = False
    finally:
        try:
            for name in reversed(REDIS_DURABLE):
                await client.config_set(name, previous[name])
            state["restored"] = await _redis_config(client)
        except Exception as error:
            state["restored"] = f"FAILED: {error!r}"
            console.print(f"[red]redis: could not restore {previous}: {error!r}[/]")


@asynccontextmanager
async def redis_messages(
    url: str, stream: str, group: str
) -> AsyncIterator[AsyncIterator[tuple[float, Any]]]:
    """A Source: subscribed once the consumer group exists at the stream's end."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        await client.xgroup_create(stream, group, id="$", mkstream=True)
        yield _redis_entries(client, stream, group)
    finally:
        await client.aclose()


async def _redis_entries(
    client: aioredis.Redis, stream: str, group: str
) -> AsyncIterator[tuple[float, Any]]:
    task = asyncio.current_task()
    while True:
        reply: Any = await client.xreadgroup(
            group, REDIS_CONSUMER, {stream: ">"}, count=PREFETCH, block=REDIS_BLOCK_MS
        )
        received = time.time()  # before parsing: the batch is here
        _raise_if_cancelling(task)
        if not reply:
            continue
        # [[stream, [(id, {field: value}), …]]]
        [(_, entries)] = reply
        await client.xack(stream, group, *(entry_id for entry_id, _ in entries))
        _raise_if_cancelling(task)
        for _, fields in entries:
            yield received, json.loads(fields[b"data"])


def _raise_if_cancelling(task: asyncio.Task[Any] | None) -> None:
    """redis-py (seen with 8.1 on Python 3.11) can return a reply normally although the task
    was cancelled while the reply came in, and the reader would then never stop: carry the
    cancellation on."""
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _redis_source(url: str, group: str) -> Source:
    return functools.partial(redis_messages, url, REDIS_STREAM, group)


async def measure_redis(dsn: str, plan: Plan, console: Console) -> dict[str, Any]:
    del dsn  # not a PostgreSQL system
    import redis.asyncio as aioredis

    url = _redis_url()
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=REDIS_POOL, timeout=None)
    client = aioredis.Redis(connection_pool=pool)
    try:
        server = await client.info("server")
        await client.delete(REDIS_STREAM, REDIS_PROBE_STREAM)
        async with redis_durable(client, console) as durability:

            async def probe(payload: Payload) -> object:
                return await client.xadd(REDIS_PROBE_STREAM, {"data": _payload(payload)})

            async def publish(payload: Payload) -> object:
                return await client.xadd(REDIS_STREAM, {"data": _payload(payload)})

            async def after(group: str) -> dict[str, Any]:
                pending = await client.xpending(REDIS_STREAM, group)
                await client.xgroup_destroy(REDIS_STREAM, group)
                return {"unacked at stop": int(pending["pending"])}

            rate, max_rate, rate_source = await target_rate("redis", plan, console, probe)
            await client.delete(REDIS_PROBE_STREAM)
            reps = await repetitions(
                "redis",
                plan,
                console,
                rate=rate,
                publish=publish,
                source=functools.partial(_redis_source, url),
                after=after,
            )
        await client.delete(REDIS_STREAM, REDIS_PROBE_STREAM)
    finally:
        await client.aclose()
        await pool.aclose()
    version = _text(server.get("redis_version", "?"))
    if durability["durable"]:
        text = "AOF appendonly=yes, appendfsync=always: fsync before each reply"
    else:
        text = "NOT DURABLE: " + "; ".join(durability["problems"])
    return {
        "max_rate": max_rate,
        "rate_source": rate_source,
        "rate": rate,
        "durability": text,
        "durable": durability["durable"],
        "durability_detail": durability,
        "publisher": f"redis-py asyncio XADD {REDIS_STREAM} (one field, the JSON payload), "
        f"a blocking pool of up to {REDIS_POOL} connections, in the benchmark process",
        "receiver": f"XREADGROUP COUNT {PREFETCH} BLOCK {REDIS_BLOCK_MS} in a consumer group "
        "created at $, XACK of each batch after its receive time, in a separate process",
        "server": f"Redis {version} at {url}; appendonly/appendfsync restored to "
        f"{durability.get('restored')}",
        "repetitions": reps,
    }


# -- NATS JetStream (reference) -------------------------------------------------------------

NATS_URL = "nats://127.0.0.1:4222"
NATS_STREAM = "PGQUEUE_BENCH_R3"
NATS_SUBJECT = "pgqueue-bench.r3.lat"
NATS_PROBE_STREAM = "PGQUEUE_BENCH_R3_PROBE"
NATS_PROBE_SUBJECT = "pgqueue-bench.r3.probe"
NATS_DURABILITY = (
    "JetStream file storage, 1 replica, default sync_interval: fsync at the server's interval "
    "(2 min by default), not per message"
)


def _nats_url() -> str:
    return os.environ.get("PGQUEUE_BENCH_NATS_URL", NATS_URL)


async def _nats_streams(js: JetStreamContext) -> dict[str, Any]:
    """Creates the measured and the probe stream afresh; returns the measured one's config."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    created: dict[str, dict[str, Any]] = {}
    for name, subject in ((NATS_STREAM, NATS_SUBJECT), (NATS_PROBE_STREAM, NATS_PROBE_SUBJECT)):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
        info = await js.add_stream(
            StreamConfig(name=name, subjects=[subject], storage=StorageType.FILE, num_replicas=1)
        )
        created[name] = info.config.as_dict()
    return created[NATS_STREAM]


async def _nats_delete_streams(js: JetStreamContext) -> None:
    from nats.js.errors import NotFoundError

    for name in (NATS_STREAM, NATS_PROBE_STREAM):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)


@asynccontextmanager
async def nats_messages(
    url: str, stream: str, subject: str, durable: str
) -> AsyncIterator[AsyncIterator[tuple[float, Any]]]:
    """A Source: subscribed once the push consumer (deliver new) exists."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(url, name="bench-r3-receiver")
    try:
        sub = await nc.jetstream().subscribe(
            subject,
            durable=durable,
            stream=stream,
            manual_ack=True,
            deliver_policy=DeliverPolicy.NEW,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=PREFETCH),
        )
        yield _nats_entries(sub.messages)
    finally:
        await nc.close()


async def _nats_entries(messages: AsyncIterator[Any]) -> AsyncIterator[tuple[float, Any]]:
    async for msg in messages:
        received = time.time()  # before parsing: the message is here
        await msg.ack()
        yield received, json.loads(msg.data)


def _nats_source(url: str, durable: str) -> Source:
    return functools.partial(nats_messages, url, NATS_STREAM, NATS_SUBJECT, durable)


async def measure_nats(dsn: str, plan: Plan, console: Console) -> dict[str, Any]:
    del dsn  # not a PostgreSQL system
    import nats

    url = _nats_url()
    nc = await nats.connect(url, name="bench-r3-publisher")
    try:
        js = nc.jetstream()
        stream_config = await _nats_streams(js)
        try:

            async def probe(payload: Payload) -> object:
                return await js.publish(NATS_PROBE_SUBJECT, _payload(payload))

            async def publish(payload: Payload) -> object:
                return await js.publish(NATS_SUBJECT, _payload(payload))

            async def after(durable: str) -> dict[str, Any]:
                info = await js.consumer_info(NATS_STREAM, durable)
                await js.delete_consumer(NATS_STREAM, durable)
                return {"unacked at stop": (info.num_ack_pending or 0) + (info.num_pending or 0)}

            rate, max_rate, rate_source = await target_rate("nats", plan, console, probe)
            reps = await repetitions(
                "nats",
                plan,
                console,
                rate=rate,
                publish=publish,
                source=functools.partial(_nats_source, url),
                after=after,
            )
        finally:
            await _nats_delete_streams(js)
        server = nc.connected_server_version
        version = f"{server.major}.{server.minor}.{server.patch}"
    finally:
        await nc.close()
    return {
        "max_rate": max_rate,
        "rate_source": rate_source,
        "rate": rate,
        "durability": NATS_DURABILITY,
        "durable": False,  # acknowledged before fsync
        "durability_detail": {"stream": stream_config},
        "publisher": f"nats-py js.publish {NATS_SUBJECT} (awaits the PubAck), one connection, "
        "in the benchmark process",
        "receiver": f"durable push consumer, deliver new, explicit ack of each message, "
        f"max_ack_pending={PREFETCH}, in a separate process",
        "server": f"nats-server {version} at {url}, stream {NATS_STREAM} (deleted afterwards)",
        "repetitions": reps,
    }


SYSTEMS: tuple[System, ...] = (
    System(
        "r3",
        "pgqueue",
        "pgqueue: library publish → WebSocket push (ack=auto)",
        Goal(p50_ms=5.0, p99_ms=20.0),
        measure_pgqueue,
        database=True,
    ),
    System(
        "r3-redis",
        "redis",
        "Redis Streams: XADD → XREADGROUP BLOCK (consumer group, XACK)",
        None,
        measure_redis,
    ),
    System(
        "r3-nats",
        "nats",
        "NATS JetStream: js.publish (awaits PubAck) → push consumer (explicit ack)",
        None,
        measure_nats,
    ),
)
SYSTEM_NAMES = tuple(system.name for system in SYSTEMS)


def select_systems(names: Sequence[str]) -> tuple[System, ...]:
    """The systems named, in the order given (each once)."""
    by_name = {system.name: system for system in SYSTEMS}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(
            f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEM_NAMES)}"
        )
    if not names:
        raise ValueError(f"no system given; choose from {', '.join(SYSTEM_NAMES)}")
    return tuple(by_name[name] for name in dict.fromkeys(names))


# -- the run --------------------------------------------------------------------------------


def _summarize(system: System, measured: dict[str, Any]) -> dict[str, Any]:
    if "error" in measured:
        return {
            "id": system.id,
            "system": system.name,
            "what": system.what,
            "error": measured["error"],
            "goal": None,
            "met": None,
        }
    repetitions = measured["repetitions"]
    latency = {
        stat: common.summarize([rep["latency_ms"][stat] for rep in repetitions])
        for stat in STATS
        if all(stat in rep["latency_ms"] for rep in repetitions)
    }
    row: dict[str, Any] = {
        "id": system.id,
        "system": system.name,
        "what": system.what,
        "durability": measured["durability"],
        "durable": measured["durable"],
        "rate": measured["rate"],
        "max_rate": measured["max_rate"],
        "latency_ms": latency,
        "rate_achieved": common.summarize([rep["rate_achieved"] or 0.0 for rep in repetitions]),
        "publish_ack_ms": {
            stat: common.summarize([rep["publish_ack_ms"][stat] for rep in repetitions])
            for stat in ("p50", "p99")
            if all(stat in rep["publish_ack_ms"] for rep in repetitions)
        },
        "lost": sum(rep["lost"] for rep in repetitions),
        "duplicates": sum(rep["duplicates"] for rep in repetitions),
        "publish_errors": sum(rep["publish_errors"] for rep in repetitions),
        "fell_behind": sum(_fell_behind(rep) for rep in repetitions),  # repetitions
        "goal": None,
        "met": None,
    }
    if all("wal" in rep for rep in repetitions):
        row["wal"] = {
            "pgqueue": common.wal_summary([rep["wal"] for rep in repetitions]),
            "pgqueue_per": "publish",
            "baseline": None,
            "baseline_per": None,
        }
    if "durability_check" in measured:
        row["durability_check"] = measured["durability_check"]
        common.mark_not_durable([row], measured["durability_check"])
    if system.goal is not None and "p50" in latency and "p99" in latency:
        row["goal"] = {"p50_ms": system.goal.p50_ms, "p99_ms": system.goal.p99_ms}
        row["met"] = {
            "p50": latency["p50"].median <= system.goal.p50_ms,
            "p99": latency["p99"].median <= system.goal.p99_ms,
        }
    return row


def _postgres_durability(settings: dict[str, str]) -> str:
    return (
        f"PostgreSQL fsync={settings.get('fsync')}, "
        f"synchronous_commit={settings.get('synchronous_commit')}: "
        "WAL flushed before publish returns"
    )


async def _measure_on_bench_database(
    system: System, maintenance_dsn: str, plan: Plan, *, keep_db: bool, console: Console
) -> tuple[dict[str, str], dict[str, Any]]:
    """(server settings, measured) on a fresh bench database, dropped afterwards."""
    console.print(f"creating and migrating database {common.BENCH_DATABASE} …")
    dsn = await common.create_bench_database(maintenance_dsn)
    try:
        settings = await common.server_settings(dsn)
        problems = common.durability_problems(settings)
        if problems:
            raise SystemExit(
                "refusing to benchmark with lowered durability: " + "; ".join(problems)
            )
        measured = await system.measure(dsn, plan, console)
    finally:
        if not keep_db:
            await common.drop_bench_database(maintenance_dsn)
    # run() refuses lowered durability, so a pgqueue row is always durable.
    measured.setdefault("durability", _postgres_durability(settings))
    measured.setdefault("durable", True)
    return settings, measured


async def run(
    maintenance_dsn: str,
    plan: Plan,
    *,
    systems: Sequence[System] = SYSTEMS,
    keep_db: bool,
    console: Console,
) -> dict[str, Any]:
    """The systems in sequence. One that fails (its server is down, say) is recorded with
    its error and the others still run."""
    machine = common.machine_info()
    measured: dict[str, dict[str, Any]] = {}
    settings: dict[str, str] | None = None
    for system in systems:
        try:
            if system.database:
                settings, measured[system.id] = await _measure_on_bench_database(
                    system, maintenance_dsn, plan, keep_db=keep_db, console=console
                )
            else:
                measured[system.id] = await system.measure(maintenance_dsn, plan, console)
        except Exception as error:
            console.print(f"[red]{system.name} failed: {error!r}[/]")
            measured[system.id] = {"error": repr(error)}

    return {
        "benchmark": "r3",
        "config": {
            "seconds": plan.seconds,
            "repeat": plan.repeat,
            "warmup": plan.warmup,
            "rate": plan.rate,
            "max_rate": plan.max_rate,
            "rate_fraction": RATE_FRACTION,
            "probe_clients": CLIENTS,
            "probe_seconds": PROBE_SECONDS,
            "drain_seconds": DRAIN_SECONDS,
            "prefetch": PREFETCH,
            "systems": [system.name for system in systems],
            "histogram": f"HdrHistogram, µs, {HIST_LOWEST_US} µs–{HIST_HIGHEST_US // 10**6} s, "
            f"{HIST_DIGITS} significant digits",
        },
        "reportable": plan.repeat >= 3,
        "settings": settings,  # PostgreSQL's, when pgqueue ran
        "machine": machine,
        "systems": measured,
        "rows": [_summarize(system, measured[system.id]) for system in systems],
    }


# -- output ---------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ms_short(value: float) -> str:
    """At most 5 characters below 100 s."""
    return f"{value:.0f}" if value >= 100 else _ms(value)


def _count(value: float) -> str:
    return f"{value:,.0f}"


# (label, figure of a repetition or None, format) per line of a system's table
LINES: tuple[tuple[str, Callable[[dict[str, Any]], float | None], Callable[[float], str]], ...] = (
    ("rate achieved, msg/s", lambda rep: rep["rate_achieved"], _count),
    *(
        (f"latency {stat}, ms", lambda rep, stat=stat: rep["latency_ms"].get(stat), _ms)
        for stat in STATS
    ),
    # until the publish call returned: durable or not as the durability column says
    ("publish→ack p50, ms", lambda rep: rep["publish_ack_ms"].get("p50"), _ms),
    ("publish→ack p99, ms", lambda rep: rep["publish_ack_ms"].get("p99"), _ms),
    ("generator max lag, ms", lambda rep: rep["generator_max_lag_ms"], _ms),
    (f"lost (not in {DRAIN_SECONDS:.0f} s)", lambda rep: rep["lost"], _count),
    ("duplicates", lambda rep: rep["duplicates"], _count),
    ("publish errors", lambda rep: rep["publish_errors"], _count),
)


def _table(row: dict[str, Any], repetitions: list[dict[str, Any]]) -> Table:
    """One column per repetition: fits 80 columns (what a pipe or CI log gets) for 3."""
    table = Table(
        title=f"R3 {row['id']}: {row['what']}; latency from the intended send time",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("")
    for number in range(1, len(repetitions) + 1):
        table.add_column(f"rep {number}", justify="right")
    table.add_column("median", justify="right")
    table.add_column("min–max", justify="right")
    for label, figure, fmt in LINES:
        values = [figure(rep) for rep in repetitions]
        cells = [fmt(v) if v is not None else "–" for v in values]
        present = [v for v in values if v is not None]
        if present:
            summary = common.summarize(present)
            cells += [fmt(summary.median), f"{fmt(summary.min)}–{fmt(summary.max)}"]
        else:
            cells += ["–", "–"]
        table.add_row(label, *cells)
    return table


def _fell_behind(rep: dict[str, Any]) -> bool:
    achieved: float = rep["rate_achieved"] or 0.0
    target: float = rep["rate_target"]
    lag: float = rep["generator_max_lag_ms"]
    return achieved < FELL_BEHIND_RATE * target or lag > FELL_BEHIND_LAG_MS


def _goal_line(row: dict[str, Any]) -> str:
    if row["goal"] is None:
        return f"  {row['id']}: reference row, no goal"
    parts = []
    for stat in ("p50", "p99"):
        limit = row["goal"][f"{stat}_ms"]
        verdict = "[green]met[/]" if row["met"][stat] else "[red]not met[/]"
        parts.append(
            f"{stat} ≤ {limit:g} ms {verdict} (median {_ms(row['latency_ms'][stat].median)})"
        )
    return f"  {row['id']} goal: " + "; ".join(parts)


def summary_table(rows: Sequence[dict[str, Any]], repeat: int) -> Table:
    """One row per system, latency medians of the repetitions (min–max are in the system's
    own table); narrow enough for 80 columns. The durability statements follow it."""
    table = Table(
        title=f"R3: publish → receive latency, ms, median of {repeat} rep(s), "
        "at 50 % of each system's max publish rate",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("system", no_wrap=True)
    table.add_column("durable", no_wrap=True)
    for header in ("msg/s", *STATS, "lost", "dup"):
        table.add_column(header, justify="right", no_wrap=True)
    goals = []
    behind = False
    for row in rows:
        if "error" in row:
            table.add_row(row["system"], "[red]failed[/]", *["–"] * (len(STATS) + 3))
            continue
        if row["goal"] is not None:
            goals.append(
                f"{row['system']} goal p50 ≤ {row['goal']['p50_ms']:g} ms: "
                + ("[green]met[/]" if row["met"]["p50"] else "[red]not met[/]")
                + f", p99 ≤ {row['goal']['p99_ms']:g} ms: "
                + ("[green]met[/]" if row["met"]["p99"] else "[red]not met[/]")
            )
        behind = behind or bool(row["fell_behind"])
        table.add_row(
            row["system"],
            "yes" if row["durable"] else "[yellow]NO[/]",
            _count(row["rate"]) + ("[yellow]![/]" if row["fell_behind"] else ""),
            *(
                _ms_short(row["latency_ms"][stat].median) if stat in row["latency_ms"] else "–"
                for stat in STATS
            ),
            _count(row["lost"]),
            _count(row["duplicates"]),
        )
    notes = [*goals, "the others are reference rows"]
    if behind:
        notes.append("[yellow]![/] the open loop fell behind in some repetition")
    table.caption = "; ".join(notes)
    return table


def render(results: dict[str, Any], console: Console) -> None:
    for row in results["rows"]:
        measured = results["systems"][row["id"]]
        if "error" in row:
            console.print(f"[red]R3 {row['id']} ({row['system']}) failed: {row['error']}[/]")
            continue
        repetitions = measured["repetitions"]
        console.print(_table(row, repetitions))
        console.print(_goal_line(row))
        if measured["rate_source"] == "--rate":
            how = "given by --rate"
        else:
            how = f"{RATE_FRACTION:.0%} of the max publish rate {_rate(measured['max_rate'])}"
            if measured["rate_source"] == "probed":
                how += f" ({CLIENTS} tasks, closed loop, {PROBE_SECONDS:.0f} s)"
            else:
                how += " (--max-rate)"
        console.print(f"  rate: {measured['rate']:,.0f} msg/s, {how}")
        wal = (row.get("wal") or {}).get("pgqueue")
        if wal is not None:
            console.print(
                f"  WAL flushes per acknowledged publish: {wal.median:.2f} "
                f"({wal.min:.2f}–{wal.max:.2f}; the server's claim and ack commits included; "
                "cluster-wide, an upper bound)"
            )
        for number, rep in enumerate(repetitions, start=1):
            worst = max(rep["timeline"], key=lambda s: s["max_ms"], default=None)
            if worst is not None:
                console.print(
                    f"  rep {number}: worst second {worst['second']} of {len(rep['timeline'])} "
                    f"(p50 {_ms(worst['p50_ms'])}, max {_ms(worst['max_ms'])} ms)"
                    + "".join(f"; {key} {value}" for key, value in rep.get("extra", {}).items())
                )
            if _fell_behind(rep):
                console.print(
                    f"  [yellow]rep {number}: the open loop fell behind (achieved "
                    f"{_count(rep['rate_achieved'] or 0.0)} of {_count(rep['rate_target'])} "
                    f"msg/s, generator max lag {_ms(rep['generator_max_lag_ms'])} ms): its "
                    "latencies include the publishing process's own backlog (CPU?)[/]"
                )
        console.print(f"  publisher: {measured['publisher']}")
        console.print(f"  receiver: {measured['receiver']}")
        log = f"; log {measured['server_log']}" if measured.get("server_log") else ""
        console.print(f"  server: {measured['server']}{log}")
    config = results["config"]
    console.print(summary_table(results["rows"], config["repeat"]))
    for row in results["rows"]:
        if "error" not in row:
            console.print(f"  durability, {row['system']}: {row['durability']}")
    if results["settings"] is not None:
        console.print(f"PostgreSQL: {common.settings_line(results['settings'])}")
    console.print(
        f"{config['repeat']} repetition(s) of {config['seconds']} s after {config['warmup']} s "
        f"warm-up, {config['drain_seconds']:.0f} s to drain; {config['histogram']}; "
        f"load average at start {results['machine']['loadavg_at_start'][0]:.2f}"
    )
    if not results["reportable"]:
        console.print("[yellow]fewer than 3 repetitions: a smoke run, not a reportable figure[/]")


def main(
    maintenance_dsn: str,
    *,
    systems: Sequence[str] = SYSTEM_NAMES,
    seconds: int,
    repeat: int,
    warmup: int,
    rate: float | None,
    max_rate: float | None,
    keep_db: bool,
    output: Path | None,
) -> None:
    try:
        selected = select_systems(systems)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    plan = Plan(seconds=seconds, repeat=repeat, warmup=warmup, rate=rate, max_rate=max_rate)
    results = common.run_and_save(
        "r3",
        lambda console: run(
            maintenance_dsn, plan, systems=selected, keep_db=keep_db, console=console
        ),
        render,
        output,
    )
    failed = [row["system"] for row in results["rows"] if "error" in row]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")
