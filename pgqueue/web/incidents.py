"""Unexpected errors: logged with an id and the traceback, answered with the id only.

A client never sees a stack trace or a database's words; it gets
{"error": "internal", "detail": ..., "id": ...} (HTTP 500), or an error frame with the id
before the WebSocket closes with 1011, and the operator finds the id in the log.
"""

from __future__ import annotations

import json
import logging
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

DETAIL = "an unexpected error; the server's log has the details under this id"
CLOSE_INTERNAL = 1011


def incident(what: str, error: BaseException) -> str:
    """Logs error with its traceback under a new id, and returns the id."""
    incident_id = str(uuid.uuid4())
    log.error("%s [incident %s]: %r", what, incident_id, error, exc_info=error)
    return incident_id


def internal_body(incident_id: str) -> dict[str, str]:
    return {"error": "internal", "detail": DETAIL, "id": incident_id}


class CatchAll:
    """The outermost guard: whatever escapes the app's own handlers ends here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = {"started": False, "closed": False}

        async def tracking_send(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.accept"):
                state["started"] = True
            elif kind in ("websocket.close", "websocket.http.response.start"):
                state["closed"] = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            incident_id = incident(f"{scope['type']} {scope.get('path', '')} failed", error)
            if scope["type"] == "http":
                await _answer_http(send, incident_id, started=state["started"])
            elif not state["closed"]:
                await _answer_websocket(send, incident_id, accepted=state["started"])


async def _answer_http(send: Send, incident_id: str, *, started: bool) -> None:
    if started:
        return  # the status line is out: the server ends the response where it stands
    body = json.dumps(internal_body(incident_id)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _answer_websocket(send: Send, incident_id: str, *, accepted: bool) -> None:
    try:
        if accepted:
            frame = {"type": "error", "code": "internal", "detail": DETAIL, "id": incident_id}
            await send({"type": "websocket.send", "text": json.dumps(frame)})
        await send({"type": "websocket.close", "code": CLOSE_INTERNAL, "reason": "internal error"})
    except Exception as error:  # the client is gone already
        log.debug("could not report incident %s to the client: %r", incident_id, error)
