"""HTTP pull for consumers that cannot hold a socket: claim, ack, nack by subscriber id."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from pgqueue.delivery import reject
from pgqueue.publish import seconds
from pgqueue.targets import BIGINT_MAX
from pgqueue.web.auth import require
from pgqueue.web.bodies import JsonRoute
from pgqueue.web.fields import BigInt, Offset
from pgqueue.web.state import QueueDep, consumer_name

router = APIRouter(
    prefix="/subscribers/{subscriber_id}",
    tags=["pull"],
    dependencies=[Depends(require("subscribe"))],
    route_class=JsonRoute,
)
SubscriberId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_messages: StrictInt = Field(default=1, ge=1, le=10_000)
    lease_ms: StrictInt | None = Field(default=None, gt=0, le=86_400_000)


class ClaimedOut(BaseModel):
    topic: str
    offset: int
    lease_token: int
    attempt: int
    key: str | None
    headers: dict[str, str]
    payload: Any
    published_at: datetime


class ClaimOut(BaseModel):
    messages: list[ClaimedOut]


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offsets: list[Offset] = Field(min_length=1, max_length=10_000)
    lease_tokens: list[BigInt] = Field(min_length=1, max_length=10_000)


class AckOut(BaseModel):
    acked: list[int]
    lost: list[int]


class NackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offset: Offset
    lease_token: BigInt
    delay_ms: StrictInt | None = Field(default=None, ge=0, le=366 * 24 * 3600 * 1000)
    error: str | None = Field(default=None, max_length=10_000)


class NackOut(BaseModel):
    state: str


@router.post("/claim", response_model=ClaimOut)
async def claim(
    subscriber_id: SubscriberId, body: ClaimIn, queue: QueueDep, request: Request
) -> Response:
    s = await queue.subscriber_by_id(subscriber_id)
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
async def ack(subscriber_id: SubscriberId, body: AckIn, queue: QueueDep) -> AckOut:
    s = await queue.subscriber_by_id(subscriber_id)
    done = await queue.ack(s.topic, s.name, body.offsets, body.lease_tokens)
    return AckOut(acked=done, lost=sorted(set(body.offsets) - set(done)))


@router.post("/nack")
async def nack(subscriber_id: SubscriberId, body: NackIn, queue: QueueDep) -> NackOut:
    s = await queue.subscriber_by_id(subscriber_id)
    delay = seconds(body.delay_ms / 1000) if body.delay_ms is not None else None
    state = await queue.nack_offset(
        s.topic, s.name, body.offset, body.lease_token, delay=delay, error=body.error
    )
    return NackOut(state=state)
