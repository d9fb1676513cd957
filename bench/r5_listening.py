"""Row R5: publishing while consumers LISTEN and drain; publish rate against publisher count.

    R5  publish, 1 msg/call, 4 tasks (R1a's shape) to a topic with 2 subscribers, each drained
        by 2 consumers that claim, ack and wait for the topic's NOTIFY the whole time
        baseline: the same publishing to the same kind of topic, no consumer running
        goal >= 0.8

The consumers run in a process of their own (spawned, one Queue, 4 tasks): in this one they would
take the GIL from the publishers, and R5 asks what consuming costs the database and the
publishers' commits, not what it costs one Python process. Each consumer loops "claim up to
BATCH, acking the previous batch in the same transaction" (one commit per batch); after an empty
claim it waits on the Queue's listener for the topic's NOTIFY, at most poll_interval, as
Queue.consume does. They are waiting before the warm-up starts and must keep up: each
repetition records how many messages the slowest subscriber received during the measured window
against how many were published in it (a check of the row, >= 0.95), and how long after the
window the last one arrived. A phase ends once every subscriber has received every message
published in it, warm-up included (or DRAIN_TIMEOUT has passed; the shortfall is recorded).

Every phase publishes to a topic of its own, created with its subscribers just before, so no
backlog or log size carries over from one phase to the next. The two sides swap order from one
repetition to the next, so that drift lands on both.

Sweep (publishers.png, no goal): the baseline's phase with 1, 2, 4 and 8 publishing tasks.

Every phase records the cluster's WAL writes and flushes over it (common.WalMeter), per
acknowledged publish; the listening phase's count includes the consumers' claim and ack commits.
After the repetitions, R1's durability check (one connection publishing sequentially, at least
0.95 flushes per publish) runs once; should it fail, the row is marked "not durable: not a
result".
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import time
from collections.abc import Awaitable, Callable
from functools import partial
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import pgqueue
from bench import common
from bench.r1_publish import (
    CLIENTS,
    TOPIC,
    Metered,
    Row,
    _summarize_row,
    _timed,
    measure_tasks_metered,
    publish_for,
    render_durability,
    sequential_check,
)

SUBSCRIBERS = 2
CONSUMERS_PER_SUBSCRIBER = 2
# R2a's claim size (not imported: bench.r2_drain pulls in redis and pgqueuer).
BATCH = 100
PUBLISHER_COUNTS = (1, 2, 4, 8)
START_TIMEOUT = 60.0  # spawning a process and importing pgqueue, on a loaded machine
DRAIN_TIMEOUT = 60.0  # after the window, for the consumers to receive what is left
RECEIVED_OK = 0.95

ROWS = (
    Row(
        "r5",
        f"publish, 1 msg/call, {CLIENTS} tasks, while {SUBSCRIBERS} subscribers × "
        f"{CONSUMERS_PER_SUBSCRIBER} consumers drain",
        "msg/s",
        "listening",
        "quiet",
        0.8,
    ),
)


# -- topics (R6 uses this too) ---------------------------------------------------------------


async def fresh_topic(dsn: str, topic: str, subscribers: int) -> list[str]:
    """Creates `topic` and its subscribers (starting at its beginning); returns their names."""
    names = [f"sub-{i}" for i in range(1, subscribers + 1)]
    async with pgqueue.connect(dsn) as q:
        await q.create_topic(topic)
        for name in names:
            await q.subscribe(topic, name, start="earliest")
    return names


# -- the consumer process -------------------------------------------------------------------


async def _consume(
    q: pgqueue.Queue,
    topic: str,
    subscriber: str,
    receipts: list[tuple[float, int]],
    idle: asyncio.Event,
) -> None:
    """One consumer, until cancelled; appends (time, messages) per non-empty claim and sets
    `idle` at every empty one."""
    claimed: list[pgqueue.Message] = []
    with q.listener.waiter(topic) as wake:
        while True:
            wake.clear()  # before the claim: a NOTIFY arriving during it is not lost
            claimed = await q.claim(topic, subscriber, BATCH, ack=claimed)
            if claimed:
                receipts.append((time.monotonic(), len(claimed)))
                continue
            idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), q.settings.poll_interval)


async def _consumers_main(
    dsn: str,
    topic: str,
    subscribers: list[str],
    ready: Event,
    commands: multiprocessing.Queue[tuple[float, float, int]],
) -> dict[str, Any]:
    consumers = len(subscribers) * CONSUMERS_PER_SUBSCRIBER
    settings = pgqueue.Settings(pool_min_size=consumers, pool_max_size=consumers)
    async with pgqueue.connect(dsn, settings=settings) as q:
        receipts: dict[str, list[tuple[float, int]]] = {name: [] for name in subscribers}
        idle = [asyncio.Event() for _ in range(consumers)]
        tasks = [
            asyncio.create_task(_consume(q, topic, name, receipts[name], idle[i]))
            for i, name in enumerate(
                name for name in subscribers for _ in range(CONSUMERS_PER_SUBSCRIBER)
            )
        ]
        try:
            # Ready once every consumer has found the topic empty and listens for it.
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in idle)), START_TIMEOUT)
            ready.set()
            # The publishers' window and total, once they are done.
            start, stop, total = await asyncio.to_thread(commands.get, True, None)
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while time.monotonic() < deadline and any(
                sum(n for _, n in receipts[name]) < total for name in subscribers
            ):
                failed = [task for task in tasks if task.done()]
                if failed:
                    await failed[0]  # raises what stopped the consumer
                await asyncio.sleep(0.01)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "received_in_window": [
            sum(n for at, n in receipts[name] if start <= at < stop) for name in subscribers
        ],
        "received": [sum(n for _, n in receipts[name]) for name in subscribers],
        "last_receipt": max((at for name in subscribers for at, _ in receipts[name]), default=0),
    }


def _consumers_worker(
    dsn: str,
    topic: str,
    subscribers: list[str],
    ready: Event,
    commands: multiprocessing.Queue[tuple[float, float, int]],
    results: multiprocessing.Queue[tuple[str, Any]],
) -> None:
    try:
        outcome = asyncio.run(_consumers_main(dsn, topic, subscribers, ready, commands))
    except BaseException as error:
        results.put(("error", repr(error)))
        raise
    results.put(("ok", outcome))


async def measure_listening(
    dsn: str, topic: str, subscribers: list[str], *, warmup: float, seconds: float
) -> dict[str, float]:
    """R1a's publishing while a consumer process drains every subscriber of `topic`.

    Returns the figures of the phase: listening (msg/s), listening-published and
    listening-received (the slowest subscriber's count) in the window, listening-lag-s (from the
    window's end to the last receipt) and listening-drained (the slowest subscriber's share of
    everything published).
    """
    # spawn, not fork: a forked child would inherit the parent's event loop and connections.
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    commands: multiprocessing.Queue[tuple[float, float, int]] = context.Queue()
    results: multiprocessing.Queue[tuple[str, Any]] = context.Queue()
    process = context.Process(
        target=_consumers_worker,
        args=(dsn, topic, subscribers, ready, commands, results),
        name="bench-consumers",
        daemon=True,
    )
    process.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not await asyncio.to_thread(ready.wait, 0.5):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the consumer process did not start: {_outcome(results)}")
        window = await publish_for(dsn, batch=1, topic=topic, warmup=warmup, seconds=seconds)
        commands.put((window.start, window.stop, window.total))
        status, outcome = await asyncio.to_thread(results.get, True, DRAIN_TIMEOUT + 30)
    finally:
        await asyncio.to_thread(process.join, 10)
        if process.is_alive():
            process.terminate()
            await asyncio.to_thread(process.join)
    if status != "ok":
        raise RuntimeError(f"the consumer process failed: {outcome}")
    return {
        "listening": window.rate,
        "listening-published": window.rate * seconds,
        "listening-received": float(min(outcome["received_in_window"])),
        "listening-lag-s": max(0.0, outcome["last_receipt"] - window.stop),
        "listening-drained": min(outcome["received"]) / window.total,
        # Every publish answered in the phase, warm-up included: the WAL accounting's count.
        "listening-acknowledged": float(window.total),
    }


def _outcome(results: multiprocessing.Queue[tuple[str, Any]]) -> str:
    try:
        return str(results.get(timeout=1)[1])
    except queue.Empty:
        return "no report"


# -- the run --------------------------------------------------------------------------------


def progress_bars(console: Console) -> Progress:
    """Few refreshes: the publishers share the GIL with rich's refresh thread."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        refresh_per_second=2,
    )


