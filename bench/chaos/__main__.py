"""`python -m bench.chaos --seconds 60`: one chaos run, a one-screen summary, the report as
JSON; exit status 1 when the checker found a failure, 2 when the run itself broke down."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.chaos.run import Options, chaos, sweep
from bench.chaos.summary import render


def _options(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="publishing under faults")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--topics", type=int, default=3)
    parser.add_argument("--rate", type=float, default=40.0, help="messages/s, all publishers")
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=15.0,
        help="time the consumers get to catch up afterwards (8 s more while they still do)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here too")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep logs, deliveries and the data directory here (default: a temporary "
        "directory, kept only when the run fails)",
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    options = Options(args.seconds, seed, args.topics, args.rate, args.drain_seconds)
    return options, args


async def _main(options: Options, run_dir: Path) -> dict[str, Any]:
    # SIGTERM (a CI timeout) ends the run like Ctrl-C: cancelled, so the clean-up runs.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await chaos(options, run_dir)


def main(argv: list[str] | None = None) -> int:
    options, args = _options(argv)
    # Wide enough for the summary's lines when the output is a CI log, not a terminal.
    console = Console(width=None if sys.stdout.isatty() else 110)
    console.print(f"chaos seed {options.seed} (rerun with --seed {options.seed})", highlight=False)
    run_dir = args.workdir or Path(tempfile.mkdtemp(prefix="pgqueue-chaos-"))
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    # The private server runs as an unprivileged user when we are root; it must reach pgdata.
    os.chmod(run_dir, 0o755)
    # The library's warnings during outages are many and expected: to a file, not the screen.
    logging.basicConfig(
        filename=run_dir / "chaos.log",
        level=logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    try:
        report = asyncio.run(_main(options, run_dir))
    except Exception:
        console.print_exception()
        console.print(f"[bold red]the run broke down[/]; its files are in {run_dir}")
        return 2
    finally:
        sweep(run_dir)  # in case the clean-up itself was cut short
    render(report, console)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    print("JSON", json.dumps(_brief(report), default=str))
    if report["verdict"] == "ok" and args.workdir is None:
        shutil.rmtree(run_dir, ignore_errors=True)
    elif args.workdir is None:
        console.print(f"run files kept in {run_dir}", highlight=False)
    return 0 if report["verdict"] == "ok" else 1


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its long parts (subscriber rows, examples, the fault log)."""
    keep = ("seed", "seconds", "faults", "deliveries", "timings_s", "verdict", "failures")
    brief = {k: report[k] for k in keep}
    for name in ("reused_offsets", "rolled_back_delivered", "duplicated_publishes", "vanished"):
        brief[name] = report[name]["count"]
    brief["acknowledged"] = report["published"]["acknowledged"]
    brief["rolled_back"] = report["published"]["rolled_back"]
    brief["lost"] = report["lost"]["count"]
    brief["duplicates"] = {k: v["duplicates"] for k, v in report["subscribers"].items()}
    return brief


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process of the run was stopped", file=sys.stderr)
        sys.exit(130)
