"""GET /ws/topics/{topic}: messages pushed to WebSocket clients (protocol in frames.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket

import pgqueue
from pgqueue.settings import Settings
from pgqueue.web.auth import websocket_refusal
from pgqueue.web.errors import Told, told
from pgqueue.web.incidents import CLOSE_INTERNAL
from service_subscribe.frames import ErrorFrame, Welcome
from service_subscribe.session import Session

router = APIRouter()
CLOSE_POLICY = 1008  # permanent: clients do not retry
CLOSE_TRY_AGAIN_LATER = 1013  # the database is unavailable (restarting, say): retry


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
    does not exist (and keeps its position if it does)."""
    if websocket_refusal(websocket, "subscribe") is not None:
        await websocket.close(
            code=CLOSE_POLICY, reason="a token with the subscribe scope is required"
        )
        return
    settings: Settings = websocket.app.state.settings
    queue: pgqueue.Queue = websocket.app.state.queue
    await websocket.accept()
    if prefetch > settings.ws_max_prefetch:
        await _refuse(
            websocket, Told("invalid_argument", f"prefetch is at most {settings.ws_max_prefetch}")
        )
        return
    ephemeral = subscriber is None
    name = subscriber or f"ws-{uuid.uuid4().hex[:12]}"
    try:
        found = await _subscriber(queue, topic, name, start, ephemeral)
    except pgqueue.PgQueueError as error:
        await _refuse(websocket, told(error, f"websocket {topic}/{name}: no subscriber"))
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
        may_publish=websocket_refusal(websocket, "publish") is None,
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


async def _subscriber(
    queue: pgqueue.Queue, topic: str, name: str, start: str, ephemeral: bool
) -> pgqueue.Subscriber:
    if not ephemeral:
        for existing in await queue.list_subscribers(topic):
            if existing.name == name:
                return existing
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
