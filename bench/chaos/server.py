"""The `pgqueue serve` process under test: started, killed with SIGKILL, started again on the
same port, and stopped for good at the end."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.chaos.model import LEASE_SECONDS, with_application_name

# Its connections carry this application_name, so the nemesis can find its LISTEN connection.
APPLICATION_NAME = "chaos-server"
READY_TIMEOUT = 60.0
# The last line of a traceback: the exception's class.
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Timeout\w*))\b")


class HarnessError(Exception):
    """The run itself could not go on (as opposed to a finding about the product)."""


class ServerProcess:
    def __init__(self, dsn: str, port: int, log_path: Path, run_dir: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "PGQUEUE_DATABASE_URL": with_application_name(dsn, APPLICATION_NAME),
            "PGQUEUE_POLL_INTERVAL": "1",
            "PGQUEUE_LISTENER_RECONNECT_DELAY": "0.2",
            "PGQUEUE_DEFAULT_LEASE": str(LEASE_SECONDS),
            # A client that stops reading is cut off soon, within one fault's span.
            "PGQUEUE_WS_SEND_TIMEOUT": "3",
            "PGQUEUE_RETENTION_INTERVAL": "0",
            # Marks every process of this run, for the last-resort sweep (see run.sweep).
            "PGQUEUE_CHAOS_RUN": str(run_dir),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        # The child keeps its own descriptor; ours closes once it has started.
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pgqueue.cli", "serve", "--port", str(self.port)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the terminal is ours to handle
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no give-back of claims, sockets just vanish."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    async def wait_ready(self) -> float:
        """Waits until /readyz answers 200 (the database too); returns the seconds it took."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            while loop.time() - started < READY_TIMEOUT:
                if not self.alive():
                    raise HarnessError(f"the server exited during start-up; see {self.log_path}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return loop.time() - started
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise HarnessError(f"the server was not ready in {READY_TIMEOUT} s; see {self.log_path}")


def log_findings(path: Path, top: int = 8) -> dict[str, Any]:
    """What the server logged besides access lines: its messages and the exceptions in its
    tracebacks, most frequent first (informational: the checker's verdict does not use it)."""
    messages: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in text.splitlines():
        if _EXCEPTION.match(line):
            exceptions[line[:160]] += 1
            continue
        if line and not line[0].isspace() and not line.startswith(("INFO:", "Traceback")):
            messages[line[:120]] += 1
    return {
        "messages": dict(messages.most_common(top)),
        "exceptions": dict(exceptions.most_common(top)),
    }
