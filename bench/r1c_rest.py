"""Row R1c: REST publishing throughput against the library's, measured in the same run.

    R1c        POST /topics/{t}/messages, 1 msg/request          baseline: R1a   goal >= 0.3
    R1c-batch  POST /topics/{t}/messages/batch, 100 msg/request  baseline: R1b   goal >= 0.5

R1a and R1b here are the library's figures (Queue.publish, publish_many x100, 4 tasks), not the
pgbench baselines of R1.

Both sides have CLIENTS concurrent publishers in this process and the payload of R1: the
library side is R1's own measure_tasks, the REST side CLIENTS tasks sharing one aiohttp
session (one keep-alive connection each) against `pgqueue serve`, run as a subprocess on a
fresh bench database for the whole run. Request bodies are encoded once, so the client spends
its time on HTTP, not on JSON. Only 2xx answers count; any other stops the run.

The HTTP client shares this process's CPU with nothing else during its phase, but it is not
free, so each repetition also records
the cores this process used per phase ("<key>-cpu"): a REST figure limited by its client
shows up there.

The phases of a repetition alternate library and REST so that drift on a shared machine lands
on both sides of a ratio.

Every phase records the cluster's WAL writes and flushes over it (common.WalMeter), per
acknowledged publish call (a request on the REST side). The server's pool stays connected, so
each reading waits until its sessions have been idle long enough to have published their
counters (about 11 s a phase). Each repetition ends with a durability check through REST
("sequential-rest"): one connection POSTing one message at a time for a couple of seconds,
which needs a WAL flush per request (see common.durability_verdict); should any repetition
show fewer than 0.95, every row of the run is marked "not durable: not a result".
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench import common
from bench.r1_publish import (
    BATCH,
    CHECK_SECONDS,
    CLIENTS,
    PAYLOAD,
    TOPIC,
    Row,
    _summarize_row,
    _timed,
    publish_for,
    render_durability,
)
from bench.r3_latency import _create_topics, pgqueue_server

SINGLE_PATH = f"/topics/{TOPIC}/messages"
BATCH_PATH = f"/topics/{TOPIC}/messages/batch"
# Both bodies once, compact: what a client that has its JSON ready sends.
SINGLE_BODY = json.dumps({"payload": PAYLOAD}, separators=(",", ":")).encode()
BATCH_BODY = json.dumps(
    {"messages": [{"payload": PAYLOAD}] * BATCH}, separators=(",", ":")
).encode()
REQUEST_TIMEOUT = 30.0

ROWS = (
    Row("r1c", "REST publish, 1 msg/request, 4 clients", "msg/s", "r1c", "r1a", 0.3),
    Row(
        "r1c-batch",
        f"REST batch publish, {BATCH} msg/request, 4 clients",
        "msg/s",
        "r1c-batch",
        "r1b",
        0.5,
    ),
)
SIDES = {
    "r1a": "library Queue.publish, 4 tasks sharing one Queue",
    "r1b": f"library Queue.publish_many x{BATCH}, 4 tasks sharing one Queue",
    "r1c": f"POST {SINGLE_PATH}, 4 tasks sharing one aiohttp session",
    "r1c-batch": f"POST {BATCH_PATH} ({BATCH} messages), 4 tasks sharing one aiohttp session",
}


class RestPublishFailed(RuntimeError):
    """The server answered a publish with something other than 2xx."""


# -- REST side ------------------------------------------------------------------------------


async def _post(http: aiohttp.ClientSession, path: str, body: bytes) -> None:
    async with http.post(path, data=body, headers={"content-type": "application/json"}) as response:
        if response.status >= 300:
            text = await response.text()
            raise RestPublishFailed(f"POST {path} answered {response.status}: {text[:500]}")
        await response.read()


async def _post_loop(
    http: aiohttp.ClientSession, path: str, body: bytes, batch: int, start: float, stop: float
) -> tuple[int, int]:
    """Posts back to back from now until `stop`; returns (the messages whose request completed
    in [start, stop), as R1's _publish_loop counts them; all requests answered)."""
    loop = asyncio.get_running_loop()
    count = requests = 0
    while True:
        await _post(http, path, body)
        requests += 1
        now = loop.time()
        if now >= stop:
            return count, requests
        if now >= start:
            count += batch


async def measure_rest(
    base: str, *, batch: int, warmup: float, seconds: float
) -> tuple[float, int, int]:
    """(messages/s, requests answered, messages they carried) of CLIENTS tasks posting through
    one aiohttp session (its connection pool); the counts include warm-up and late requests.

    aiohttp, not httpx: httpx spent about 1.1 ms of CPU per request here, so the figure
    measured the client (a raw-socket client got twice as far against the same server).
    """
    path, body = (SINGLE_PATH, SINGLE_BODY) if batch == 1 else (BATCH_PATH, BATCH_BODY)
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(base_url=base, connector=connector, timeout=timeout) as http:
        start = asyncio.get_running_loop().time() + warmup
        try:
            # A TaskGroup, so one failed request stops the other publishers at once.
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(_post_loop(http, path, body, batch, start, start + seconds))
                    for _ in range(CLIENTS)
                ]
        except* RestPublishFailed as failed:
            raise failed.exceptions[0] from None
    requests = sum(task.result()[1] for task in tasks)
    return sum(task.result()[0] for task in tasks) / seconds, requests, requests * batch


