"""GET /ws/topics/{topic}: messages pushed to WebSocket clients (protocol in frames.py).

The token travels in an `Authorization: Bearer` header or, for browsers (which cannot set
headers on a WebSocket), as the subprotocol `bearer.<token>` beside `pgqueue`; the server
answers with `pgqueue`, never echoing the token. Consuming a topic (through a throwaway
subscriber or an existing durable one) takes consume on it; creating a durable subscriber
takes admin.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket
from fastapi.responses import JSONResponse

import pgqueue
from pgqueue.settings import Settings
from pgqueue.web.auth import ADMIN, CONSUME, Caller, keyring_of, presented_token
from pgqueue.web.errors import Told, told
from pgqueue.web.incidents import CLOSE_INTERNAL
from service_subscribe.frames import ErrorFrame, Welcome
from service_subscribe.session import Session

router = APIRouter()
CLOSE_POLICY = 1008  # permanent: clients do not retry
CLOSE_TRY_AGAIN_LATER = 1013  # the database is unavailable (restarting, say): retry
SUBPROTOCOL = "pgqueue"


@router.websocket("/ws/topics/{topic}")
async def websocket_endpoint(
    websocket: WebSocket,
    topic: str,
    subscriber: Annotated[str | None, Query()] = None,
    start: Annotated[str, Query()] = "latest",
    ack: Annotated[str, Query(pattern="^(manual|auto)$")] = "manual",
    prefetch: Annotated[int, Query(ge=1)] = 10,
    lease: Annotated[float | None, Query(gt=0, le=86_400)] = None,
) -> None:
    """Without `subscriber`, an ephemeral subscriber starting at `start` is created for this
    connection and removed when it closes. A named subscriber is created at `start` if it
    does not exist and the token holds admin (and keeps its position if it does)."""
    caller = keyring_of(websocket).caller(presented_token(websocket))
    if caller is None:
        await _deny(websocket, 401, "unauthorized", "a valid bearer token is required")
        return
    if not caller.may(CONSUME, topic):
        detail = f"this token lacks the 'consume' scope on topic {topic!r}"
        await _deny(websocket, 403, "forbidden", detail)
        return
    settings: Settings = websocket.app.state.settings
    queue: pgqueue.Queue = websocket.app.state.queue
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    if prefetch > settings.ws_max_prefetch:
        await _refuse(
            websocket, Told("invalid_argument", f"prefetch is at most {settings.ws_max_prefetch}")
        )
        return
    if lease is not None and lease > settings.max_lease:
        await _refuse(
            websocket, Told("invalid_argument", f"lease is at most {settings.max_lease} s")
        )
        return
    ephemeral = subscriber is None
    name = subscriber or f"ws-{uuid.uuid4().hex[:12]}"
    try:
        found = await _subscriber(queue, caller, topic, name, start, ephemeral)
    except pgqueue.PgQueueError as error:
        await _refuse(websocket, told(error, f"websocket {topic}/{name}: no subscriber"))
        return
    except _CreationForbidden as error:
        await _refuse(websocket, Told("forbidden", str(error)))
        return
    session = Session(
        websocket=websocket,
        queue=queue,
        settings=settings,
        topic=topic,
        subscriber=name,
        ephemeral=ephemeral,
        auto_ack=ack == "auto",
        prefetch=prefetch,
        lease=timedelta(seconds=lease or settings.default_lease),
        caller=caller,
        epoch=found.epoch,
    )
    await session.send(
        Welcome(
            topic=topic,
            subscriber=name,
            position=found.position,
            ephemeral=ephemeral,
            ack="auto" if session.auto_ack else "manual",
            prefetch=prefetch,
        )
    )
    await session.run()


async def _deny(websocket: WebSocket, status: int, code: str, detail: str) -> None:
    """Refuses the handshake with an HTTP answer (JSON), where the server can send one."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            JSONResponse({"error": code, "detail": detail}, status_code=status)
        )
    else:
        await websocket.close(code=CLOSE_POLICY, reason=code)


class _CreationForbidden(Exception):
    pass


async def _subscriber(
    queue: pgqueue.Queue, caller: Caller, topic: str, name: str, start: str, ephemeral: bool
) -> pgqueue.Subscriber:
    """The durable subscriber `name` (created at `start` if the caller holds admin), or a new
    ephemeral one, which only lives as long as this connection."""
    if not ephemeral:
        for existing in await queue.list_subscribers(topic):
            if existing.name == name:
                return existing
        if not caller.may(ADMIN, topic):
            raise _CreationForbidden(
                f"subscriber {name!r} does not exist, and creating one takes the 'admin' scope"
            )
    try:
        return await queue.subscribe(topic, name, start=start, ephemeral=ephemeral)
    except pgqueue.SubscriberExists:  # another connection created it just now
        return next(s for s in await queue.list_subscribers(topic) if s.name == name)


async def _refuse(websocket: WebSocket, said: Told) -> None:
    frame = ErrorFrame(code=said.code, detail=said.detail, id=said.incident_id)
    await websocket.send_text(frame.model_dump_json())
    if said.incident_id is not None:
        close = CLOSE_INTERNAL
    elif said.code == pgqueue.DatabaseUnavailable.code:
        close = CLOSE_TRY_AGAIN_LATER
    else:
        close = CLOSE_POLICY
    await websocket.close(code=close, reason=said.code)
