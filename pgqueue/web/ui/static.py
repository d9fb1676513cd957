"""The dashboard's stylesheet and script, served from the package (the pages work offline)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException
from starlette.responses import Response

FILES = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}

router = APIRouter()


@router.get("/ui/static/{name}")
async def static_file(name: str) -> Response:
    media_type = FILES.get(name)
    if media_type is None:
        raise HTTPException(404, "no such file")
    body = files("pgqueue.web.ui").joinpath("static", name).read_bytes()
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})
