"""Rows R1a and R1b: publishing throughput against pgbench inserting the same payload.

    R1a  publish, 1 message per call, 4 publishers   baseline: pgbench one-row INSERT   goal >= 0.7
    R1b  publish_many, 100 messages per call          baseline: pgbench 100-row INSERT   goal >= 0.5

R1a is measured twice: "r1a" is 4 asyncio tasks sharing one Queue in this process (how an
application publishes), "r1a-procs" is 4 processes with a Queue each (the shape pgbench has:
one client-side CPU per publisher is not a bottleneck there, and the GIL is not one here).

The phases of a repetition alternate baselines and pgqueue so that drift on a shared machine
lands on both sides of a ratio.

Every phase records the cluster's WAL writes and flushes over it (common.WalMeter): flushes per
acknowledged publish call on pgqueue's side, per commit on pgbench's. Each repetition ends with
a short durability check ("sequential"): one connection, Queue.publish without batching (one
CALL pgqueue.publish_and_commit per message), one message at a time. Such a publisher needs a
flush per publish (see common.durability_verdict); should any repetition show fewer than 0.95,
every row of the run is marked "not durable: not a result".
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import queue
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import pgqueue
from bench import common

CLIENTS = 4
PGBENCH_JOBS = 2  # the plan's `-j 2`: one pgbench thread per core of the reference machine
BATCH = 100
TOPIC = "bench"

# Fixed, 120 bytes. It goes verbatim into the pgbench scripts as a SQL literal, so: ASCII, no
# single quote, and no value starting with a letter right after a colon (no true/false/null),
# which pgbench would take for a `:variable`.
PAYLOAD: dict[str, Any] = {
    "event": "order.created",
    "order_id": 48213377,
    "customer": "c-0042",
    "amount_cents": 129900,
    "currency": "EUR",
    "channel": "web",
}
# The same text pgqueue's codec sends (compact separators), so both sides store equal jsonb.
PAYLOAD_JSON = json.dumps(PAYLOAD, separators=(",", ":"))
if "'" in PAYLOAD_JSON or not PAYLOAD_JSON.isascii() or re.search(r":[A-Za-z_]", PAYLOAD_JSON):
    raise RuntimeError("PAYLOAD cannot go into a pgbench script as it is")

CREATE_PLAIN = "CREATE TABLE bench_plain (id bigserial PRIMARY KEY, payload jsonb)"
SCRIPT_ONE = f"INSERT INTO bench_plain(payload) VALUES ('{PAYLOAD_JSON}');\n"
SCRIPT_BATCH = (
    f"INSERT INTO bench_plain(payload) SELECT '{PAYLOAD_JSON}'::jsonb "
    f"FROM generate_series(1, {BATCH});\n"
)

# Generous: spawning a process and importing pgqueue takes a few seconds on a loaded machine.
BARRIER_TIMEOUT = 60.0
# The durability check: seconds of sequential publishing on a topic of its own.
CHECK_SECONDS = 2.0
CHECK_TOPIC = "durability-check"

T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    id: str
    what: str
    unit: str
    measured: str  # key of the pgqueue figure in a repetition
    baseline: str  # key of the baseline figure in the same repetition
    goal: float


PGBENCH_FLAGS = f"pgbench -n -M prepared -c {CLIENTS} -j {PGBENCH_JOBS}"
BASELINES = {
    "pgbench-1": f"one-row INSERT, {PGBENCH_FLAGS} (tps)",
    f"pgbench-{BATCH}": f"{BATCH}-row INSERT ... SELECT, {PGBENCH_FLAGS} (tps x {BATCH})",
}

ROWS = (
    Row("r1a", "publish, 1 msg/call, 4 tasks in 1 process", "msg/s", "r1a", "pgbench-1", 0.7),
    Row("r1a-procs", "publish, 1 msg/call, 4 processes", "msg/s", "r1a-procs", "pgbench-1", 0.7),
    Row(
        "r1b", f"publish_many, {BATCH} msg/call, 4 tasks", "rows/s", "r1b", f"pgbench-{BATCH}", 0.5
    ),
)


# -- pgqueue side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """What a publishing phase did. start and stop are on time.monotonic()'s clock, which every
    process of the machine shares; total counts warm-up and the calls that ended after stop."""

    rate: float
    start: float
    stop: float
    total: int
    calls: int  # publish calls answered, warm-up and late ones included (as total)


async def _publish_loop(
    q: pgqueue.Queue, batch: int, start: float, stop: float, topic: str = TOPIC
) -> tuple[int, int]:
    """Publishes back to back from now until `stop`; returns (messages whose call completed in
    [start, stop), all messages). Publishing before `start` is the warm-up: it fills the pool
    and the server's caches without a pause between warm-up and measurement."""
    messages = [PAYLOAD] * batch
    in_window = total = 0
    while True:
        if batch == 1:
            await q.publish(topic, PAYLOAD)
        else:
            await q.publish_many(topic, messages)
        total += batch
        now = time.monotonic()
        if now >= stop:
            return in_window, total
        if now >= start:
            in_window += batch