async def measure_library(
    dsn: str, *, batch: int, warmup: float, seconds: float
) -> tuple[float, int, int]:
    """R1's measure_tasks as (messages/s, calls answered, messages), warm-up included."""
    window = await publish_for(dsn, batch=batch, warmup=warmup, seconds=seconds)
    return window.rate, window.calls, window.total


async def sequential_rest(base: str, *, seconds: float = CHECK_SECONDS) -> tuple[float, int, int]:
    """The durability check through REST: one connection POSTing one message at a time."""
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(base_url=base, connector=connector, timeout=timeout) as http:
        requests = 0
        began = time.monotonic()
        while time.monotonic() < began + seconds:
            await _post(http, SINGLE_PATH, SINGLE_BODY)
            requests += 1
        elapsed = time.monotonic() - began
    return requests / elapsed, requests, requests


@dataclass(frozen=True)
class Phase:
    value: float  # msg/s
    wal: dict[str, Any]  # common.WalMeter.figures
    cpu: float  # cores this process used while publishing


async def metered(
    dsn: str, measure: Callable[[], Awaitable[tuple[float, int, int]]], note: str | None = None
) -> Phase:
    """A phase under common.WalMeter, with the cores this process used while it published (the
    meter's waits for the sessions to settle left out)."""
    async with common.WalMeter(dsn) as meter:
        cpu, began = time.process_time(), time.monotonic()
        rate, calls, messages = await measure()
        cores = (time.process_time() - cpu) / (time.monotonic() - began)
    return Phase(rate, meter.figures(calls, per="publish", messages=messages, note=note), cores)


# -- the run --------------------------------------------------------------------------------


async def run(
    maintenance_dsn: str,
    *,
    seconds: int,
    repeat: int,
    warmup: int,
    keep_db: bool,
    console: Console,
    server_log: Path | None = None,
) -> dict[str, Any]:
    """Measures every phase `repeat` times; returns the results (also what goes to JSON).

    Args:
        server_log: where `pgqueue serve` writes its output; None: a temporary file.
    """
    machine = common.machine_info()
    console.print(f"creating and migrating database {common.BENCH_DATABASE} …")
    dsn = await common.create_bench_database(maintenance_dsn)
    try:
        settings = await common.server_settings(dsn)
        problems = common.durability_problems(settings)
        if problems:
            raise SystemExit(
                "refusing to benchmark with lowered durability: " + "; ".join(problems)
            )
        with tempfile.TemporaryDirectory(prefix="pgqueue-bench-") as directory:
            log_path = server_log or Path(directory) / "server.log"
            console.print(f"starting pgqueue serve (log: {log_path}) …")
            async with pgqueue_server(dsn, log_path) as base:
                await _create_topics(base, [TOPIC])
                try:
                    repetitions = await _repetitions(
                        dsn, base, seconds=seconds, repeat=repeat, warmup=warmup, console=console
                    )
                except RestPublishFailed as error:
                    raise SystemExit(f"REST publishing failed: {error}") from None
    finally:
        if not keep_db:
            await common.drop_bench_database(maintenance_dsn)

    rows = [_summarize_row(row, repetitions) for row in ROWS]
    durability = common.durability_verdict(
        [rep["wal"].get("sequential-rest") for rep in repetitions]
    )
    durability["name"] = "sequential REST publisher: WAL flushes per request"
    common.mark_not_durable(rows, durability)
    return {
        "benchmark": "r1c",
        "config": {
            "seconds": seconds,
            "repeat": repeat,
            "warmup": warmup,
            "clients": CLIENTS,
            "batch": BATCH,
            "check_seconds": CHECK_SECONDS,
        },
        # Below 3 repetitions the plan does not accept the figures, nor without the check.
        "reportable": repeat >= 3 and durability["met"],
        "settings": settings,
        "machine": machine,
        "sides": SIDES,
        "server": "pgqueue serve subprocess (one uvicorn worker), 127.0.0.1, no authentication",
        "client": f"aiohttp {aiohttp.__version__} ClientSession, {CLIENTS} keep-alive connections",
        "request_bytes": {"single": len(SINGLE_BODY), "batch": len(BATCH_BODY)},
        "wal_accounting": {
            "caveat": common.WAL_CAVEAT,
            "per": "per acknowledged publish call: one Queue.publish / publish_many, one REST "
            "request (R1c-batch: one request of 100)",
        },
        "durability_check": durability,
        "repetitions": repetitions,
        "rows": rows,
    }


