"""HTTP pull for consumers that cannot hold a socket: claim, ack, nack by subscriber id.

Each call needs the consume scope on the subscriber's topic; with tokens on, an unknown id is
refused like a forbidden one (403).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

import pgqueue
from pgqueue.delivery import reject
from pgqueue.publish import seconds
from pgqueue.web.auth import CONSUME, CallerDep, subscriber_for
from pgqueue.web.bodies import JsonRoute
from pgqueue.web.openapi import SAFE_INTEGER
from pgqueue.web.state import QueueDep, consumer_name
from service_publish.fields import LeaseToken, Offset
from service_publish.schemas import Strict

router = APIRouter(prefix="/subscribers/{subscriber_id}", tags=["pull"], route_class=JsonRoute)
SubscriberId = Annotated[int, Path(ge=1, lt=SAFE_INTEGER)]


async def consumed_subscriber(
    subscriber_id: SubscriberId, queue: QueueDep, caller: CallerDep
) -> pgqueue.Subscriber:
    return await subscriber_for(queue, caller, subscriber_id, CONSUME)


SubscriberDep = Annotated[pgqueue.Subscriber, Depends(consumed_subscriber)]


class ClaimIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"max_messages": 10, "lease_ms": 30000}]},
    )
    max_messages: int = Field(default=1, ge=1, le=10_000)
    """At most this many messages; fewer (or none) when fewer are due."""
    lease_ms: int | None = Field(default=None, gt=0, le=86_400_000)
    """How long the messages are yours; none: the server's PGQUEUE_DEFAULT_LEASE."""


class ClaimedOut(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)
    topic: str
    """The subscriber's topic."""
    offset: int
    """The message's offset."""
    lease_token: int
    """Give it back with the ack or nack: a lease taken over since refuses it."""
    attempt: int
    """1 for the first delivery."""
    key: str | None
    """The ordering key given at publish."""
    headers: dict[str, str]
    """String attributes given at publish."""
    payload: Any
    """The JSON value published."""
    published_at: datetime
    """When the publish committed."""


class ClaimOut(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)
    messages: list[ClaimedOut]
    """The messages now leased to you; empty when nothing is due."""


class AckIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"offsets": [1, 2], "lease_tokens": [7]}]},
    )
    offsets: list[Offset] = Field(min_length=1, max_length=10_000)
    """The offsets processed."""
    lease_tokens: list[LeaseToken] = Field(min_length=1, max_length=10_000)
    """The lease tokens of the claims that returned them."""


class AckOut(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)
    acked: list[int]
    """Offsets now done."""
    lost: list[int]
    """Offsets no longer leased to you: another consumer has them now."""


class NackIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"offset": 1, "lease_token": 7, "error": "timeout"}]},
    )
    offset: Offset
    """The offset given back."""
    lease_token: LeaseToken
    """The lease token of the claim that returned it."""
    delay_ms: int | None = Field(default=None, ge=0, le=366 * 24 * 3600 * 1000)
    """Retry after this long instead of the subscriber's backoff."""
    error: str | None = Field(default=None, max_length=10_000)
    """Why, kept with the message if it is dead-lettered."""


class NackOut(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)
    state: str
    """What became of the message: retry (delivered again later) or dead."""


@router.post("/claim", response_model=ClaimOut)
async def claim(request: Request, s: SubscriberDep, body: ClaimIn, queue: QueueDep) -> Response:
    """Lease up to max_messages messages of the subscriber, for lease_ms (at most
    PGQUEUE_MAX_LEASE)."""
    max_lease = request.app.state.settings.max_lease
    if body.lease_ms and body.lease_ms > max_lease * 1000:
        raise pgqueue.InvalidArgument(f"lease_ms is at most {int(max_lease * 1000)} here")
    lease = seconds(body.lease_ms / 1000) if body.lease_ms else None
    messages = await queue.claim(
        s.topic,
        s.name,
        body.max_messages,
        lease=lease,
        consumer=consumer_name("http", request.client),
    )
    # Encoded one by one: the leases are committed, so a message that cannot be encoded
    # must cost only itself (nacked, retried, dead-lettered alone), not a 500 for the batch.
    encoded = []
    for m in messages:
        try:
            encoded.append(
                ClaimedOut(
                    topic=m.topic,
                    offset=m.offset,
                    lease_token=m.lease_token,
                    attempt=m.attempt,
                    key=m.key,
                    headers=m.headers,
                    payload=m.payload,
                    published_at=m.published_at,
                ).model_dump_json()
            )
        except Exception as error:
            await reject(queue, m, error)
    return Response('{"messages":[' + ",".join(encoded) + "]}", media_type="application/json")


@router.post("/ack")
async def ack(s: SubscriberDep, body: AckIn, queue: QueueDep) -> AckOut:
    """Mark claimed messages done; offsets whose lease was lost are listed apart."""
    done = await queue.ack(s.topic, s.name, body.offsets, body.lease_tokens)
    return AckOut(acked=done, lost=sorted(set(body.offsets) - set(done)))


@router.post("/nack")
async def nack(s: SubscriberDep, body: NackIn, queue: QueueDep) -> NackOut:
    """Give a claimed message back: retried after the backoff, or dead-lettered."""
    delay = seconds(body.delay_ms / 1000) if body.delay_ms is not None else None
    state = await queue.nack_offset(
        s.topic, s.name, body.offset, body.lease_token, delay=delay, error=body.error
    )
    return NackOut(state=state)
