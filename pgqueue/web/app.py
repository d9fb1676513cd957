"""The skeleton every pgqueue HTTP app shares."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from starlette.requests import ClientDisconnect

from pgqueue.settings import Settings
from pgqueue.web import errors, rates
from pgqueue.web.caps import WebSocketCaps
from pgqueue.web.limits import BodyLimit
from pgqueue.web.state import queue_lifespan


def new_app(settings: Settings, *, title: str, summary: str) -> FastAPI:
    """A FastAPI app whose lifespan opens the Queue, with our error handlers, body limit,
    per-caller rates and WebSocket caps."""
    app = FastAPI(title=title, summary=summary, version="0.1.0", lifespan=queue_lifespan)
    app.state.settings = settings
    app.state.queue = None
    errors.install(app)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    rates.install(app, settings)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(WebSocketCaps, settings=settings)
    return app


async def _client_gone(_request: Request, _error: Exception) -> Response:
    """The client left, or was cut off (pgqueue.web.protocol's body deadline), before its
    body arrived: not an error of ours, and nobody reads the answer."""
    return Response(status_code=400)
