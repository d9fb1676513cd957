"""The operator dashboard at /ui: server-rendered pages, their own CSS and script, no CDN."""

from __future__ import annotations

from fastapi import APIRouter

from pgqueue.web.ui import actions, pages, static

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(actions.router)
router.include_router(static.router)

__all__ = ["router"]
