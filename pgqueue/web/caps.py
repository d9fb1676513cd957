"""Caps on open WebSockets per process: in all, and per caller (token, or address when the
deployment has no tokens). A handshake beyond a cap gets an HTTP answer, never an upgrade:
503 when the server is full, 429 when the caller has its share."""

from __future__ import annotations

import json
from collections import Counter

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from pgqueue.settings import Settings
from pgqueue.web.callers import caller_key

CLOSE_TRY_AGAIN_LATER = 1013  # only where the server cannot answer a handshake over HTTP


class WebSocketCaps:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_open = settings.ws_max_connections
        self.max_per_caller = settings.ws_max_per_token
        self.open = 0
        self.by_caller: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        caller = caller_key(HTTPConnection(scope))
        if self.open >= self.max_open:
            await _deny(
                scope,
                receive,
                send,
                503,
                "too_many_websockets",
                f"the server has {self.max_open} WebSockets open, its limit; try again later",
            )
            return
        if self.by_caller[caller] >= self.max_per_caller:
            await _deny(
                scope,
                receive,
                send,
                429,
                "too_many_websockets",
                f"a caller may have {self.max_per_caller} WebSockets open at once",
            )
            return
        self.open += 1
        self.by_caller[caller] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1
            self.by_caller[caller] -= 1
            if not self.by_caller[caller]:
                del self.by_caller[caller]


async def _deny(
    scope: Scope, receive: Receive, send: Send, status: int, code: str, detail: str
) -> None:
    await receive()  # websocket.connect
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER, "reason": code})
        return
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
