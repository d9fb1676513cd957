"""`python -m bench <row> --dsn postgresql://...`: one subcommand per row of the plan."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from bench import common

app = typer.Typer(
    help="pgqueue benchmarks. Throughput figures are ratios against a baseline measured in the "
    "same run; latency figures (R3) are absolute.",
    no_args_is_help=True,
    add_completion=False,
)

Dsn = Annotated[
    str,
    typer.Option(
        "--dsn",
        envvar="PGQUEUE_BENCH_DSN",
        help="Maintenance DSN (postgresql:// URL) of a role that may create databases. The run "
        "drops and recreates database pgqueue_bench on that server.",
    ),
]
Seconds = Annotated[int, typer.Option(min=1, help="Measured seconds per phase.")]
Repeat = Annotated[int, typer.Option(min=1, help="Repetitions (the plan reports >= 3).")]
Warmup = Annotated[int, typer.Option(min=0, help="Unmeasured seconds before each phase.")]
KeepDb = Annotated[bool, typer.Option(help="Leave database pgqueue_bench in place afterwards.")]
Output = Annotated[Path | None, typer.Option(help="JSON file (default bench/results/<row>.json).")]


@app.callback()
def _root() -> None:
    """Keeps subcommands explicit (`python -m bench r1`)."""


def _timed_row(name: str, module: str, doc: str) -> Callable[..., None]:
    """A command for a row whose phases run for fixed seconds (R1, R1c, R5, R6: same options)."""

    def command(
        dsn: Dsn,
        seconds: Seconds = 10,
        repeat: Repeat = 3,
        warmup: Warmup = 2,
        keep_db: KeepDb = False,
        output: Output = None,
    ) -> None:
        with common.autovacuum_on(dsn):
            importlib.import_module(f"bench.{module}").main(
                dsn, seconds=seconds, repeat=repeat, warmup=warmup, keep_db=keep_db, output=output
            )

    command.__doc__ = doc
    app.command(name)(command)
    return command


r1 = _timed_row(
    "r1",
    "r1_publish",
    "R1a/R1b: publish throughput, 1 and 100 messages per call, against pgbench INSERTs.",
)
r1c = _timed_row(
    "r1c",
    "r1c_rest",
    "R1c: REST publish throughput (`pgqueue serve`), 1 and 100 messages per request, against "
    "the library's R1a/R1b figures measured in the same run.",
)
r5 = _timed_row(
    "r5",
    "r5_listening",
    "R5: R1a's publish rate while 2 subscribers x 2 consumers drain (LISTEN), against no "
    "consumer; plus the publish rate with 1, 2, 4, 8 publisher tasks.",
)
r6 = _timed_row(
    "r6",
    "r6_fanout",
    "R6: R1a's publish rate with 100 subscribers on the topic, against 1; plus 10.",
)


@app.command()
def r2(
    dsn: Dsn,
    messages: Annotated[
        int, typer.Option(min=1, help="Backlog drained per phase (the plan: 100000).")
    ] = 100_000,
    repeat: Repeat = 3,
    redis_url: Annotated[
        str,
        typer.Option(
            envvar="PGQUEUE_BENCH_REDIS_URL",
            help="Redis of R2b. The run sets appendonly yes + appendfsync always there and "
            "restores the previous values; R2b is skipped if it cannot.",
        ),
    ] = "redis://127.0.0.1:6379/0",
    keep_db: KeepDb = False,
    output: Output = None,
) -> None:
    """R2a/R2b: drain a backlog (claim + ack x100, 4 consumers) against pgqueuer and Redis
    Streams. Needs the bench extra (pgqueuer, redis)."""
    from bench import r2_drain

    with common.autovacuum_on(dsn):
        r2_drain.main(
            dsn,
            messages=messages,
            repeat=repeat,
            keep_db=keep_db,
            redis_url=redis_url,
            output=output,
        )


@app.command()
def r3(
    dsn: Dsn,
    seconds: Seconds = 30,
    repeat: Repeat = 3,
    warmup: Warmup = 3,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="Open-loop rate in msg/s for every system (default: 50 % of its max rate).",
        ),
    ] = None,
    max_rate: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="Max publish rate in msg/s for every system instead of probing it (5 s).",
        ),
    ] = None,
    systems: Annotated[
        str,
        typer.Option(
            help="Comma-separated systems to measure, in this order: pgqueue, redis (Redis "
            "Streams, PGQUEUE_BENCH_REDIS_URL), nats (NATS JetStream, PGQUEUE_BENCH_NATS_URL)."
        ),
    ] = "pgqueue,redis,nats",
    keep_db: KeepDb = False,
    output: Output = None,
) -> None:
    """R3: publish → WebSocket receive latency, open loop at 50 % of the max publish rate;
    Redis Streams and NATS JetStream measured the same way as reference rows."""
    from bench import r3_latency

    with common.autovacuum_on(dsn):
        r3_latency.main(
            dsn,
            systems=[name.strip() for name in systems.split(",") if name.strip()],
            seconds=seconds,
            repeat=repeat,
            warmup=warmup,
            rate=rate,
            max_rate=max_rate,
            keep_db=keep_db,
            output=output,
        )


@app.command()
def r4(
    dsn: Dsn,
    messages: Annotated[
        int, typer.Option(min=1, help="Size of the retained log (the plan: 10,000,000).")
    ] = 10_000_000,
    drain: Annotated[int, typer.Option(min=1, help="Backlog drained per phase.")] = 100_000,
    seconds: Seconds = 10,
    repeat: Repeat = 3,
    warmup: Warmup = 2,
    keep_db: KeepDb = False,
    output: Output = None,
) -> None:
    """R4: R1a and R2a on a 10M-message log with an idle transaction holding xmin, against
    the same on a clean database (also creates and drops database pgqueue_bench_big)."""
    from bench import r4_scale

    with common.autovacuum_on(dsn):
        r4_scale.main(
            dsn,
            messages=messages,
            drain=drain,
            seconds=seconds,
            repeat=repeat,
            warmup=warmup,
            keep_db=keep_db,
            output=output,
        )


@app.command()
def r7(
    dsn: Dsn,
    minutes: Annotated[
        int, typer.Option(min=2, help="Minutes of sustained load (the plan: 10).")
    ] = 10,
    repeat: Annotated[
        int, typer.Option(min=1, help="Repetitions, each on a fresh database (R7 is long: 1).")
    ] = 1,
    minute_seconds: Annotated[
        float, typer.Option(min=1.0, hidden=True, help="Seconds per 'minute' (smoke runs).")
    ] = 60.0,
    keep_db: KeepDb = False,
    output: Output = None,
) -> None:
    """R7: sustained mixed load (publish open loop at 50 % of the max rate, 3 subscribers x 2
    consumers); delivered throughput, p99 and PostgreSQL RSS of the last minute against the
    first. Needs the bench extra (hdrhistogram, psutil)."""
    from bench import r7_sustained

    with common.autovacuum_on(dsn):
        r7_sustained.main(
            dsn,
            minutes=minutes,
            minute_seconds=minute_seconds,
            repeat=repeat,
            keep_db=keep_db,
            output=output,
        )


@app.command()
def report(
    fsync: Annotated[
        bool, typer.Option(help="Run pg_test_fsync (about 15 s) for the disk line.")
    ] = True,
) -> None:
    """Regenerate docs/BENCHMARKS.md (and its plots in docs/bench/) from bench/results/*.json."""
    from bench import report as report_module

    path = report_module.main(run_fsync=fsync)
    typer.echo(f"wrote {path}")


@app.command("all")
def all_rows(dsn: Dsn) -> None:
    """Every row in sequence with its defaults (about 1.5 hours, most of it R4's 10M-message
    log and R7's 10 minutes), then the report. A row that fails does not stop the others; the
    exit status is non-zero when one did."""
    # Called as plain functions, the options' envvars are not read: pass R2's on by hand (R3
    # reads its own from the environment).
    redis_url = os.environ.get("PGQUEUE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    rows: tuple[tuple[str, Callable[[], None]], ...] = (
        ("r1", lambda: r1(dsn=dsn)),
        ("r1c", lambda: r1c(dsn=dsn)),
        ("r2", lambda: r2(dsn=dsn, redis_url=redis_url)),
        ("r3", lambda: r3(dsn=dsn)),
        ("r4", lambda: r4(dsn=dsn)),
        ("r5", lambda: r5(dsn=dsn)),
        ("r6", lambda: r6(dsn=dsn)),
        ("r7", lambda: r7(dsn=dsn)),
    )
    failed = []
    with common.autovacuum_on(dsn):
        for name, run in rows:
            typer.echo(f"=== {name} ===")
            try:
                run()
            except SystemExit as error:
                if error.code not in (None, 0):
                    typer.echo(f"{name} failed: {error.code}", err=True)
                    failed.append(name)
            except Exception as error:
                typer.echo(f"{name} failed: {error!r}", err=True)
                failed.append(name)
    report()
    if failed:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
