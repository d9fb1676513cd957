"""Riding out database outages: waiting for PostgreSQL at start, and logging an outage once.

A restart or crash of PostgreSQL shows up as DatabaseUnavailable on every call made during it.
A server that logged each one would print a line (or a traceback) per request, and an operator
would still not see when it ended. The Queue reports each call's outcome to an Outage, which
logs only the changes: the database went away (with the cause), and it came back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from pgqueue.errors import DatabaseUnavailable, translated

log = logging.getLogger(__name__)

T = TypeVar("T")


class Backoff:
    """Exponential delays for retries: first, then doubling up to cap."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self._cap)
        return delay

    def reset(self) -> None:
        self._next = self._first


class Outage:
    """Whether the database answered the last call; logs when that changes, not per call."""

    def __init__(self) -> None:
        self._since: float | None = None
        self.failures = 0  # calls refused during the current outage

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException) -> None:
        if self._since is None:
            self._since = time.monotonic()
            self.failures = 0
            log.warning("database unavailable: %s", error)
        self.failures += 1

    def answered(self) -> None:
        if self._since is None:
            return
        lasted, self._since = time.monotonic() - self._since, None
        log.warning(
            "database available again after %.1f s (%d calls failed meanwhile)",
            lasted,
            self.failures,
        )


async def keep_trying(
    connect: Callable[[], Awaitable[T]], *, give_up_after: float, what: str = "PostgreSQL"
) -> T:
    """connect(), retried with exponential back-off while the database is unreachable.

    For a process starting beside its database (docker-compose, a reboot): it waits instead of
    exiting. Errors that waiting cannot fix (a wrong password, no such database) raise at
    once; after `give_up_after` seconds without a connection, DatabaseUnavailable names the cause.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    backoff = Backoff(0.1, 5.0)
    failures = 0
    started = loop.time()
    while True:
        try:
            with translated():
                result = await connect()
        except DatabaseUnavailable as error:
            left = deadline - loop.time()
            if left <= 0:
                raise DatabaseUnavailable(
                    f"cannot connect to {what} (gave up after {give_up_after:g} s): {error}"
                ) from error
            delay = min(backoff.next(), left)
            if failures == 0:
                log.warning(
                    "cannot connect to %s, retrying for up to %g s: %s", what, give_up_after, error
                )
            else:
                log.info("still cannot connect to %s, next try in %.1f s: %s", what, delay, error)
            failures += 1
            await asyncio.sleep(delay)
            continue
        if failures:
            log.warning(
                "connected to %s after %.1f s (%d failed attempts)",
                what,
                loop.time() - started,
                failures,
            )
        return result


async def wait_for_database(dsn: str, *, give_up_after: float) -> None:
    """Returns once PostgreSQL accepts a connection (see keep_trying)."""
    conn = await keep_trying(
        lambda: asyncpg.connect(dsn, server_settings={"application_name": "pgqueue-serve"}),
        give_up_after=give_up_after,
    )
    await conn.close()


class QuietPoolReconnects(logging.Filter):
    """Makes asyncpg's "Failed to restore the pool connection floor" one line with its cause.

    asyncpg logs each failed attempt to reconnect a pool's minimum connections as a warning
    with a traceback; during an outage that is a traceback every few seconds, and the Queue's
    Outage already says what happened. The servers install this on the asyncpg.pool logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed to restore the pool connection floor"):
            error = record.exc_info[1] if record.exc_info else None
            record.msg, record.args = "pool could not reconnect, retrying: %r", (error,)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


QUIET_POOL_RECONNECTS = QuietPoolReconnects()


def quiet_pool_reconnects() -> None:
    """Installs QuietPoolReconnects once (servers only: the library configures no logging)."""
    logger = logging.getLogger("asyncpg.pool")
    if QUIET_POOL_RECONNECTS not in logger.filters:
        logger.addFilter(QUIET_POOL_RECONNECTS)
