"""What every request must show before it is routed: a Host we serve, an Origin we trust when
it could change state, and JSON bodies declared as application/json.

A web page the operator visits can make the browser send requests to the server (a form POST,
an <img>, a WebSocket) and, through DNS rebinding, even read answers under its own name. The
Host allow-list stops rebinding; the Origin check and the JSON-only rule stop cross-site
requests that change state, with or without tokens. Clients that are not browsers send no
Origin and pass.
"""

from __future__ import annotations

import ipaddress
import json
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from fastapi import Request
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from pgqueue.settings import Settings
from pgqueue.web.auth import forbidden

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Sec-Fetch-Site values of requests a browser makes on another site's behalf.
FOREIGN_FETCH = frozenset({"cross-site", "same-site"})
ANY = "*"


class Gate:
    """The Host and Origin allow-lists of one server."""

    def __init__(self, settings: Settings) -> None:
        hosts = [*LOOPBACK_HOSTS, *settings.allowed_hosts]
        if not _is_wildcard_address(settings.host):
            hosts.append(settings.host)
        self.hosts = [h.lower().strip("[]") for h in hosts]
        self.origins = [o.lower().rstrip("/") for o in settings.allowed_origins]

    def host_allowed(self, host_header: str | None) -> bool:
        if host_header is None:  # HTTP/1.0 clients; browsers always send one
            return True
        name = _host_name(host_header)
        return any(fnmatchcase(name, pattern) for pattern in self.hosts)

    def cross_site(self, headers: Headers) -> str | None:
        """Why a request that could change state is refused as cross-site, or None."""
        origin = headers.get("origin")
        if origin is None:
            # Browsers always send Origin with POST and WebSocket, but not with a GET made by
            # an <img> or a link: Sec-Fetch-Site tells those apart.
            if headers.get("sec-fetch-site") in FOREIGN_FETCH:
                return "a cross-site request may not change state"
            return None
        origin = origin.lower().rstrip("/")
        if ANY in self.origins or origin in self.origins:
            return None
        if urlsplit(origin).netloc == (headers.get("host") or "").lower():
            return None  # same origin as the server's own pages (/docs)
        return f"origin {origin!r} is not allowed (PGQUEUE_ALLOWED_ORIGINS)"


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8888
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0].rstrip(".") if host.count(":") <= 1 else host


def _is_wildcard_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


class RequestGate:
    """ASGI middleware: 400 for a Host not served, 403 for a cross-site request that could
    change state (any WebSocket handshake, POST/PUT/PATCH/DELETE), 415 for a body that is not
    application/json."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, detail = refusal
        await _refuse(scope, send, status, code, detail)

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str, str] | None:
        if not self.gate.host_allowed(headers.get("host")):
            return 400, "host_not_allowed", "this Host is not served (PGQUEUE_ALLOWED_HOSTS)"
        websocket = scope["type"] == "websocket"
        if websocket or scope["method"] in UNSAFE_METHODS:
            reason = self.gate.cross_site(headers)
            if reason is not None:
                return 403, "forbidden", reason
        if not websocket and _has_body(headers) and not _body_accepted(scope, headers):
            return 415, "unsupported_media_type", "request bodies are application/json"
        return None


def _body_accepted(scope: Scope, headers: Headers) -> bool:
    """JSON everywhere; HTML forms only for the dashboard, whose forms also carry a CSRF token
    and a SameSite=Strict cookie, and passed the Origin check above."""
    content_type = headers.get("content-type")
    if _is_json(content_type):
        return True
    media = (content_type or "").split(";", 1)[0].strip().lower()
    path: str = scope.get("path", "")
    return media == "application/x-www-form-urlencoded" and path.startswith(UI_PREFIX)


UI_PREFIX = "/ui/"


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    return "transfer-encoding" in headers or (length is not None and length.strip() != "0")


def _is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


async def _refuse(scope: Scope, send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def refuse_cross_site(request: Request) -> None:
    """A dependency for the few GET routes that change state (the v1 contract's)."""
    reason = request.app.state.gate.cross_site(request.headers)
    if reason is not None:
        raise forbidden(reason)
