"""The nemesis: faults at random moments from a seeded RNG, one after another, every kind in
turn (each round a fresh random order), so even a short run meets every kind.

- server-kill: SIGKILL of the `pgqueue serve` process, then a restart on the same port;
- postgres-crash: SIGKILL of the postmaster and all its children at once, a pause, then a start
  on the same data directory (crash recovery; WAL not flushed is gone);
- listener-kill: pg_terminate_backend of the server's LISTEN connection;
- consumer-stop: SIGSTOP of the worker process for longer than its lease, then SIGCONT;
- silent-client: a WebSocket client that connects and never reads (on a durable subscriber
  that real consumers share, or an ephemeral one), dropped some seconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import asyncpg
import websockets

from bench.chaos.model import LEASE_SECONDS
from bench.chaos.postgres import PrivatePostgres
from bench.chaos.server import APPLICATION_NAME, ServerProcess

KINDS = ("server-kill", "postgres-crash", "listener-kill", "consumer-stop", "silent-client")
GAP = (1.0, 3.0)  # seconds from one fault's recovery to the next fault, uniformly
LONG_OUTAGE_SHARE = 0.3
LISTENER_WAIT = 8.0  # most a listener-kill waits for the server's LISTEN connection
SILENT_PREFETCH = 200  # a silent client on a durable subscriber holds this many claims
SILENT_SUBSCRIBERS = ("pair-ws", "mixed", None)  # None: an ephemeral subscriber


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float  # seconds since the run started, when it began
    detail: str
    injected: bool = True


def _rounds(rng: random.Random) -> Iterator[str]:
    while True:
        yield from rng.sample(KINDS, len(KINDS))


@dataclass
class Nemesis:
    rng: random.Random
    postgres: PrivatePostgres
    server: ServerProcess
    worker: subprocess.Popen[bytes]
    admin_dsn: str
    topics: list[str]
    started: float  # time.time() at the run's start
    faults: list[Fault] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    _silent: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self, until: float) -> None:
        """Injects faults until `until` (event-loop time), then heals everything."""
        loop = asyncio.get_running_loop()
        kinds = _rounds(self.rng)
        try:
            while True:
                gap = self.rng.uniform(*GAP)
                if loop.time() + gap > until:
                    break
                await asyncio.sleep(gap)
                kind = next(kinds)
                at = round(time.time() - self.started, 1)
                detail = await getattr(self, "_" + kind.replace("-", "_"))()
                if detail is None:
                    self.skipped[kind] += 1
                    self.faults.append(Fault(kind, at, "found nothing to do", injected=False))
                else:
                    self.faults.append(Fault(kind, at, detail))
        finally:
            # Also when the run is cancelled: no client left dangling, no process frozen.
            await self._release()
        await self.heal()

    def counts(self) -> dict[str, int]:
        found = Counter(f.kind for f in self.faults if f.injected)
        return {kind: found[kind] for kind in KINDS}

    async def _release(self) -> None:
        for task in list(self._silent):
            task.cancel()
        await asyncio.gather(*self._silent, return_exceptions=True)
        self._continue_worker()

    async def heal(self) -> None:
        """Everything back up: PostgreSQL, the server, the worker; silent clients gone."""
        await self._release()
        if not self.postgres.running():
            await asyncio.to_thread(self.postgres.restart)
        if not self.server.alive():
            self.server.start()
        await self.server.wait_ready()

    # -- the faults (each returns a detail for the report, or None when it found nothing) --

    async def _server_kill(self) -> str:
        self.server.kill()
        down = self.rng.uniform(0.0, 1.5)
        await asyncio.sleep(down)
        self.server.start()
        took = await self.server.wait_ready()
        return f"down {down:.1f} s, ready {took:.1f} s after restart"

    async def _postgres_crash(self) -> str:
        killed = await asyncio.to_thread(self.postgres.crash)
        # Mostly short; sometimes long enough for clients' reconnect backoff to grow.
        long = self.rng.random() < LONG_OUTAGE_SHARE
        down = self.rng.uniform(3.0, 6.0) if long else self.rng.uniform(0.2, 2.0)
        await asyncio.sleep(down)
        await asyncio.to_thread(self.postgres.restart)
        return f"{killed} processes killed, down {down:.1f} s"

    async def _listener_kill(self) -> str | None:
        # Right after a restart or an outage the server may not be listening yet (it listens
        # from its first consumer on, and reconnects with backoff): wait for it a while.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LISTENER_WAIT
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            while True:
                # In the select list, so only the rows found are terminated. The library names
                # its listener connections pgqueue-listener whatever the DSN says, so this
                # takes the library consumers' listeners too: a harsher fault, not a milder one.
                pids = await conn.fetch(
                    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name IN ($1, 'pgqueue-listener')"
                    " AND query ILIKE 'LISTEN%'",
                    APPLICATION_NAME,
                )
                waited = LISTENER_WAIT - (deadline - loop.time())
                if pids:
                    return f"terminated backend {[r['pid'] for r in pids]} ({waited:.1f} s wait)"
                if loop.time() > deadline:
                    return None
                await asyncio.sleep(0.25)
        finally:
            await conn.close()

    async def _consumer_stop(self) -> str | None:
        if self.worker.poll() is not None:
            return None
        frozen = LEASE_SECONDS + self.rng.uniform(1.0, 3.0)
        self.worker.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(frozen)
        finally:
            self._continue_worker()
        return f"worker {self.worker.pid} frozen {frozen:.1f} s (lease {LEASE_SECONDS} s)"

    async def _silent_client(self) -> str | None:
        topic = self.rng.choice(self.topics)
        subscriber = self.rng.choice(SILENT_SUBSCRIBERS)
        query: dict[str, Any] = {"prefetch": SILENT_PREFETCH, "lease": LEASE_SECONDS}
        if subscriber is not None:
            query |= {"subscriber": subscriber, "ack": "manual"}
        url = f"{self.server.ws_url}/ws/topics/{topic}?{urlencode(query)}"
        try:
            # max_queue=1: the client library stops reading the socket after one frame, so
            # the server's sends back up as with a client that really stopped reading.
            ws = await websockets.connect(url, max_queue=1, ping_interval=None, open_timeout=5)
        except (OSError, TimeoutError, websockets.WebSocketException):
            return None
        held = self.rng.uniform(4.0, 12.0)
        task = asyncio.create_task(_drop_later(ws, held))
        self._silent.add(task)
        task.add_done_callback(self._silent.discard)
        return f"{topic}/{subscriber or 'ephemeral'} for {held:.1f} s"

    def _continue_worker(self) -> None:
        if self.worker.poll() is None:
            self.worker.send_signal(signal.SIGCONT)


async def _drop_later(ws: Any, seconds: float) -> None:
    try:
        await asyncio.sleep(seconds)
    finally:
        # Vanishes without a close handshake, as a client whose machine went away.
        with contextlib.suppress(Exception):
            ws.transport.abort()
