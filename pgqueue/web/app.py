"""The skeleton every pgqueue HTTP app shares."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

from pgqueue.settings import Settings
from pgqueue.web import errors, methods, openapi
from pgqueue.web.incidents import CatchAll
from pgqueue.web.limits import BodyLimit
from pgqueue.web.state import queue_lifespan


def operation_id(route: APIRoute) -> str:
    """The endpoint's name: list_topics, not list_topics_topics_get."""
    return route.name


def new_app(settings: Settings, *, title: str, summary: str) -> FastAPI:
    """A FastAPI app whose lifespan opens the Queue, with our error handlers and body limit.

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
    errors.install(app)
    methods.install(app)
    openapi.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    # Added last, so it is the outermost: it also covers the middleware above.
    app.add_middleware(CatchAll)
    return app