async def _repetitions(
    dsn: str, base: str, *, seconds: int, repeat: int, warmup: int, console: Console
) -> list[dict[str, Any]]:
    phase_time = float(warmup + seconds)
    clock = {"warmup": warmup, "seconds": seconds}
    # Library and REST alternate, so drift on a shared machine lands on both sides.
    steps: list[tuple[str, str, float, Callable[[], Awaitable[tuple[float, int, int]]]]] = [
        ("r1a", "library publish", phase_time, partial(measure_library, dsn, batch=1, **clock)),
        ("r1c", "REST publish", phase_time, partial(measure_rest, base, batch=1, **clock)),
        (
            "r1b",
            f"library publish_many x{BATCH}",
            phase_time,
            partial(measure_library, dsn, batch=BATCH, **clock),
        ),
        (
            "r1c-batch",
            f"REST batch x{BATCH}",
            phase_time,
            partial(measure_rest, base, batch=BATCH, **clock),
        ),
        (
            "sequential-rest",
            "durability check: 1 connection, sequential POST",
            CHECK_SECONDS,
            partial(sequential_rest, base),
        ),
    ]
    notes = {"sequential-rest": "durability check: 1 connection, sequential POST"}
    repetitions: list[dict[str, Any]] = []
    # Few refreshes: the in-process publishers share the GIL with rich's refresh thread.
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        refresh_per_second=2,
    ) as progress:
        overall = progress.add_task("all phases", total=repeat * len(steps))
        phase = progress.add_task("", total=phase_time)
        for rep in range(1, repeat + 1):
            figures: dict[str, Any] = {}
            wal: dict[str, Any] = {}
            for key, label, length, measure in steps:
                result = await _timed(
                    progress,
                    phase,
                    f"rep {rep}/{repeat}: {label}",
                    length,
                    partial(metered, dsn, measure, notes.get(key)),
                )
                figures[key] = result.value
                # Both sides' publishers run in this process: what they cost it, in cores.
                figures[f"{key}-cpu"] = result.cpu
                wal[key] = result.wal
                progress.advance(overall)
            figures["wal"] = wal
            repetitions.append(figures)
    return repetitions


def render(results: dict[str, Any], console: Console) -> None:
    table = Table(title="R1c: REST vs library publish, median of repetitions", box=box.SIMPLE_HEAD)
    table.add_column("row")
    for column in ("REST", "library", "ratio", "min–max", "goal", "met"):
        table.add_column(column, justify="right")
    for row in results["rows"]:
        ratio: common.Summary = row["ratio"]
        table.add_row(
            row["id"],
            f"{row['pgqueue'].median:,.0f} {row['unit']}",
            f"{row['baseline'].median:,.0f} {row['unit']}",
            f"{ratio.median:.2f}",
            f"{ratio.min:.2f}–{ratio.max:.2f}",
            f"≥ {row['goal']}",
            "[red]NOT A RESULT[/]"
            if "not_a_result" in row
            else ("[green]yes[/]" if row["met"] else "[red]no[/]"),
        )
    console.print(table)
    render_durability(results, console)
    for key, what in results["sides"].items():
        cpu = statistics.median(rep[f"{key}-cpu"] for rep in results["repetitions"])
        console.print(f"  {key}: {what}; this process used {cpu:.2f} cores")
    config = results["config"]
    console.print(f"server: {common.settings_line(results['settings'])}")
    console.print(
        f"{config['repeat']} repetition(s) of {config['seconds']} s after {config['warmup']} s "
        f"warm-up; load average at start {results['machine']['loadavg_at_start'][0]:.2f}"
    )
    if not results["reportable"]:
        console.print("[yellow]fewer than 3 repetitions: a smoke run, not a reportable figure[/]")


def main(
    maintenance_dsn: str,
    *,
    seconds: int,
    repeat: int,
    warmup: int,
    keep_db: bool,
    output: Path | None,
) -> None:
    path = output or common.RESULTS_DIR / "r1c.json"
    common.run_and_save(
        "r1c",
        lambda console: run(
            maintenance_dsn,
            seconds=seconds,
            repeat=repeat,
            warmup=warmup,
            keep_db=keep_db,
            console=console,
            server_log=path.with_name(f"{path.stem}-server.log"),
        ),
        render,
        path,
    )
