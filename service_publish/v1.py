"""The seed-compatible v1 API (SPEC §4.5), served under /v1.

Scripts written for the queue-sample project's QPublisher/QSubscriber keep working: POST
takes a JSON body, GET takes query parameters, responses are application/json, and problems
are 422. v1 subscribers are pgqueue subscribers named "v1-<id>"; their `_offset` is the
position (the last offset acked).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

import pgqueue
from pgqueue.errors import shorten
from pgqueue.targets import BIGINT_MAX
from pgqueue.web.auth import READ, require
from pgqueue.web.bodies import loads
from pgqueue.web.rates import rate_limit
from pgqueue.web.state import QueueDep

router = APIRouter(tags=["v1 (seed-compatible)"])
MAX_LISTED = 10_000
# ASCII digits only: int() also reads other scripts' digits ("١٢" as 12).
_INTEGER = re.compile(r"-?[0-9]+")


class V1Error(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


async def v1_params(request: Request) -> dict[str, Any]:
    """Query parameters, overlaid with the JSON body's fields when there is one."""
    params: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if body.strip():
        # Raised from a dependency, these reach the app's PgQueueError handler (422).
        try:
            data = loads(body)
        except ValueError as error:
            raise pgqueue.InvalidArgument(f"malformed JSON body: {error}") from error
        if not isinstance(data, dict):
            raise pgqueue.InvalidArgument("the JSON body must be an object")
        _check_names(data)
        params.update(data)
    return params


def _check_names(data: dict[str, Any]) -> None:
    """A topic or description in a JSON body is a string: false must not become topic "False"."""
    for field in ("topic", "description"):
        if field in data and not isinstance(data[field], str):
            raise pgqueue.InvalidArgument(f"{field} must be a string, got {data[field]!r}")


Params = dict[str, Any]
ParamsDep = Annotated[Params, Depends(v1_params)]
Handler = Callable[[pgqueue.Queue, Params], Awaitable[Any]]


def _route(path: str, methods: list[str], scope: str) -> Callable[[Handler], Handler]:
    """Registers a v1 handler: parameters in, JSON out, PgQueueError and V1Error → 422."""

    def register(handler: Handler) -> Handler:
        async def endpoint(queue: QueueDep, params: ParamsDep) -> JSONResponse:
            try:
                result = await handler(queue, params)
            except V1Error as error:
                return JSONResponse({"error": "invalid_request", "detail": error.detail}, 422)
            except (
                pgqueue.TopicNotFound,
                pgqueue.SubscriberNotFound,
                pgqueue.TopicExists,
                pgqueue.InvalidName,
                pgqueue.InvalidArgument,
                pgqueue.InvalidPayload,
                pgqueue.InvalidPosition,
                pgqueue.PayloadTooLarge,
                pgqueue.LimitReached,
            ) as error:
                return JSONResponse({"error": error.code, "detail": str(error)}, 422)
            return JSONResponse(result)

        endpoint.__name__ = f"v1_{handler.__name__}"
        endpoint.__doc__ = handler.__doc__
        router.add_api_route(
            path,
            endpoint,
            methods=methods,
            dependencies=[Depends(require(scope)), *_rate_limited(scope)],
            response_class=JSONResponse,
        )
        return handler

    return register


def _rate_limited(scope: str) -> list[Any]:
    """Publish and admin calls count against the caller's rates (pgqueue.web.rates)."""
    if scope == "publish":
        return [Depends(rate_limit("publish"))]
    if scope == "admin":
        return [Depends(rate_limit("admin"))]
    return []


def _required(params: Params, name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise V1Error(f"missing parameter {name!r}")
    return value


def _integer(params: Params, name: str, default: int | None = None) -> int:
    """An integer from JSON (not true, not 1.0) or from ASCII digits, within a bigint."""
    value = params.get(name, default)
    if value is None or value == "":
        raise V1Error(f"missing parameter {name!r}")
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        # Over 19 digits is past a bigint (and int() refuses 4,300 digits and more).
        number = BIGINT_MAX + 1 if len(value.strip().lstrip("-")) > 19 else int(value)
    else:
        raise V1Error(f"{name} must be an integer, got {shorten(repr(value), 40)}")
    if abs(number) > BIGINT_MAX:
        raise V1Error(f"{name} is out of range (at most {BIGINT_MAX})")
    return number


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _text(payload: Any) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload)


def _message_row(m: pgqueue.StoredMessage) -> dict[str, Any]:
    return {
        "id": m.message_id,
        "topic": m.topic,
        "_offset": m.offset,
        "message": _text(m.payload),
        "publish_ts": _iso(m.published_at),
    }


def _subscriber_row(s: pgqueue.Subscriber) -> dict[str, Any]:
    return {
        "id": s.subscriber_id,
        "topic": s.topic,
        "_offset": s.position,
        "action_ts": _iso(s.created_at),
    }


async def _subscriber(queue: pgqueue.Queue, params: Params) -> pgqueue.Subscriber:
    return await queue.subscriber_by_id(_integer(params, "subscriber_id"))


