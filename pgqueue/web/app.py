"""The skeleton every pgqueue HTTP app shares."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from starlette.requests import ClientDisconnect

from pgqueue.settings import Settings
from pgqueue.web import errors, methods, metrics, openapi, rates
from pgqueue.web.auth import Keyring
from pgqueue.web.caps import WebSocketCaps
from pgqueue.web.gate import Gate, RequestGate
from pgqueue.web.incidents import CatchAll
from pgqueue.web.limits import BodyLimit
from pgqueue.web.logs import scrub_tokens_from_uvicorn_logs
from pgqueue.web.state import queue_lifespan


def operation_id(route: APIRoute) -> str:
    """The endpoint's name: list_topics, not list_topics_topics_get."""
    return route.name


def new_app(settings: Settings, *, title: str, summary: str) -> FastAPI:
    """A FastAPI app whose lifespan opens the Queue, with our error handlers, body limit,
    tokens, per-caller rates, WebSocket caps, metrics, and a Host/Origin/content-type gate.

    Swagger UI (/docs) and ReDoc (/redoc) load their scripts from this server, not a CDN, so
    they work offline.
    """
    app = FastAPIOffline(
        title=title,
        summary=summary,
        version="0.1.0",
        lifespan=queue_lifespan,
        generate_unique_id_function=operation_id,
        # Swagger UI would otherwise send the document to an online validator for its badge.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    app.state.queue = None
    app.state.keyring = Keyring(settings)
    app.state.gate = Gate(settings)
    errors.install(app)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    rates.install(app, settings)
    methods.install(app)
    openapi.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(WebSocketCaps, settings=settings)
    metrics.install(app)
    app.add_middleware(RequestGate, gate=app.state.gate)  # outermost: checked first
    scrub_tokens_from_uvicorn_logs()
    # Added last, so it is the outermost: it also covers the middleware above.
    app.add_middleware(CatchAll)
    return app


async def _client_gone(_request: Request, _error: Exception) -> Response:
    """The client left, or was cut off (pgqueue.web.protocol's body deadline), before its
    body arrived: not an error of ours, and nobody reads the answer."""
    return Response(status_code=400)
