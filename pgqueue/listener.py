"""The one LISTEN connection a Queue keeps: wake-up hints per topic and reset events.

asyncpg pools run UNLISTEN * when a connection is released, so LISTEN lives on a connection of
its own. When it drops, the listener reconnects with backoff, LISTENs again and wakes every
waiter, since hints sent while it was away are lost (consumers then claim and find out).

It listens only once something consumes (a claim, a waiter, a reset handler): PostgreSQL
sends every NOTIFY to every listening backend, so a process that only publishes would
otherwise receive, and pay for, a hint for every publish on the database. The first claim
returns only once LISTEN is in effect, so a reset committed after it is heard; the wake-up at
connect covers whatever was published before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg

from pgqueue.queries import QUERIES

log = logging.getLogger(__name__)

MESSAGES_CHANNEL = "pgqueue"
RESETS_CHANNEL = "pgqueue_reset"

ResetHandler = Callable[[dict[str, Any]], None]


class Listener:
    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 5.0,
        owner: int | None = None,
    ) -> None:
        self._connect = connect
        # While this connection lives it holds the session lock ('owner', owner): ephemeral
        # subscribers created with that key are orphans once nobody holds it (a process
        # killed without a clean shutdown), and pgqueue.remove_orphans takes them away.
        self.owner = owner
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._conn: asyncpg.Connection | None = None
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._reset_handlers: list[ResetHandler] = []
        self._reconnecting: asyncio.Task[None] | None = None
        # The one connection attempt under way, which every caller shares: consumers starting
        # together, or all claiming after a restart, open one connection, not one each.
        self._attempt: asyncio.Task[None] | None = None
        self._failing = False  # the last attempt failed; the reconnect loop backs off
        self._closed = False
        self._listened = False  # a connection was listening before (a new one is a reconnect)
        self.reconnects = 0
        self.notifications = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def listen(self) -> None:
        """Returns once LISTEN is in effect, so that a reset committed after this returns is
        heard. When the connection cannot be had (or could not at the last attempt), returns
        at once and leaves it to the reconnect loop, with its backoff."""
        if self._closed or self.connected or self._failing:
            return
        try:
            await asyncio.shield(self._open_once())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            self._failed(error)
            self._listen_soon()

    def _open_once(self) -> asyncio.Task[None]:
        if self._attempt is None or self._attempt.done():
            self._attempt = asyncio.get_running_loop().create_task(self._open())
            # Its callers see its error; this keeps one nobody awaited any more from being
            # reported as never retrieved.
            self._attempt.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._attempt

    def _failed(self, error: BaseException) -> None:
        # The first failure of a run is a warning (a wrong DSN shows up here, not at connect);
        # the retries after it are not.
        if self._failing:
            log.info("pgqueue listener connect failed: %s", error)
        else:
            log.warning("pgqueue listener cannot connect; retrying: %s", error)
        self._failing = True

    def _listen_soon(self) -> None:
        if self._closed or self.connected:
            return
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def close(self) -> None:
        self._closed = True
        for task in (self._reconnecting, self._attempt):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
        self._wake_all()

    @contextlib.contextmanager
    def waiter(self, topic: str) -> Iterator[asyncio.Event]:
        """An event set whenever `topic` may have new work (or the listener reconnected)."""
        event = asyncio.Event()
        self._waiters[topic].add(event)
        self._listen_soon()
        try:
            yield event
        finally:
            waiters = self._waiters.get(topic)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[topic]

    def on_reset(self, handler: ResetHandler, *, listen: bool = True) -> Callable[[], None]:
        """Calls handler(event) for every reset; returns a function that unregisters it.
        With listen=False the handler hears resets only once something else starts listening."""
        self._reset_handlers.append(handler)
        if listen:
            self._listen_soon()
        return lambda: self._reset_handlers.remove(handler)

    async def _open(self) -> None:
        conn = await self._connect()
        try:
            if self.owner is not None:
                await conn.execute(QUERIES["hold_owner_lock"], self.owner)
            await conn.add_listener(MESSAGES_CHANNEL, self._on_notify)
            await conn.add_listener(RESETS_CHANNEL, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        if self._closed or self.connected:  # closed meanwhile, or start() and a waiter raced
            await conn.close()
            return
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        self._failing = False
        if self._listened:
            self.reconnects += 1
            log.info("pgqueue listener reconnected")
        self._listened = True
        self._wake_all()

    def _on_terminated(self, conn: asyncpg.Connection) -> None:
        if self._closed or conn is not self._conn:
            return
        log.warning("pgqueue listener connection lost; reconnecting")
        self._conn = None
        self._wake_all()
        self._listen_soon()

    async def _reconnect(self) -> None:
        delay = self._reconnect_delay
        if self._failing:  # an attempt failed just now: back off before the next
            await asyncio.sleep(delay)
        while not self._closed and not self.connected:
            try:
                await asyncio.shield(self._open_once())
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                self._failed(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_reconnect_delay)

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        self.notifications += 1
        if channel == MESSAGES_CHANNEL:
            self._wake(payload)
            return
        try:
            event = json.loads(payload)
        except ValueError:
            log.warning("ignoring a malformed reset notification: %.200r", payload)
            return
        for handler in list(self._reset_handlers):
            try:
                handler(event)
            except Exception as error:
                log.exception("reset handler failed: %s", error)
        self._wake(event.get("topic", ""))

    def _wake(self, topic: str) -> None:
        for event in self._waiters.get(topic, ()):
            event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()
