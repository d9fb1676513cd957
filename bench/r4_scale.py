"""Row R4: publish and drain on a 10M-message log while an idle transaction holds xmin.

    R4  R1a (4 tasks, 1 msg/call) and R2a (drain 100k: claim 100 + ack, 4 consumers)
        on a database whose log holds 10M retained messages, with an idle-in-transaction
        session holding the xmin horizon for the whole run
        baseline: the same two phases on a clean database, in the same repetition
        goals: throughput >= 0.9, p99 <= 1.5x, dead tuples in the log ~ 0

Two databases live side by side: the clean one and the big one. Since PostgreSQL 14 an open
transaction holds back vacuum only in its own database, so the clean side really is clean while
the big side cannot remove a single dead tuple for the whole run: every claim and ack that
leaves one behind (deliveries, subscriber rows) shows up here as lost speed. The log itself is
insert-only, which the dead-tuple check at the end holds us to.

The backlog is built with the batch path first (not timed), as the plan asks. p99 is per call:
one publish, or one claim + ack round of a drain consumer.

The publish phases record the cluster's WAL writes and flushes (common.WalMeter), per
acknowledged publish. After the repetitions, R1's durability check (one connection publishing
sequentially, at least 0.95 flushes per publish) runs once on the clean database; should it
fail, every row is marked "not durable: not a result".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

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
from bench.r1_publish import (
    CLIENTS,
    PAYLOAD,
    Row,
    _summarize_row,
    _timed,
    render_durability,
    sequential_check,
)
from bench.r2_drain import BATCH, CONSUMERS, POOL_MAX_SIZE

TOPIC = "bench"
BIG_DATABASE = common.BENCH_DATABASE + "_big"
BUILD_CHUNK = 5_000  # messages per publish_batch call while building the backlog
BUILD_TASKS = 4
# "About zero": the log is insert-only, so anything but a handful means something updates it.
DEAD_LOG_TUPLES_OK = 1_000

ROWS = (
    Row("r4-publish", "R1a on a 10M log, xmin held", "msg/s", "big-publish", "clean-publish", 0.9),
    Row("r4-drain", "R2a on a 10M log, xmin held", "msg/s", "big-drain", "clean-drain", 0.9),
)
P99_GOAL = 1.5


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# -- building the big side ------------------------------------------------------------------


async def build_log(dsn: str, messages: int, progress: Progress, task: TaskID) -> float:
    """Publishes `messages` through the batch path; returns rows/s (for the record)."""
    progress.reset(task, total=messages, description=f"building a {messages:,}-message log")
    chunks = [min(BUILD_CHUNK, messages - start) for start in range(0, messages, BUILD_CHUNK)]
    began = time.perf_counter()
    async with pgqueue.connect(dsn) as q:

        async def worker() -> None:
            while chunks:
                size = chunks.pop()
                await q.publish_many(TOPIC, [PAYLOAD] * size)
                progress.advance(task, size)

        await asyncio.gather(*(worker() for _ in range(BUILD_TASKS)))
    return messages / (time.perf_counter() - began)


@asynccontextmanager
async def xmin_held(dsn: str) -> AsyncIterator[tuple[int, int]]:
    """An idle-in-transaction session with an xid and a snapshot for as long as the block
    runs; yields the xmin it holds (checked, so a silently released horizon cannot pass) and
    the session's pid."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await conn.fetchval("SELECT pg_current_xact_id()")
        await conn.fetchval("SELECT count(*) FROM pgqueue.topic")
        pid = conn.get_server_pid()
        watcher = await asyncpg.connect(dsn)
        try:
            held = await watcher.fetchval(
                "SELECT backend_xmin::text::bigint FROM pg_stat_activity WHERE pid = $1", pid
            )
        finally:
            await watcher.close()
        if held is None:
            raise RuntimeError("the idle transaction holds no xmin")
        yield int(held), pid
    finally:
        await conn.close()


