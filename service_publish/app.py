"""The publish service's app factory."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from pgqueue.settings import Settings
from pgqueue.web.app import new_app
from pgqueue.web.state import QueueDep
from service_publish import routes, v1, v1_docs


def create_app(settings: Settings | None = None, *, with_v1: bool = True) -> FastAPI:
    """REST publishing and administration; the v1 API under /v1 unless with_v1 is False."""
    app = new_app(
        settings or Settings(),
        title="pgqueue publish",
        summary="Publish to and administer a PostgreSQL topic queue.",
    )
    app.include_router(routes.router)
    app.include_router(health_router())
    if with_v1:
        app.include_router(v1.router, prefix="/v1")
        v1_docs.document(app, prefix="/v1")
    return app


def health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(queue: QueueDep) -> dict[str, str]:
        """The database answers (503 otherwise)."""
        await queue.ping()
        return {"status": "ready"}

    return router
