"""405 answers that list every method a path serves.

Starlette answers a method a path does not serve from the first route whose path matched, so
a path served by several routes (GET by one, PATCH and DELETE by others) was said to allow
GET only, OPTIONS included.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.routing import Match


def allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


async def method_not_allowed(request: Request, _error: Exception) -> JSONResponse:
    allowed = allowed_methods(request)
    return JSONResponse(
        {
            "error": "method_not_allowed",
            "detail": f"{request.method} is not served here; allowed: {', '.join(allowed)}",
        },
        status_code=405,
        headers={"Allow": ", ".join(allowed)},
    )


def install(app: FastAPI) -> None:
    # Keyed by status, this handler comes before the HTTPException handler of errors.py.
    app.add_exception_handler(405, method_not_allowed)
