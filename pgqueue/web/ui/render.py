"""Pages from templates, and the route class that gives every dashboard answer its
refusal pages, error pages and security headers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pgqueue import errors
from pgqueue.web.errors import status_of
from pgqueue.web.ui import access, views

log = logging.getLogger(__name__)

# The pages load nothing from elsewhere and run only the server's own script, and no other
# site may frame them (their buttons change state).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def topic_path(topic: str) -> str:
    return "/ui/topics/" + quote(topic, safe="")


def subscriber_path(topic: str, subscriber: str) -> str:
    return f"{topic_path(topic)}/subscribers/{quote(subscriber, safe='')}"


def tail_path(topic: str) -> str:
    return topic_path(topic) + "/tail"


def time_text(moment: datetime | None) -> str:
    return "—" if moment is None else moment.isoformat(sep=" ", timespec="seconds")


templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.PackageLoader("pgqueue.web.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)
templates.env.globals.update(
    topic_path=topic_path,
    subscriber_path=subscriber_path,
    tail_path=tail_path,
    time_text=time_text,
    preview=views.preview,
    duration_text=views.duration_text,
    bytes_text=views.bytes_text,
    rate_text=views.rate_text,
)


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    context.setdefault("notice", None)
    context.setdefault("session", None)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def refused_page(request: Request, status: int, title: str, message: str) -> Response:
    return page(request, "refused.html", {"title": title, "message": message}, status)


def _refusal(request: Request, refusal: access.Refused) -> Response:
    if refusal.login and request.method == "GET":
        return RedirectResponse(access.login_location(request), status_code=303)
    title = "Sign in needed" if refusal.status == 401 else "Not allowed"
    return refused_page(request, refusal.status, title, refusal.message)


def _failure(request: Request, error: errors.PgQueueError) -> Response:
    status = status_of(error)
    if status >= 500 and not isinstance(error, errors.DatabaseUnavailable):
        log.warning("dashboard request failed: %s", error, exc_info=error)
    # The library's messages are written for callers (no SQL, no internals), as on the API.
    message = str(error) if status < 500 else "The database is unavailable or failed; try again."
    return refused_page(request, status, "Could not do that", message)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class DashboardRoute(APIRoute):
    """Refusals and library errors become pages (a browser shows them), and every answer
    carries the security headers and the CSRF cookie its forms need."""

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()

        async def dashboard_handler(request: Request) -> Response:
            try:
                response = await handle(request)
            except access.Refused as refusal:
                response = _refusal(request, refusal)
            except errors.PgQueueError as error:
                response = _failure(request, error)
            response.headers.update(SECURITY_HEADERS)
            access.keep_csrf(request, response)
            return response

        return dashboard_handler
