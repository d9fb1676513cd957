"""Row R6: what fan-out costs a publisher.

    R6  publish, 1 msg/call, 4 tasks (R1a's shape) to a topic with 100 subscribers
        baseline: the same to a topic with 1 subscriber, in the same repetition
        goal >= 0.9 (fan-out costs nothing on publish)

Only publishing is measured: no consumer runs, so the subscribers are idle rows and whatever
would slow down with more of them is work a publish does per subscriber. (pgqueue writes a
message once, to the topic's log; a subscriber's delivery rows come from its own claims, so
the expected answer is "nothing".) What running consumers cost publishers is R5's question.

Every phase publishes to a topic of its own, created with its subscribers just before, so each
starts on an empty log. The phases are the sweep 1, 10, 100 subscribers (fanout.png); the row is
100 against 1 within each repetition. Every other repetition runs them in reverse order, so
that drift lands on both sides.

Every phase records the cluster's WAL writes and flushes over it (common.WalMeter), per
acknowledged publish. After the repetitions, R1's durability check (one connection publishing
sequentially, at least 0.95 flushes per publish) runs once; should it fail, the row is marked
"not durable: not a result".
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from bench import common
from bench.r1_publish import (
    CLIENTS,
    TOPIC,
    Metered,
    Row,
    _summarize_row,
    _timed,
    measure_tasks_metered,
    render_durability,
    sequential_check,
)
from bench.r5_listening import fresh_topic, progress_bars, series_point

SUBSCRIBER_COUNTS = (1, 10, 100)

ROWS = (
    Row(
        "r6",
        f"publish, 1 msg/call, {CLIENTS} tasks, {SUBSCRIBER_COUNTS[-1]} subscribers on the topic",
        "msg/s",
        f"subscribers-{SUBSCRIBER_COUNTS[-1]}",
        f"subscribers-{SUBSCRIBER_COUNTS[0]}",
        0.9,
    ),
)


async def measure_fanout(
    dsn: str, topic: str, subscribers: int, *, warmup: float, seconds: float
) -> Metered:
    """R1a's msg/s to a fresh topic with `subscribers` idle subscribers, with its WAL record."""
    await fresh_topic(dsn, topic, subscribers)
    return await measure_tasks_metered(dsn, batch=1, topic=topic, warmup=warmup, seconds=seconds)


async def _repetitions(
    dsn: str, *, seconds: int, repeat: int, warmup: int, console: Console
) -> list[dict[str, Any]]:
    phase_time = float(warmup + seconds)
    repetitions: list[dict[str, Any]] = []
    with progress_bars(console) as progress:
        overall = progress.add_task("all phases", total=repeat * len(SUBSCRIBER_COUNTS))
        phase = progress.add_task("", total=phase_time)
        for rep in range(1, repeat + 1):
            figures: dict[str, Any] = {}
            wal: dict[str, Any] = {}
            counts = SUBSCRIBER_COUNTS if rep % 2 else tuple(reversed(SUBSCRIBER_COUNTS))
            for n in counts:
                metered = await _timed(
                    progress,
                    phase,
                    f"rep {rep}/{repeat}: {n} subscriber(s)",
                    phase_time,
                    partial(
                        measure_fanout,
                        dsn,
                        f"{TOPIC}-r6-{rep}-{n}",
                        n,
                        warmup=warmup,
                        seconds=seconds,
                    ),
                )
                figures[f"subscribers-{n}"] = metered.value
                wal[f"subscribers-{n}"] = metered.wal
                progress.advance(overall)
            figures["wal"] = wal
            repetitions.append(figures)
    return repetitions


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
    rows = [_summarize_row(row, repetitions) for row in ROWS]
    common.mark_not_durable(rows, durability)
    return {
        "benchmark": "r6",
        "config": {
            "seconds": seconds,
            "repeat": repeat,
            "warmup": warmup,
            "clients": CLIENTS,
            "subscriber_counts": list(SUBSCRIBER_COUNTS),
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
        "repetitions": repetitions,
        "rows": rows,
        "series": {
            "subscribers": [
                series_point(n, [rep[f"subscribers-{n}"] for rep in repetitions])
                for n in SUBSCRIBER_COUNTS
            ]
        },
    }


def render(results: dict[str, Any], console: Console) -> None:
    table = Table(title="R6: publish with fan-out, median of repetitions", box=box.SIMPLE)
    most, fewest = SUBSCRIBER_COUNTS[-1], SUBSCRIBER_COUNTS[0]
    for column in ("row", f"{most} subs", f"{fewest} sub", "ratio", "min–max", "goal", "met"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for row in results["rows"]:
        ratio: common.Summary = row["ratio"]
        table.add_row(
            row["id"],
            f"{row['pgqueue'].median:,.0f}",
            f"{row['baseline'].median:,.0f}",
            f"{ratio.median:.2f}",
            f"{ratio.min:.2f}–{ratio.max:.2f}",
            f"≥ {row['goal']}",
            "[red]NOT A RESULT[/]"
            if "not_a_result" in row
            else ("[green]yes[/]" if row["met"] else "[red]no[/]"),
        )
    console.print(table)
    render_durability(results, console)
    console.print(
        "publish msg/s by subscribers on the topic: "
        + ", ".join(
            f"{point['x']}: {point['median']:,.0f}" for point in results["series"]["subscribers"]
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
        "r6",
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