async def _quiet(dsn: str, topic: str, *, tasks: int, warmup: float, seconds: float) -> Metered:
    await fresh_topic(dsn, topic, SUBSCRIBERS)
    return await measure_tasks_metered(
        dsn, batch=1, topic=topic, tasks=tasks, warmup=warmup, seconds=seconds
    )


async def _listening(
    dsn: str, topic: str, figures: dict[str, Any], *, warmup: float, seconds: float
) -> Metered:
    subscribers = await fresh_topic(dsn, topic, SUBSCRIBERS)
    # The consumer process has exited, its sessions with it, when the meter reads.
    async with common.WalMeter(dsn) as meter:
        phase = await measure_listening(dsn, topic, subscribers, warmup=warmup, seconds=seconds)
    figures.update(phase)
    acknowledged = int(phase["listening-acknowledged"])
    wal = meter.figures(
        acknowledged,
        per="publish",
        messages=acknowledged,
        note="includes the consumers' claim and ack commits",
    )
    return Metered(phase["listening"], wal)


async def _repetitions(
    dsn: str, *, seconds: int, repeat: int, warmup: int, console: Console
) -> list[dict[str, Any]]:
    phase_time = float(warmup + seconds)
    repetitions: list[dict[str, Any]] = []
    with progress_bars(console) as progress:
        overall = progress.add_task("all phases", total=repeat * (2 + len(PUBLISHER_COUNTS)))
        phase = progress.add_task("", total=phase_time)
        for rep in range(1, repeat + 1):
            figures: dict[str, Any] = {}
            wal: dict[str, Any] = {}
            pair: list[tuple[str, str, Callable[[], Awaitable[Metered]]]] = [
                (
                    "quiet",
                    "no consumer",
                    partial(
                        _quiet,
                        dsn,
                        f"{TOPIC}-r5-{rep}-quiet",
                        tasks=CLIENTS,
                        warmup=warmup,
                        seconds=seconds,
                    ),
                ),
                (
                    "listening",
                    "consumers draining",
                    partial(
                        _listening,
                        dsn,
                        f"{TOPIC}-r5-{rep}-listening",
                        figures,
                        warmup=warmup,
                        seconds=seconds,
                    ),
                ),
            ]
            sweep: list[tuple[str, str, Callable[[], Awaitable[Metered]]]] = [
                (
                    f"publishers-{n}",
                    f"{n} publisher task(s), no consumer",
                    partial(
                        _quiet,
                        dsn,
                        f"{TOPIC}-r5-{rep}-publishers-{n}",
                        tasks=n,
                        warmup=warmup,
                        seconds=seconds,
                    ),
                )
                for n in PUBLISHER_COUNTS
            ]
            # Every other repetition runs its phases the other way round.
            if rep % 2 == 0:
                pair.reverse()
                sweep.reverse()
            for key, label, measure in pair + sweep:
                metered = await _timed(
                    progress, phase, f"rep {rep}/{repeat}: {label}", phase_time, measure
                )
                figures[key] = metered.value
                wal[key] = metered.wal
                progress.advance(overall)
            figures["wal"] = wal
            repetitions.append(figures)
    return repetitions


