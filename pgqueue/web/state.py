"""The Queue an app uses: opened in its lifespan, reached through an Annotated dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request

import pgqueue
from pgqueue.settings import Settings


@asynccontextmanager
async def queue_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Opens the app's Queue for as long as the app runs."""
    settings: Settings = app.state.settings
    queue = await pgqueue.connect(settings=settings)
    app.state.queue = queue
    try:
        yield
    finally:
        app.state.queue = None
        await queue.close()


def get_queue(request: Request) -> pgqueue.Queue:
    queue: pgqueue.Queue = request.app.state.queue
    return queue


QueueDep = Annotated[pgqueue.Queue, Depends(get_queue)]
