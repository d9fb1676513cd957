"""The skeleton every pgqueue HTTP app shares."""

from __future__ import annotations

from fastapi import FastAPI

from pgqueue.settings import Settings
from pgqueue.web import errors
from pgqueue.web.auth import Keyring
from pgqueue.web.gate import Gate, RequestGate
from pgqueue.web.limits import BodyLimit
from pgqueue.web.logs import scrub_tokens_from_uvicorn_logs
from pgqueue.web.state import queue_lifespan


def new_app(settings: Settings, *, title: str, summary: str) -> FastAPI:
    """A FastAPI app whose lifespan opens the Queue, with our error handlers, body limit,
    tokens, and Host/Origin/content-type gate."""
    app = FastAPI(title=title, summary=summary, version="0.1.0", lifespan=queue_lifespan)
    app.state.settings = settings
    app.state.queue = None
    app.state.keyring = Keyring(settings)
    app.state.gate = Gate(settings)
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestGate, gate=app.state.gate)  # outermost: checked first
    scrub_tokens_from_uvicorn_logs()
    return app
