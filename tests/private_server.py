"""A PostgreSQL of one test's own that can lose power.

`power_loss` freezes the postmaster and every child, then SIGKILLs them all: WAL still in
PostgreSQL's shared memory is gone, as in a power cut. WAL already handed to the kernel
survives in the page cache, so this loses less than a real power cut, never more; what it
proves is that an answer came only after PostgreSQL itself wrote and flushed the commit.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from pgqueue import embedded

# Nothing in the background may flush WAL for a test, so that only the flushes a commit asks
# for make it durable.
QUIET: dict[str, str] = {
    # The WAL writer flushes asynchronous commits at most every wal_writer_delay (10 s is
    # its maximum), or once wal_writer_flush_after of WAL is waiting (raised out of reach).
    "wal_writer_delay": "10s",
    "wal_writer_flush_after": "1GB",
    # Writing a dirty data page out flushes the WAL up to that page first.
    "bgwriter_lru_maxpages": "0",
    "checkpoint_timeout": "1h",
    "autovacuum": "off",
    # minimal: no standby snapshot records (written every 15 s at replica level), so the
    # WAL insert position moves only for the test's own work.
    "wal_level": "minimal",
    "max_wal_senders": "0",
    # One fsync per flush, counted by the statistics (open_datasync would count none).
    "wal_sync_method": "fdatasync",
    "fsync": "on",
}


def create_cluster(pgdata: Path) -> None:
    """A new, stopped data directory (initdb, and as root the unprivileged system user that
    runs it: the embedded wheel does both, and starts the server, which we stop)."""
    embedded.start(pgdata, stop_at_exit=False)
    subprocess.run(
        [str(embedded.bin_dir() / "pg_ctl"), "-D", str(pgdata), "-w", "stop"],
        user=_owner(pgdata),
        check=True,
        capture_output=True,
        timeout=60,
    )


def copy_cluster(source: Path, target: Path) -> None:
    """A copy of a stopped data directory, owner and permissions included."""
    subprocess.run(["cp", "-a", str(source), str(target)], check=True, timeout=60)
    # The server's user (not us, as root) must reach it, through a temporary directory
    # that is private to us when made.
    target.parent.chmod(target.parent.stat().st_mode | 0o711)


def _owner(pgdata: Path) -> str | None:
    # PostgreSQL refuses to run as root: as root, it runs as the data directory's owner.
    return pwd.getpwuid(pgdata.stat().st_uid).pw_name if os.geteuid() == 0 else None


class PrivateServer:
    """A running PostgreSQL on a stopped data directory, with QUIET settings, listening on a
    Unix socket in that directory; `dsn` is for the `postgres` database."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self.dsn = f"postgresql://postgres@/postgres?host={self.pgdata}"
        self._user = _owner(self.pgdata)
        self._postmaster: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Starts the server (after a power loss: with crash recovery) and waits until it
        accepts connections."""
        assert self._postmaster is None, "already running"
        options = ["-D", str(self.pgdata), "-h", "", "-k", str(self.pgdata)]
        for name, value in QUIET.items():
            options += ["-c", f"{name}={value}"]
        with open(self.pgdata / "log", "ab") as log:
            # Our own child rather than pg_ctl's daemon: after a power loss it is reaped at
            # once, so its PID in postmaster.pid is dead (not a zombie) when it starts again.
            self._postmaster = subprocess.Popen(
                [str(embedded.bin_dir() / "postgres"), *options],
                user=self._user,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a Ctrl-C meant for pytest is not a fast shutdown
            )
        deadline = time.monotonic() + 60
        while not self._ready():
            if self._postmaster.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start; see {self.pgdata / 'log'}")
            time.sleep(0.01)  # waiting for another process, not timing a step

    def _ready(self) -> bool:
        assert self._postmaster is not None
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        return (
            len(lines) >= 8
            and lines[0] == str(self._postmaster.pid)
            and lines[7].strip() == "ready"
        )

    def stop(self) -> None:
        """A clean shutdown, with a checkpoint."""
        assert self._postmaster is not None, "the server is not running"
        self._postmaster.send_signal(signal.SIGINT)
        self._postmaster.wait(60)
        self._postmaster = None

    def discard(self) -> None:
        """Kills the server if it runs: its data directory is about to be removed. (Killed,
        not shut down: a backend a test left frozen would hold up a shutdown.)"""
        if self._postmaster is not None:
            self.power_loss()

    def power_loss(self) -> None:
        """Kills the postmaster and every child at one instant."""
        assert self._postmaster is not None, "the server is not running"
        postmaster = psutil.Process(self._postmaster.pid)
        # Frozen first, postmaster before its children so it forks no more: between the kills
        # nobody sees another die, so no backend writes WAL out and the postmaster does not
        # begin a crash restart of its own.
        postmaster.suspend()
        processes = [postmaster, *postmaster.children(recursive=True)]
        for act in (psutil.Process.suspend, psutil.Process.kill):
            for process in processes:
                try:
                    act(process)
                except psutil.NoSuchProcess:  # it was exiting anyway
                    pass
        self._postmaster.wait(10)
        self._postmaster = None
        # The children are orphans now, reaped by init whenever it gets round to it; dead
        # (a zombie) they hold no shared memory and no files, which is all a restart needs.
        deadline = time.monotonic() + 10
        while not all(_dead(p) for p in processes):
            assert time.monotonic() < deadline, "server processes survived SIGKILL"
            time.sleep(0.005)
        # postmaster.pid stays, as after a power cut; the next start finds its PID dead.


def _dead(process: psutil.Process) -> bool:
    try:
        status: str = process.status()
    except psutil.NoSuchProcess:
        return True
    return bool(status == psutil.STATUS_ZOMBIE)
