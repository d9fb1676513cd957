"""`pgqueue serve` with its embedded PostgreSQL, as real processes: however the server exits,
no PostgreSQL outlives it; what a dead run left behind is repaired at the next start; and
`pgqueue dsn` / `pgqueue psql` / the library reach the server running from a directory."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil  # type: ignore[import-untyped]
import pytest

from tests.services.conftest import free_port

PGQUEUE = [sys.executable, "-m", "pgqueue.cli"]
# Becomes the controlling process of the terminal on its stdin (it is a session leader, as a
# login shell's job is), then runs `pgqueue serve`: closing the terminal then hangs it up.
ON_A_TERMINAL = [
    sys.executable,
    "-c",
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'pgqueue.cli', 'serve'])",
]
WAIT = 60.0  # the most any step may take: a bound, never a pace


def _env(port: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env["COLUMNS"] = "200"
    if port is not None:
        env["PGQUEUE_PORT"] = str(port)
        # A server that cannot reach its database gives up soon (it would retry for 60 s).
        env["PGQUEUE_CONNECT_TIMEOUT"] = "10"
    return env


def processes_of(pgdata: Path) -> list[psutil.Process]:
    """Every live process of this data directory: the keeper and the postmaster name it on
    their command lines, and PostgreSQL's processes all work in it."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:  # dead, waiting for its parent
                continue
            if str(pgdata) in " ".join(process.cmdline()) or Path(process.cwd()) == pgdata:
                found.append(process)
        except psutil.Error:  # gone meanwhile, or not ours to look at
            continue
    return found


def until(check: object, what: str) -> None:
    """Waits, bounded, for another process to get somewhere."""
    deadline = time.monotonic() + WAIT
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.05)


