"""The combined server of `pgqueue serve`: v2 REST and WebSocket at the root, v1 under /v1."""

from __future__ import annotations

from fastapi import FastAPI

from pgqueue.settings import Settings
from pgqueue.web import ui


def create_app(settings: Settings | None = None) -> FastAPI:
    from service_publish.app import create_app as create_publish_app
    from service_subscribe.app import install_routes

    app = create_publish_app(settings, with_v1=True)
    app.title = "pgqueue"
    app.summary = "A durable topic queue in PostgreSQL: REST, WebSocket, and the v1 API."
    install_routes(app)
    app.include_router(ui.router)
    return app
