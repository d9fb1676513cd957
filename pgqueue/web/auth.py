"""Optional bearer tokens (PGQUEUE_API_TOKENS), each with scopes publish, subscribe, admin.

With no tokens configured every route is open (bind to 127.0.0.1, the default). With tokens,
every route needs one: 401 without a valid token, 403 without the scope. "admin" holds every
scope; read-only routes accept any valid token. WebSocket clients may pass the token as
`?token=` because browsers cannot set headers on a WebSocket.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, WebSocket

from pgqueue.settings import Settings

READ = "read"


def scopes_for(settings: Settings, token: str | None) -> set[str] | None:
    """The token's scopes; None when the token is missing or unknown."""
    if token is None:
        return None
    for known, scopes in settings.api_tokens.items():
        if secrets.compare_digest(known.encode(), token.encode()):
            granted = set(scopes)
            if "admin" in granted:
                granted |= {"publish", "subscribe"}
            return granted | {READ}
    return None


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def check(settings: Settings, token: str | None, scope: str) -> int | None:
    """None when allowed, else the HTTP status to refuse with (401 or 403)."""
    if not settings.api_tokens:
        return None
    granted = scopes_for(settings, token)
    if granted is None:
        return 401
    return None if scope in granted else 403


def require(scope: str) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A route dependency that refuses requests without `scope`."""

    async def dependency(request: Request) -> None:
        settings: Settings = request.app.state.settings
        refused = check(settings, bearer(request.headers.get("authorization")), scope)
        if refused == 401:
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if refused == 403:
            raise HTTPException(403, f"this token lacks the {scope!r} scope")

    return dependency


def websocket_refusal(websocket: WebSocket, scope: str) -> int | None:
    settings: Settings = websocket.app.state.settings
    token = bearer(websocket.headers.get("authorization")) or websocket.query_params.get("token")
    return check(settings, token, scope)