class Server:
    """A `pgqueue serve` process, its output to a log file, or to a terminal of its own."""

    def __init__(self, workdir: Path, *, on_a_terminal: bool = False) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._output: list[bytes] = []
        self._terminal: int | None = None
        if on_a_terminal:
            self._terminal, secondary = os.openpty()
            self.process = subprocess.Popen(
                ON_A_TERMINAL,
                cwd=workdir,
                env=_env(self.port),
                stdin=secondary,
                stdout=secondary,
                stderr=secondary,
                start_new_session=True,
            )
            os.close(secondary)
            self._stop_reading = threading.Event()
            self._reader = threading.Thread(target=self._read_terminal, daemon=True)
            self._reader.start()
        else:
            with (workdir / "serve.log").open("ab") as log:
                self.process = subprocess.Popen(
                    [*PGQUEUE, "serve"],
                    cwd=workdir,
                    env=_env(self.port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )

    def _read_terminal(self) -> None:
        # Read, so that the server never blocks on a full terminal.
        assert self._terminal is not None
        while not self._stop_reading.is_set():
            if select.select([self._terminal], [], [], 0.1)[0]:
                try:
                    self._output.append(os.read(self._terminal, 65536))
                except OSError:
                    return

    def log(self) -> str:
        if self._terminal is not None:
            return b"".join(self._output).decode(errors="replace")[-4000:]
        return (self.workdir / "serve.log").read_text(errors="replace")[-4000:]

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, f"pgqueue serve exited:\n{self.log()}"
            try:
                return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        until(ready, "pgqueue serve answers /readyz")

    def close_terminal(self) -> None:
        assert self._terminal is not None
        self._stop_reading.set()
        self._reader.join()
        os.close(self._terminal)  # the terminal hangs up, as when its window is closed

    def end(self, how: str) -> None:
        """Ends the server (a signal, or closing its terminal) and waits for its exit."""
        if how == "terminal closed":
            self.close_terminal()
        else:
            self.process.send_signal(getattr(signal, how))
        self.process.wait(WAIT)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not under pytest's temporary directory, which pytest makes private to us again when
    # any other run starts: the wheel runs PostgreSQL as another user when we are root.
    with tempfile.TemporaryDirectory(prefix="pgqueue-embedded-") as tmp:
        workdir = Path(tmp).resolve()
        workdir.chmod(0o755)
        try:
            yield workdir
        finally:
            # Whatever a failing test left running is killed, not left to the machine.
            for process in processes_of(workdir / ".pgqueue" / "pgdata"):
                process.kill()


def pgdata_of(workdir: Path) -> Path:
    return workdir / ".pgqueue" / "pgdata"


def serves(server: Server) -> None:
    """The server is up and its database works: a topic is created and listed."""
    server.wait_ready()
    name = f"t{uuid.uuid4().hex[:12]}"
    assert httpx.post(f"{server.url}/topics", json={"name": name}).status_code == 201
    assert name in [t["name"] for t in httpx.get(f"{server.url}/topics").json()]


def stops_cleanly(server: Server) -> None:
    server.end("SIGTERM")
    pgdata = pgdata_of(server.workdir)
    until(lambda: not processes_of(pgdata), f"no process of {pgdata} remains")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGHUP", "terminal closed", "SIGKILL"])
def test_no_postgres_outlives_the_server(workdir: Path, how: str) -> None:
    pgdata = pgdata_of(workdir)
    server = Server(workdir, on_a_terminal=how == "terminal closed")
    serves(server)
    running = processes_of(pgdata)
    assert any(p.name() == "postgres" for p in running), [p.cmdline() for p in running]

    server.end(how)
    # After a SIGKILL nothing in the server could act: its keeper stops PostgreSQL.
    until(lambda: not processes_of(pgdata), f"no process of {pgdata} remains after {how}")

    again = Server(workdir)
    serves(again)
    stops_cleanly(again)


@pytest.mark.timeout(300)
def test_a_leftover_server_and_dead_owner_are_repaired_at_the_next_start(workdir: Path) -> None:
    """Everything the server started is killed with it, the watchdog included: PostgreSQL
    runs on with no owner, and a dead PID stays in the wheel's handle list. The next server
    takes over, and stops PostgreSQL when it exits."""
    pgdata = pgdata_of(workdir)
    server = Server(workdir)
    serves(server)
    everything = [*psutil.Process(server.process.pid).children(recursive=True), server.process]
    for process in everything:
        process.kill()
    server.process.wait(WAIT)
    assert any(p.name() == "postgres" for p in processes_of(pgdata)), "no leftover to repair"

    again = Server(workdir)
    serves(again)
    handles = json.loads((pgdata / ".handle_pids.json").read_text())
    # Only the new server's keeper: the dead ones are gone from the list.
    assert handles == [p.pid for p in psutil.Process(again.process.pid).children()], handles
    stops_cleanly(again)


@pytest.mark.timeout(300)
def test_a_stale_postmaster_pid_is_repaired_at_the_next_start(workdir: Path) -> None:
    """postmaster.pid names a PID that another program has now (after a reboot, in a
    container): PostgreSQL would refuse to start, and the wheel took it for a running server."""
    pgdata = pgdata_of(workdir)
    server = Server(workdir)
    serves(server)
    recorded = (pgdata / "postmaster.pid").read_text().splitlines()
    stops_cleanly(server)

    stranger = subprocess.Popen(["sleep", "600"])
    try:
        (pgdata / "postmaster.pid").write_text("\n".join([str(stranger.pid), *recorded[1:]]))
        again = Server(workdir)
        serves(again)
        stops_cleanly(again)
    finally:
        stranger.kill()
        stranger.wait()


def cli(workdir: Path, *args: str, ok: bool = True) -> str:
    result = subprocess.run(
        [*PGQUEUE, *args], cwd=workdir, env=_env(), capture_output=True, text=True, timeout=WAIT
    )
    text = result.stdout + result.stderr
    assert (result.returncode == 0) == ok, text
    assert "Traceback" not in text
    return text


async def _current_user(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        user: str = await conn.fetchval("SELECT current_user")
        return user
    finally:
        await conn.close()


@pytest.mark.timeout(300)
async def test_dsn_psql_cli_and_library_reach_the_server_running_here(workdir: Path) -> None:
    server = Server(workdir)
    try:
        serves(server)
        runtime = cli(workdir, "dsn").strip()
        admin = cli(workdir, "dsn", "--admin").strip()
        assert await _current_user(runtime) == "pgqueue_runtime"
        assert await _current_user(admin) == "postgres"

        assert cli(workdir, "psql", "-c", "select 1 as one").split() == [
            "one",
            "-----",
            "1",
            "(1",
            "row)",
        ]
        assert cli(workdir, "psql", "-At", "-c", "select current_user") == "pgqueue_runtime\n"
        assert cli(workdir, "psql", "--admin", "-Atc", "select current_user") == "postgres\n"

        # With no PGQUEUE_DATABASE_URL, the CLI and the library use the server running here.
        assert "created topic here" in cli(workdir, "topics", "create", "here")
        listed = _python(
            workdir,
            "import asyncio, pgqueue\n"
            "async def main():\n"
            "    async with pgqueue.connect() as q:\n"
            "        print(sorted(t.name for t in await q.list_topics()))\n"
            "asyncio.run(main())",
        )
        assert "'here'" in listed

        # A second server on the same data directory is refused, and the first one goes on.
        second = Server(workdir)
        assert second.process.wait(WAIT) == 1
        assert "in use by another pgqueue serve" in second.log()
        serves(server)
    finally:
        stops_cleanly(server)


def _python(workdir: Path, code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_dsn_and_psql_without_a_server_say_so_in_one_line(workdir: Path) -> None:
    for command in (["dsn"], ["dsn", "--admin"], ["psql", "-c", "select 1"]):
        text = cli(workdir, *command, ok=False)
        assert text.startswith("error: no embedded PostgreSQL is running from "), text
        assert len(text.strip().splitlines()) == 1, text
