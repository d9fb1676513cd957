"""The Queue an app uses: opened in its lifespan, reached through an Annotated dependency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from starlette.datastructures import Address

import pgqueue
from pgqueue.availability import quiet_pool_reconnects
from pgqueue.client import DEFAULT_CONSUMER
from pgqueue.settings import Settings

log = logging.getLogger(__name__)


@asynccontextmanager
async def queue_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Opens the app's Queue for as long as the app runs, and runs retention passes."""
    settings: Settings = app.state.settings
    quiet_pool_reconnects()  # an outage is one warning from the Queue, not a traceback flood
    queue = await pgqueue.connect(settings=settings)
    app.state.queue = queue
    retention = (
        asyncio.create_task(_retention_loop(queue, settings.retention_interval))
        if settings.retention_interval > 0
        else None
    )
    try:
        yield
    finally:
        if retention is not None:
            retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention
        app.state.queue = None
        await queue.close()


async def _retention_loop(queue: pgqueue.Queue, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            for result in await queue.enforce_retention():
                if result.segments_removed:
                    log.info(
                        "retention removed %d messages of topic %s; it now starts at %d",
                        result.messages_removed,
                        result.topic,
                        result.first_offset,
                    )
            removed = await queue.remove_orphans(queue.settings.orphan_grace)
            if removed:
                log.info("removed %d ephemeral subscribers whose server is gone", removed)
        except pgqueue.DatabaseUnavailable as error:
            # The Queue logs the outage itself; the next pass tries again.
            log.info("retention pass skipped: %s", error)
        except Exception as error:
            # A background loop must outlive a bad pass; the next one tries again.
            log.exception("retention pass failed: %s", error)


# async: a plain def dependency runs in a worker thread, a hop that cost ~0.4 ms per request.
async def get_queue(request: Request) -> pgqueue.Queue:
    queue: pgqueue.Queue = request.app.state.queue
    return queue


QueueDep = Annotated[pgqueue.Queue, Depends(get_queue)]


def consumer_name(kind: str, client: Address | None) -> str:
    """A lease holder's name as operators see it (list_leases): the protocol, the client's
    address and the server process that holds the lease for it."""
    peer = f"{client.host}:{client.port}" if client else "unknown"
    return f"{kind} {peer} @ {DEFAULT_CONSUMER}"