async def prepare_database(maintenance_dsn: str, name: str) -> str:
    dsn = await common.create_bench_database(maintenance_dsn, name)
    async with pgqueue.connect(dsn) as q:
        await q.create_topic(TOPIC)
    return dsn


# -- the phases -----------------------------------------------------------------------------


async def measure_publish(
    dsn: str, *, warmup: float, seconds: float, answered: list[int] | None = None
) -> tuple[float, float]:
    """R1a's shape; returns (msg/s, p99 seconds of one publish call). Appends to `answered`
    the number of publishes answered, warm-up and late ones included."""
    calls = 0
    async with pgqueue.connect(dsn) as q:
        loop = asyncio.get_running_loop()
        start = loop.time() + warmup
        stop = start + seconds

        async def publisher() -> list[float]:
            nonlocal calls
            latencies = []
            while True:
                began = loop.time()
                await q.publish(TOPIC, PAYLOAD)
                calls += 1
                now = loop.time()
                if now >= stop:
                    return latencies
                if began >= start:
                    latencies.append(now - began)

        per_task = await asyncio.gather(*(publisher() for _ in range(CLIENTS)))
    latencies = [x for task in per_task for x in task]
    if answered is not None:
        answered.append(calls)
    return len(latencies) / seconds, _p99(latencies)


async def measure_publish_metered(
    dsn: str,
    *,
    warmup: float,
    seconds: float,
    wal: dict[str, Any],
    key: str,
    ignore_pids: list[int],
) -> tuple[float, float]:
    """measure_publish with the phase's WAL record in wal[key]."""
    answered: list[int] = []
    async with common.WalMeter(dsn, ignore_pids=ignore_pids) as meter:
        figures = await measure_publish(dsn, warmup=warmup, seconds=seconds, answered=answered)
    wal[key] = meter.figures(answered[0], per="publish", messages=answered[0])
    return figures


async def measure_drain(dsn: str, *, messages: int, rep: int) -> tuple[float, float]:
    """R2a's shape on the topic's newest `messages`; returns (msg/s, p99 seconds of one
    claim + ack round)."""
    settings = pgqueue.Settings(pool_min_size=CONSUMERS, pool_max_size=POOL_MAX_SIZE)
    subscriber = f"drain-{rep}"
    async with pgqueue.connect(dsn, settings=settings) as q:
        await q.subscribe(TOPIC, subscriber, start="latest")
        for start in range(0, messages, BUILD_CHUNK):
            await q.publish_many(TOPIC, [PAYLOAD] * min(BUILD_CHUNK, messages - start))

        async def consumer() -> tuple[int, list[float]]:
            acked, rounds = 0, []
            while True:
                began = time.perf_counter()
                claimed = await q.claim(TOPIC, subscriber, BATCH)
                if not claimed:
                    return acked, rounds
                acked += len(await q.ack(TOPIC, subscriber, claimed))
                rounds.append(time.perf_counter() - began)

        began = time.perf_counter()
        results = await asyncio.gather(*(consumer() for _ in range(CONSUMERS)))
        elapsed = time.perf_counter() - began
        acked = sum(count for count, _ in results)
        if acked != messages:
            raise RuntimeError(f"drained {acked} messages, expected {messages}")
        # Gone, so the next repetition's drain is measured against the same subscriber count.
        await q.unsubscribe(TOPIC, subscriber)
    return messages / elapsed, _p99([x for _, rounds in results for x in rounds])