async def publish_for(
    dsn: str,
    *,
    batch: int,
    warmup: float,
    seconds: float,
    topic: str = TOPIC,
    tasks: int = CLIENTS,
) -> Window:
    """`tasks` tasks sharing one Queue (its pool) publish `batch` messages per call."""
    async with pgqueue.connect(dsn) as q:
        start = time.monotonic() + warmup
        stop = start + seconds
        counts = await asyncio.gather(
            *(_publish_loop(q, batch, start, stop, topic) for _ in range(tasks))
        )
    total = sum(total for _, total in counts)
    return Window(
        rate=sum(in_window for in_window, _ in counts) / seconds,
        start=start,
        stop=stop,
        total=total,
        calls=total // batch,
    )


async def measure_tasks(
    dsn: str,
    *,
    batch: int,
    warmup: float,
    seconds: float,
    topic: str = TOPIC,
    tasks: int = CLIENTS,
) -> float:
    """Messages/s of publish_for (R1a's figure with the defaults and batch 1)."""
    window = await publish_for(
        dsn, batch=batch, warmup=warmup, seconds=seconds, topic=topic, tasks=tasks
    )
    return window.rate


@dataclass(frozen=True)
class Metered:
    """A phase's figure with its WAL record (common.WalMeter.figures)."""

    value: float
    wal: dict[str, Any]


async def measure_tasks_metered(
    dsn: str,
    *,
    batch: int,
    warmup: float,
    seconds: float,
    topic: str = TOPIC,
    tasks: int = CLIENTS,
    note: str | None = None,
) -> Metered:
    """measure_tasks with the WAL flushes of the whole phase (warm-up included, so every
    publish call answered in it counts)."""
    async with common.WalMeter(dsn) as meter:
        window = await publish_for(
            dsn, batch=batch, warmup=warmup, seconds=seconds, topic=topic, tasks=tasks
        )
    return Metered(
        window.rate,
        meter.figures(window.calls, per="publish", messages=window.total, note=note),
    )


async def sequential_check(
    dsn: str, *, seconds: float = CHECK_SECONDS, topic: str = CHECK_TOPIC
) -> Metered:
    """The durability check's phase: one connection publishing one message at a time through
    Queue.publish with publish batching off, so every call is one CALL publish_and_commit;
    its figure is msg/s. Needs at least one flush per publish (common.durability_verdict)."""
    async with pgqueue.connect(dsn) as q:
        try:
            await q.create_topic(topic)
        except pgqueue.TopicExists:
            pass
    settings = pgqueue.Settings(publish_batching=False, pool_min_size=1, pool_max_size=1)
    async with common.WalMeter(dsn) as meter:
        async with pgqueue.connect(dsn, settings=settings) as q:
            count = 0
            began = time.monotonic()
            stop = began + seconds
            while time.monotonic() < stop:
                await q.publish(topic, PAYLOAD)
                count += 1
            elapsed = time.monotonic() - began
    return Metered(
        count / elapsed,
        meter.figures(
            count,
            per="publish",
            messages=count,
            note="durability check: 1 connection, sequential publish_and_commit",
        ),
    )


async def _process_main(
    dsn: str, batch: int, warmup: float, seconds: float, barrier: Barrier
) -> tuple[int, int]:
    async with pgqueue.connect(dsn) as q:
        # Every process starts its clock together, once all have connected.
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)
        start = time.monotonic() + warmup
        return await _publish_loop(q, batch, start, start + seconds)