@_route("/topic", ["POST", "GET"], "admin")
async def create_topic(queue: pgqueue.Queue, params: Params) -> Any:
    """Create a topic (topic, description)."""
    name, description = _required(params, "topic"), _required(params, "description")
    await queue.create_topic(str(name), description=str(description))
    return {"topic": name, "message": f"topic {name} created"}


@_route("/topic_delete", ["POST", "GET", "DELETE"], "admin")
async def delete_topic(queue: pgqueue.Queue, params: Params) -> Any:
    """Delete a topic with its messages and subscribers (topic)."""
    name = str(_required(params, "topic"))
    await queue.delete_topic(name)
    return {"topic": name, "message": f"topic {name} deleted"}


@_route("/topics", ["GET"], READ)
async def list_topics(queue: pgqueue.Queue, params: Params) -> Any:
    """List topics ([topic])."""
    topics = await queue.list_topics(params.get("topic") or None)
    return [
        {"topic": t.name, "description": t.description, "create_ts": _iso(t.created_at)}
        for t in topics
    ]


@_route("/publish", ["POST", "GET"], "publish")
async def publish(queue: pgqueue.Queue, params: Params) -> Any:
    """Publish a text message (topic, message)."""
    name, message = str(_required(params, "topic")), _required(params, "message")
    offset = await queue.publish(name, message if isinstance(message, str) else str(message))
    return {"topic": name, "offset": offset}


@_route("/topic_messages", ["GET"], READ)
async def topic_messages(queue: pgqueue.Queue, params: Params) -> Any:
    """List stored messages ([topic])."""
    names = (
        [params["topic"]] if params.get("topic") else [t.name for t in await queue.list_topics()]
    )
    rows: list[dict[str, Any]] = []
    for name in names:
        rows.extend(_message_row(m) for m in await queue.read(str(name), limit=MAX_LISTED))
    return rows


@_route("/topic_subscribers", ["GET"], READ)
async def topic_subscribers(queue: pgqueue.Queue, params: Params) -> Any:
    """List subscribers ([topic])."""
    return [_subscriber_row(s) for s in await queue.list_subscribers(params.get("topic") or None)]


@_route("/subscribe", ["GET", "POST"], "subscribe")
async def subscribe(queue: pgqueue.Queue, params: Params) -> Any:
    """Subscribe to a topic from its next message on (topic)."""
    name = str(_required(params, "topic"))
    subscriber = await queue.subscribe(name, f"v1-{uuid.uuid4().hex[:12]}", start="latest")
    return {"topic": name, "subscriber_id": subscriber.subscriber_id}


@_route("/unsubscribe", ["POST", "GET", "DELETE"], "subscribe")
async def unsubscribe(queue: pgqueue.Queue, params: Params) -> Any:
    """Remove a subscriber (subscriber_id)."""
    subscriber = await _subscriber(queue, params)
    await queue.unsubscribe(subscriber.topic, subscriber.name)
    return {"subscriber_id": subscriber.subscriber_id, "message": "unsubscribed"}


@_route("/get_message", ["GET"], "subscribe")
async def get_message(queue: pgqueue.Queue, params: Params) -> Any:
    """The next messages after the subscriber's position, without moving it
    (subscriber_id, num_messages 1-20)."""
    subscriber = await _subscriber(queue, params)
    count = _integer(params, "num_messages", 1)
    if not 1 <= count <= 20:
        raise V1Error(f"num_messages is 1 to 20, got {count}")
    messages = await queue.read(subscriber.topic, from_offset=subscriber.position + 1, limit=count)
    # _epoch (extra; seed clients ignore it) lets a client's ack say what it read under.
    rows = [{**_message_row(m), "_epoch": subscriber.epoch} for m in messages]
    return rows[0] if len(rows) == 1 else rows


@_route("/ack_message", ["POST"], "subscribe")
async def ack_message(queue: pgqueue.Queue, params: Params) -> Any:
    """Move the subscriber's position to offset (subscriber_id, offset[, epoch]).

    With `epoch` (the `_epoch` get_message returned) the move is skipped if the subscriber
    was reset since: a late ack must not undo a topic reset.
    """
    subscriber = await _subscriber(queue, params)
    offset = _integer(params, "offset")
    if offset < 0:
        raise V1Error(f"offset must not be negative, got {offset}")
    epoch = _integer(params, "epoch") if params.get("epoch") is not None else None
    await queue.reset(
        subscriber.topic, subscriber=subscriber.name, to=offset + 1, if_epoch=epoch, quiet=True
    )
    return _subscriber_row(await queue.subscriber_by_id(subscriber.subscriber_id))


@_route("/topic_reset", ["POST", "GET"], "admin")
async def topic_reset(queue: pgqueue.Queue, params: Params) -> Any:
    """Every subscriber of the topic next receives offset (topic, offset default 1)."""
    name = str(_required(params, "topic"))
    offset = _integer(params, "offset", 1)
    if offset < 1:
        raise V1Error(f"offsets start at 1, got {offset}")
    results = await queue.reset(name, to=offset)
    return {"topic": name, "offset": offset, "subscriber_count": len(results)}