def series_point(x: int, values: list[float]) -> dict[str, float]:
    """One point of a sweep as bench/report.py's plot_series reads it."""
    summary = common.summarize(values)
    return {"x": x, "median": summary.median, "min": summary.min, "max": summary.max}


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
        repetitions = await _repetitions(
            dsn, seconds=seconds, repeat=repeat, warmup=warmup, console=console
        )
        console.print("durability check: 1 connection publishing sequentially …")
        check = await sequential_check(dsn)
    finally:
        if not keep_db:
            await common.drop_bench_database(maintenance_dsn)

    durability = common.durability_verdict([check.wal])
    received = common.summarize(
        [rep["listening-received"] / rep["listening-published"] for rep in repetitions]
    )
    row = _summarize_row(ROWS[0], repetitions)
    row["checks"] = [
        {
            "name": "received/published",
            "value": received,
            "goal": f"≥ {RECEIVED_OK:g}",
            "met": received.median >= RECEIVED_OK,
        }
    ]
    common.mark_not_durable([row], durability)
    return {
        "benchmark": "r5",
        "config": {
            "seconds": seconds,
            "repeat": repeat,
            "warmup": warmup,
            "clients": CLIENTS,
            "subscribers": SUBSCRIBERS,
            "consumers_per_subscriber": CONSUMERS_PER_SUBSCRIBER,
            "batch": BATCH,
            "publisher_counts": list(PUBLISHER_COUNTS),
        },
        # Below 3 repetitions the plan does not accept the figures, nor without the check.
        "reportable": repeat >= 3 and durability["met"],
        "settings": settings,
        "machine": machine,
        "wal_accounting": {
            "caveat": common.WAL_CAVEAT,
            "per": "per acknowledged publish (1 message per call)",
        },
        "durability_check": durability,
        "durability_check_phase": check.wal,
        "consumers": {
            "published_in_window": common.summarize(
                [rep["listening-published"] for rep in repetitions]
            ),
            "received_in_window": common.summarize(
                [rep["listening-received"] for rep in repetitions]
            ),
            "received_over_published": received,
            "lag_after_window_s": common.summarize([rep["listening-lag-s"] for rep in repetitions]),
            "drained": common.summarize([rep["listening-drained"] for rep in repetitions]),
        },
        "repetitions": repetitions,
        "rows": [row],
        "series": {
            "publishers": [
                series_point(n, [rep[f"publishers-{n}"] for rep in repetitions])
                for n in PUBLISHER_COUNTS
            ]
        },
    }