async def dead_tuples(dsn: str) -> dict[str, dict[str, int]]:
    """Live and dead tuples per pgqueue table, as the statistics hold them. Every session
    that wrote has ended by now, so its counts have been flushed."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT relname, n_live_tup, n_dead_tup FROM pg_stat_user_tables "
            "WHERE schemaname = 'pgqueue' ORDER BY relname"
        )
    finally:
        await conn.close()
    return {r["relname"]: {"live": r["n_live_tup"], "dead": r["n_dead_tup"]} for r in rows}


# -- the run --------------------------------------------------------------------------------


async def run(
    maintenance_dsn: str,
    *,
    messages: int,
    drain: int,
    seconds: int,
    repeat: int,
    warmup: int,
    keep_db: bool,
    console: Console,
) -> dict[str, Any]:
    machine = common.machine_info()
    console.print(f"creating databases {common.BENCH_DATABASE} and {BIG_DATABASE} …")
    clean = await prepare_database(maintenance_dsn, common.BENCH_DATABASE)
    big = await prepare_database(maintenance_dsn, BIG_DATABASE)
    try:
        settings = await common.server_settings(clean)
        problems = common.durability_problems(settings)
        if problems:
            raise SystemExit(
                "refusing to benchmark with lowered durability: " + "; ".join(problems)
            )
        with _progress(console) as progress:
            build = progress.add_task("", total=messages)
            build_rate = await build_log(big, messages, progress, build)
            # Vacuumed and analysed once, as a long-lived database would be, before xmin stops
            # vacuum from doing anything more.
            for dsn in (clean, big):
                conn = await asyncpg.connect(dsn)
                try:
                    await conn.execute("VACUUM ANALYZE")
                finally:
                    await conn.close()
            async with xmin_held(big) as (xmin, holder):
                repetitions = await _repetitions(
                    progress,
                    clean,
                    big,
                    drain=drain,
                    seconds=seconds,
                    repeat=repeat,
                    warmup=warmup,
                    holder=holder,
                )
        tuples = await dead_tuples(big)
        console.print("durability check: 1 connection publishing sequentially …")
        check = await sequential_check(clean)
    finally:
        if not keep_db:
            await common.drop_bench_database(maintenance_dsn, common.BENCH_DATABASE)
            await common.drop_bench_database(maintenance_dsn, BIG_DATABASE)

    durability = common.durability_verdict([check.wal])
    dead_in_log = tuples.get("message", {}).get("dead", 0)
    rows = []
    for row in ROWS:
        summary = _summarize_row(row, repetitions)
        kind = row.measured.split("-", 1)[1]
        p99_ratios = [rep[f"big-{kind}-p99"] / rep[f"clean-{kind}-p99"] for rep in repetitions]
        p99 = common.summarize(p99_ratios)
        summary["checks"] = [
            {
                "name": "p99 big/clean",
                "value": p99,
                "goal": f"≤ {P99_GOAL:g}×",
                "met": p99.median <= P99_GOAL,
            },
            {
                "name": "dead tuples in the log",
                "value": dead_in_log,
                "goal": "≈ 0",
                "met": dead_in_log <= DEAD_LOG_TUPLES_OK,
            },
        ]
        rows.append(summary)
    # Only the publish row rests on the publishes being durable.
    common.mark_not_durable([row for row in rows if row["id"] == "r4-publish"], durability)
    return {
        "benchmark": "r4",
        "config": {
            "messages": messages,
            "drain": drain,
            "seconds": seconds,
            "repeat": repeat,
            "warmup": warmup,
            "clients": CLIENTS,
            "consumers": CONSUMERS,
            "batch": BATCH,
        },
        "reportable": repeat >= 3 and messages >= 10_000_000 and durability["met"],
        "settings": settings,
        "machine": machine,
        "wal_accounting": {
            "caveat": common.WAL_CAVEAT,
            "per": "publish phases: per acknowledged publish (1 message per call)",
        },
        "durability_check": durability,
        "durability_check_phase": check.wal,
        "build_rows_per_s": build_rate,
        "xmin_held": xmin,
        "tuples_at_end": tuples,
        "repetitions": repetitions,
        "rows": rows,
    }


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        refresh_per_second=2,
    )


async def _repetitions(
    progress: Progress,
    clean: str,
    big: str,
    *,
    drain: int,
    seconds: int,
    repeat: int,
    warmup: int,
    holder: int,
) -> list[dict[str, Any]]:
    overall = progress.add_task("all phases", total=repeat * 4)
    phase = progress.add_task("", total=1)
    repetitions = []
    for rep in range(1, repeat + 1):
        figures: dict[str, Any] = {}
        wal: dict[str, Any] = {}
        publish = partial(
            measure_publish_metered, warmup=warmup, seconds=seconds, wal=wal, ignore_pids=[holder]
        )
        # Alternating sides, so drift on a shared machine lands on both.
        steps: list[tuple[str, Callable[[], Awaitable[tuple[float, float]]]]] = [
            ("clean-publish", partial(publish, clean, key="clean-publish")),
            ("big-publish", partial(publish, big, key="big-publish")),
            ("clean-drain", partial(measure_drain, clean, messages=drain, rep=rep)),
            ("big-drain", partial(measure_drain, big, messages=drain, rep=rep)),
        ]
        for key, measure in steps:
            p99s: list[float] = []
            label = f"rep {rep}/{repeat}: {key.replace('-', ' ')}"
            # Drains have no fixed length: their bar is a clock that stops at the estimate.
            figures[key] = await _timed(
                progress, phase, label, float(warmup + seconds), partial(_rate, measure, p99s)
            )
            figures[f"{key}-p99"] = p99s[0]
            progress.advance(overall)
        figures["wal"] = wal
        repetitions.append(figures)
    return repetitions


async def _rate(measure: Callable[[], Awaitable[tuple[float, float]]], p99s: list[float]) -> float:
    """The rate for _timed; the p99 goes to p99s."""
    rate, p99 = await measure()
    p99s.append(p99)
    return rate


def render(results: dict[str, Any], console: Console) -> None:
    table = Table(title="R4: 10M log + held xmin vs clean, median of repetitions", box=box.SIMPLE)
    for column in ("row", "big", "clean", "ratio", "min–max", "p99 ×", "goal", "met"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for row in results["rows"]:
        ratio: common.Summary = row["ratio"]
        p99: common.Summary = row["checks"][0]["value"]
        met = row["met"] and all(check["met"] for check in row["checks"])
        table.add_row(
            row["id"],
            f"{row['pgqueue'].median:,.0f}",
            f"{row['baseline'].median:,.0f}",
            f"{ratio.median:.2f}",
            f"{ratio.min:.2f}–{ratio.max:.2f}",
            f"{p99.median:.2f}",
            f"≥ {row['goal']}, p99 ≤ {P99_GOAL:g}×",
            "[red]NOT A RESULT[/]"
            if "not_a_result" in row
            else ("[green]yes[/]" if met else "[red]no[/]"),
        )
    console.print(table)
    render_durability(results, console)
    tuples = results["tuples_at_end"]
    console.print(
        "tuples at the end on the big side (live/dead): "
        + ", ".join(f"{name} {t['live']:,}/{t['dead']:,}" for name, t in tuples.items())
    )
    console.print(
        f"log built at {results['build_rows_per_s']:,.0f} rows/s; xmin held at "
        f"{results['xmin_held']}; server: {common.settings_line(results['settings'])}"
    )
    if not results["reportable"]:
        console.print("[yellow]fewer than 3 repetitions or a smaller log: a smoke run[/]")


def main(
    maintenance_dsn: str,
    *,
    messages: int,
    drain: int,
    seconds: int,
    repeat: int,
    warmup: int,
    keep_db: bool,
    output: Path | None,
) -> None:
    common.run_and_save(
        "r4",
        lambda console: run(
            maintenance_dsn,
            messages=messages,
            drain=drain,
            seconds=seconds,
            repeat=repeat,
            warmup=warmup,
            keep_db=keep_db,
            console=console,
        ),
        render,
        output,
    )
