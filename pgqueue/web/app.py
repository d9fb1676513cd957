"""The skeleton every pgqueue HTTP app shares."""

from __future__ import annotations

from fastapi import FastAPI

from pgqueue.settings import Settings
from pgqueue.web import errors
from pgqueue.web.incidents import CatchAll
from pgqueue.web.limits import BodyLimit
from pgqueue.web.state import queue_lifespan


def new_app(settings: Settings, *, title: str, summary: str) -> FastAPI:
    """A FastAPI app whose lifespan opens the Queue, with our error handlers and body limit."""
    app = FastAPI(title=title, summary=summary, version="0.1.0", lifespan=queue_lifespan)
    app.state.settings = settings
    app.state.queue = None
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    # Added last, so it is the outermost: it also covers the middleware above.
    app.add_middleware(CatchAll)
    return app
