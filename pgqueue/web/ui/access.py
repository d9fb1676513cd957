"""Who may use the dashboard, and the cookies that carry it between pages.

Browsers cannot send a bearer header when they navigate, so the login form puts the token in
an HttpOnly, SameSite=Strict cookie scoped to /ui. Every page and action checks it with the
API's own token check (one adapter, `token_refusal`). State changes are POST forms carrying a
CSRF token that must equal the value of a second cookie (double submit); SameSite=Strict
already keeps both cookies off cross-site requests.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, Request
from starlette.responses import Response

from pgqueue.web import auth

TOKEN_COOKIE = "pgqueue_ui_token"
CSRF_COOKIE = "pgqueue_ui_csrf"
COOKIE_PATH = "/ui"
ADMIN = "admin"


def tokens_required(request: Request) -> bool:
    """Whether the server has tokens configured (else the dashboard is open, as the API is)."""
    return not auth.keyring_of(request).open


def token_refusal(request: Request, token: str | None) -> int | None:
    """None when `token` may use the dashboard, else 401 (missing or unknown) or 403 (not an
    admin token). The only place the dashboard asks pgqueue.web.auth."""
    caller = auth.keyring_of(request).caller(token)
    if caller is None:
        return 401
    return None if caller.may_everywhere(auth.ADMIN) else 403


class Refused(Exception):
    """A dashboard request that may not go on: the route wrapper answers it with a page."""

    def __init__(self, status: int, message: str, *, login: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.login = login


@dataclass(frozen=True)
class Session:
    """The dashboard caller: signed in (or not needed) and holding a CSRF token for forms."""

    csrf: str
    signed_in: bool


def presented_token(request: Request) -> str | None:
    return request.cookies.get(TOKEN_COOKIE) or auth.presented_token(request)


def csrf_token(request: Request) -> str:
    """The browser's CSRF token; a new one (set as a cookie by the route wrapper) if none."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token:
        token = getattr(request.state, "new_csrf", None) or secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return token


async def admin_session(request: Request) -> Session:
    """The dependency of every page and action: an admin token when tokens are on."""
    if not tokens_required(request):
        return Session(csrf=csrf_token(request), signed_in=False)
    refusal = token_refusal(request, presented_token(request))
    if refusal == 401:
        raise Refused(401, "Sign in with an admin token.", login=True)
    if refusal is not None:
        raise Refused(403, "This token is not an admin token: the dashboard needs one.")
    return Session(csrf=csrf_token(request), signed_in=True)


async def admin_poll(request: Request) -> Session:
    """admin_session for a script's poll: refused with a status, not sent to the login page."""
    try:
        return await admin_session(request)
    except Refused as refusal:
        raise Refused(refusal.status, refusal.message) from None


AdminSession = Annotated[Session, Depends(admin_session)]
AdminPoll = Annotated[Session, Depends(admin_poll)]


async def checked_form(request: Request, csrf: Annotated[str, Form()] = "") -> None:
    """A POST's CSRF token must equal the browser's CSRF cookie."""
    expected = request.cookies.get(CSRF_COOKIE)
    if not expected or not secrets.compare_digest(expected.encode(), csrf.encode()):
        raise Refused(403, "The form expired or came from another site: reload and try again.")


CheckedForm = Depends(checked_form)


def login_location(request: Request) -> str:
    return "/ui/login?next=" + quote(request.url.path, safe="/")


def local_next(next_path: str) -> str:
    """Where to go after signing in: only a dashboard path, never another site."""
    if next_path == "/ui" or next_path.startswith("/ui/"):
        return next_path
    return "/ui"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def remember_token(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        TOKEN_COOKIE,
        token,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def forget_token(request: Request, response: Response) -> None:
    response.delete_cookie(
        TOKEN_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_secure(request)
    )


def keep_csrf(request: Request, response: Response) -> None:
    """Sets the CSRF cookie a page's forms were rendered with, if the browser lacked it."""
    token = getattr(request.state, "new_csrf", None)
    if token:
        response.set_cookie(
            CSRF_COOKIE,
            token,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=_secure(request),
        )