def render(results: dict[str, Any], console: Console) -> None:
    table = Table(title="R5: publish while consumers drain, median of repetitions", box=box.SIMPLE)
    for column in ("row", "listening", "quiet", "ratio", "min–max", "rcvd/pub", "goal", "met"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for row in results["rows"]:
        ratio: common.Summary = row["ratio"]
        received: common.Summary = row["checks"][0]["value"]
        met = row["met"] and all(check["met"] for check in row["checks"])
        table.add_row(
            row["id"],
            f"{row['pgqueue'].median:,.0f}",
            f"{row['baseline'].median:,.0f}",
            f"{ratio.median:.2f}",
            f"{ratio.min:.2f}–{ratio.max:.2f}",
            f"{received.median:.2f}",
            f"≥ {row['goal']}",
            "[red]NOT A RESULT[/]"
            if "not_a_result" in row
            else ("[green]yes[/]" if met else "[red]no[/]"),
        )
    console.print(table)
    render_durability(results, console)
    consumers = results["consumers"]
    console.print(
        f"consumers: {SUBSCRIBERS} subscribers × {CONSUMERS_PER_SUBSCRIBER}, claim ≤ {BATCH}; "
        f"received/published in the window should be ≥ {RECEIVED_OK:g} (met counts it); "
        f"last message {consumers['lag_after_window_s'].median:.2f} s after the window; "
        f"slowest subscriber got {consumers['drained'].min:.1%} of all published"
    )
    console.print(
        "publish msg/s by publisher tasks (no consumer): "
        + ", ".join(
            f"{point['x']}: {point['median']:,.0f}" for point in results["series"]["publishers"]
        )
    )
    console.print(f"server: {common.settings_line(results['settings'])}")
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
    common.run_and_save(
        "r5",
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
