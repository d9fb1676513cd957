"""Who a request or WebSocket is, for the per-caller limits (rates, WebSocket caps)."""

from __future__ import annotations

import hashlib

from starlette.requests import HTTPConnection

from pgqueue.settings import Settings
from pgqueue.web.auth import presented_token


def caller_key(connection: HTTPConnection) -> str:
    """The presented token (as a digest: limits keep no secrets) when the deployment has
    tokens; otherwise the client's address. With no tokens every caller is anonymous, and a
    single shared bucket would let one client starve the others."""
    settings: Settings = connection.app.state.settings
    token = presented_token(connection) if settings.api_tokens else None
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()
    client = connection.client
    return "address:" + (client.host if client is not None else "unknown")
