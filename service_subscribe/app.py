"""The subscribe service's app factory."""

from __future__ import annotations

from fastapi import FastAPI

from pgqueue.settings import Settings
from pgqueue.web.app import new_app
from service_publish.app import health_router
from service_subscribe import pull, websocket


def create_app(settings: Settings | None = None) -> FastAPI:
    """WebSocket delivery at /ws/topics/{topic} and HTTP pull at /subscribers/{id}/..."""
    app = new_app(
        settings or Settings(),
        title="pgqueue subscribe",
        summary="Receive messages over WebSocket or HTTP pull.",
    )
    install_routes(app)
    app.include_router(health_router())
    return app


def install_routes(app: FastAPI) -> None:
    app.include_router(websocket.router)
    app.include_router(pull.router)