def _process_worker(
    dsn: str,
    batch: int,
    warmup: float,
    seconds: float,
    barrier: Barrier,
    results: multiprocessing.Queue[tuple[str, Any]],
) -> None:
    try:
        count = asyncio.run(_process_main(dsn, batch, warmup, seconds, barrier))
    except BaseException as error:
        barrier.abort()  # so that the others do not wait out the timeout
        results.put(("error", repr(error)))
        raise
    results.put(("ok", count))


def measure_processes(dsn: str, *, batch: int, warmup: float, seconds: float) -> tuple[float, int]:
    """(messages/s, all messages published) of CLIENTS processes, each with its own Queue and
    one publishing task.

    Blocking: call it through asyncio.to_thread.
    """
    # spawn, not fork: a forked child would inherit the parent's event loop and connections.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(CLIENTS)
    results: multiprocessing.Queue[tuple[str, Any]] = context.Queue()
    processes = [
        context.Process(
            target=_process_worker,
            args=(dsn, batch, warmup, seconds, barrier, results),
            name=f"bench-publisher-{i}",
            daemon=True,
        )
        for i in range(CLIENTS)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + BARRIER_TIMEOUT + warmup + seconds + 30
    outcomes: list[tuple[str, Any]] = []
    try:
        for _ in processes:
            outcomes.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
    except queue.Empty:
        outcomes.append(("error", "a publisher process did not report in time"))
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()
    errors = [detail for status, detail in outcomes if status != "ok"]
    if errors:
        raise RuntimeError(f"publisher processes failed: {errors}")
    in_window = sum(int(counts[0]) for _, counts in outcomes)
    return in_window / seconds, sum(int(counts[1]) for _, counts in outcomes)


async def measure_processes_metered(
    dsn: str, *, batch: int, warmup: float, seconds: float
) -> Metered:
    """measure_processes with the WAL flushes of the whole phase (the processes have exited,
    so their sessions with them, when it is read)."""
    async with common.WalMeter(dsn) as meter:
        rate, total = await asyncio.to_thread(
            measure_processes, dsn, batch=batch, warmup=warmup, seconds=seconds
        )
    return Metered(rate, meter.figures(total // batch, per="publish", messages=total))


# -- baseline side --------------------------------------------------------------------------


async def measure_pgbench(
    pgbench: Path, dsn: str, script: Path, *, warmup: int, seconds: int, rows: int = 1
) -> Metered:
    """tps x `rows` (the rows each transaction inserts) of the script, with the WAL flushes
    of the measured run per commit; a separate short pgbench run first is the warm-up."""
    if warmup > 0:
        await common.run_pgbench(
            pgbench, dsn, script, clients=CLIENTS, jobs=PGBENCH_JOBS, seconds=warmup
        )
    async with common.WalMeter(dsn) as meter:
        tps, transactions = await common.run_pgbench_counted(
            pgbench, dsn, script, clients=CLIENTS, jobs=PGBENCH_JOBS, seconds=seconds
        )
    return Metered(
        tps * rows, meter.figures(transactions, per="commit", messages=transactions * rows)
    )


# -- the run --------------------------------------------------------------------------------


async def prepare(dsn: str) -> None:
    """The baseline's table and pgqueue's topic, once per run."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(CREATE_PLAIN)
    finally:
        await conn.close()
    async with pgqueue.connect(dsn) as q:
        try:
            await q.create_topic(TOPIC)
        except pgqueue.TopicExists:
            pass


@contextmanager
def _scripts() -> Iterator[dict[str, Path]]:
    with tempfile.TemporaryDirectory(prefix="pgqueue-bench-") as directory:
        paths = {
            "one": Path(directory) / "insert_one.sql",
            "batch": Path(directory) / "insert_batch.sql",
        }
        paths["one"].write_text(SCRIPT_ONE)
        paths["batch"].write_text(SCRIPT_BATCH)
        yield paths


async def _timed(
    progress: Progress,
    phase: TaskID,
    label: str,
    total: float,
    measure: Callable[[], Awaitable[T]],
) -> T:
    """Runs one phase while its bar follows the clock (the phases have no progress of their
    own to report)."""
    progress.reset(phase, total=total, description=label)
    began = time.monotonic()

    async def tick() -> None:
        while True:
            progress.update(phase, completed=min(total, time.monotonic() - began))
            await asyncio.sleep(0.5)

    ticker = asyncio.create_task(tick())
    try:
        return await measure()
    finally:
        ticker.cancel()
        progress.update(phase, completed=total)


async def run(
    maintenance_dsn: str,
    *,
    seconds: int,
    repeat: int,
    warmup: int,
    keep_db: bool,
    console: Console,
) -> dict[str, Any]:
    """Measures every phase `repeat` times; returns the results (also what goes to JSON)."""
    pgbench = common.find_pgbench()
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
        await prepare(dsn)
        repetitions = await _repetitions(
            pgbench, dsn, seconds=seconds, repeat=repeat, warmup=warmup, console=console
        )
    finally:
        if not keep_db:
            await common.drop_bench_database(maintenance_dsn)

    rows = [_summarize_row(row, repetitions) for row in ROWS]
    durability = common.durability_verdict([rep["wal"].get("sequential") for rep in repetitions])
    common.mark_not_durable(rows, durability)
    return {
        "benchmark": "r1",
        "config": {
            "seconds": seconds,
            "repeat": repeat,
            "warmup": warmup,
            "clients": CLIENTS,
            "pgbench_jobs": PGBENCH_JOBS,
            "batch": BATCH,
            "check_seconds": CHECK_SECONDS,
        },
        # Below 3 repetitions the plan does not accept the figures, nor without the check.
        "reportable": repeat >= 3 and durability["met"],
        "settings": settings,
        "machine": machine,
        "pgbench": {"path": str(pgbench), "version": common.tool_version(pgbench)},
        "baselines": BASELINES,
        "payload": PAYLOAD_JSON,
        "payload_bytes": len(PAYLOAD_JSON.encode()),
        "wal_accounting": {
            "caveat": common.WAL_CAVEAT,
            "per": "pgqueue: per acknowledged publish call (R1b: one publish_many of "
            f"{BATCH}); pgbench: per commit (pgbench-{BATCH}: one {BATCH}-row INSERT)",
        },
        "durability_check": durability,
        "repetitions": repetitions,
        "rows": rows,
    }


async def _repetitions(
    pgbench: Path, dsn: str, *, seconds: int, repeat: int, warmup: int, console: Console
) -> list[dict[str, Any]]:
    phase_time = float(warmup + seconds)
    repetitions: list[dict[str, Any]] = []
    # Few refreshes: the in-process publishers share the GIL with rich's refresh thread.
    with (
        _scripts() as scripts,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=2,
            transient=False,
        ) as progress,
    ):
        steps: list[tuple[str, str, float, Callable[[], Awaitable[Metered]]]] = [
            (
                "pgbench-1",
                "pgbench one-row INSERT",
                phase_time,
                lambda: measure_pgbench(
                    pgbench, dsn, scripts["one"], warmup=warmup, seconds=seconds
                ),
            ),
            (
                "r1a",
                "pgqueue publish, 4 tasks",
                phase_time,
                lambda: measure_tasks_metered(dsn, batch=1, warmup=warmup, seconds=seconds),
            ),
            (
                "r1a-procs",
                "pgqueue publish, 4 processes",
                phase_time,
                lambda: measure_processes_metered(dsn, batch=1, warmup=warmup, seconds=seconds),
            ),
            (
                f"pgbench-{BATCH}",
                f"pgbench {BATCH}-row INSERT",
                phase_time,
                lambda: measure_pgbench(
                    pgbench, dsn, scripts["batch"], warmup=warmup, seconds=seconds, rows=BATCH
                ),
            ),
            (
                "r1b",
                f"pgqueue publish_many x{BATCH}, 4 tasks",
                phase_time,
                lambda: measure_tasks_metered(dsn, batch=BATCH, warmup=warmup, seconds=seconds),
            ),
            (
                "sequential",
                "durability check: 1 connection, sequential publish",
                CHECK_SECONDS,
                lambda: sequential_check(dsn),
            ),
        ]
        overall = progress.add_task("all phases", total=repeat * len(steps))
        phase = progress.add_task("", total=phase_time)
        for rep in range(1, repeat + 1):
            figures: dict[str, Any] = {}
            wal: dict[str, Any] = {}
            for key, label, length, measure in steps:
                metered = await _timed(
                    progress, phase, f"rep {rep}/{repeat}: {label}", length, measure
                )
                figures[key] = metered.value
                wal[key] = metered.wal
                progress.advance(overall)
            figures["wal"] = wal
            repetitions.append(figures)
    return repetitions


def _summarize_row(row: Row, repetitions: list[dict[str, Any]]) -> dict[str, Any]:
    measured = [rep[row.measured] for rep in repetitions]
    baseline = [rep[row.baseline] for rep in repetitions]
    # The ratio of each repetition, not the ratio of medians: pairs measured side by side.
    ratios = [m / b for m, b in zip(measured, baseline, strict=True)]
    ratio = common.summarize(ratios)
    summary = {
        "id": row.id,
        "what": row.what,
        "unit": row.unit,
        "baseline_name": row.baseline,
        "pgqueue": common.summarize(measured),
        "baseline": common.summarize(baseline),
        "ratio": ratio,
        "goal": row.goal,
        "met": ratio.median >= row.goal,
    }
    wal = wal_row(row, repetitions)
    if wal is not None:
        summary["wal"] = wal
    return summary


def wal_row(row: Row, repetitions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Flushes per acknowledgement of both sides of a row over its repetitions, from the
    repetitions' "wal" records (None when the phases recorded none)."""
    if not all("wal" in rep for rep in repetitions):
        return None
    sides: dict[str, Any] = {}
    for side, key in (("pgqueue", row.measured), ("baseline", row.baseline)):
        records = [rep["wal"].get(key) for rep in repetitions]
        sides[side] = common.wal_summary(records)
        sides[f"{side}_per"] = records[0].get("per") if records[0] else None
    if sides["pgqueue"] is None and sides["baseline"] is None:
        return None
    return sides


def _flushes(row: dict[str, Any], side: str) -> str:
    """Flushes per acknowledgement, median (min–max), for the console tables."""
    wal = row.get("wal") or {}
    summary: common.Summary | None = wal.get(side)
    if summary is None:
        return "–"
    return f"{summary.median:.2f} ({summary.min:.2f}–{summary.max:.2f}) per {wal[side + '_per']}"


def render(results: dict[str, Any], console: Console) -> None:
    # No vertical borders: the table fits 80 columns, what a pipe or CI log gets.
    table = Table(title="R1: publish throughput, median of repetitions", box=box.SIMPLE_HEAD)
    table.add_column("row")
    for column in ("pgqueue", "baseline", "ratio", "min–max", "goal", "met"):
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
    for row in ROWS:
        console.print(f"  {row.id}: {row.what}; baseline {BASELINES[row.baseline]}")
    console.print(f"server: {common.settings_line(results['settings'])}")
    pgbench = results["pgbench"]
    config = results["config"]
    console.print(
        f"pgbench: {pgbench['version']} ({pgbench['path']}); payload "
        f"{results['payload_bytes']} bytes; {config['repeat']} repetition(s) of "
        f"{config['seconds']} s after {config['warmup']} s warm-up; "
        f"load average at start {results['machine']['loadavg_at_start'][0]:.2f}"
    )
    if not results["reportable"]:
        console.print("[yellow]fewer than 3 repetitions: a smoke run, not a reportable figure[/]")


def render_durability(results: dict[str, Any], console: Console) -> None:
    """WAL flushes per acknowledgement of each row's sides, and the durability check's verdict
    (rows that run it)."""
    table = Table(
        title="WAL flushes per acknowledged publish (call) / per baseline commit",
        caption="cluster-wide counters: an upper bound on each phase's own",
        box=box.SIMPLE_HEAD,
    )
    for column in ("row", "pgqueue", "baseline"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for row in results["rows"]:
        if "wal" in row:
            table.add_row(row["id"], _flushes(row, "pgqueue"), _flushes(row, "baseline"))
    console.print(table)
    check = results.get("durability_check")
    if check is None:
        return
    if check["met"]:
        value: common.Summary = check["value"]
        console.print(
            f"  durability check ({check['name']}): {value.min:.2f}–{value.max:.2f} "
            f"(goal {check['goal']}): [green]met[/]"
        )
    else:
        console.print(f"[red]  NOT DURABLE, NOT A RESULT: {check['reason']}[/]")


def main(
    maintenance_dsn: str,
    *,
    seconds: int,
    repeat: int,
    warmup: int,
    keep_db: bool,
    output: Path | None,
) -> None:
    common.run_and_save(
        "r1",
        lambda console: run(
            maintenance_dsn,
            seconds=seconds,
            repeat=repeat,
            warmup=warmup,
            keep_db=keep_db,
            console=console,
        ),
        render,
        output,
    )
