"""The seed-compatible v1 API (SPEC §4.5), served under /v1.

Scripts written for the queue-sample project's QPublisher/QSubscriber keep working: POST
takes a JSON body, GET takes query parameters, responses are application/json, and problems
are 422. v1 subscribers are pgqueue subscribers named "v1-<id>"; their `_offset` is the
position (the last offset acked).

Each route answers only the method the queue-sample clients use; two GETs change state
because the contract says so (subscribe, topic_reset), and refuse cross-site requests. Every
call holds its scope on the topic it acts on, as on the v2 routes.
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
from pgqueue.web.auth import ADMIN, CONSUME, PUBLISH, SEE, Caller, CallerDep, subscriber_for
from pgqueue.web.bodies import loads
from pgqueue.web.gate import refuse_cross_site
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
Handler = Callable[[pgqueue.Queue, Params, Caller], Awaitable[Any]]


def _route(path: str, method: str, *, changes_state: bool = False) -> Callable[[Handler], Handler]:
    """Registers a v1 handler: parameters in, JSON out, PgQueueError and V1Error → 422."""

    def register(handler: Handler) -> Handler:
        # The caller first: no token is a 401 whatever the parameters are.
        async def endpoint(caller: CallerDep, queue: QueueDep, params: ParamsDep) -> JSONResponse:
            try:
                result = await handler(queue, params, caller)
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
            methods=[method],
            dependencies=[
                *([Depends(refuse_cross_site)] if method == "GET" and changes_state else []),
                *_rate_limited(RATED.get(path)),
            ],
            response_class=JSONResponse,
        )
        return handler

    return register


# Publish and admin calls count against the caller's rates (pgqueue.web.rates).
RATED = {
    "/publish": "publish",
    "/topic": "admin",
    "/topic_delete": "admin",
    "/topic_reset": "admin",
    "/subscribe": "admin",  # creates a durable subscriber
    "/unsubscribe": "admin",
}


def _rate_limited(scope: str | None) -> list[Any]:
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


async def _subscriber(
    queue: pgqueue.Queue, params: Params, caller: Caller, scope: str
) -> pgqueue.Subscriber:
    return await subscriber_for(queue, caller, _integer(params, "subscriber_id"), scope)


def _topic(params: Params, caller: Caller, scope: str) -> str:
    name = str(_required(params, "topic"))
    caller.require(scope, name)
    return name


def _asked_topic(params: Params, caller: Caller, scope: str) -> str | None:
    """The topic asked for (which the caller must hold `scope` on), or None for all."""
    return _topic(params, caller, scope) if params.get("topic") else None


@_route("/topic", "POST")
async def create_topic(queue: pgqueue.Queue, params: Params, caller: Caller) -> Any:
    """Create a topic (topic, description)."""
    name = _topic(params, caller, ADMIN)
    description = _required(params, "description")
    await queue.create_topic(name, description=str(description))
    return {"topic": name, "message": f"topic {name} created"}


@_route("/topic_delete", "POST")
async def delete_topic(queue: pgqueue.Queue, params: Params, caller: Caller) -> Any:
    """Delete a topic with its messages and subscribers (topic)."""
    name = _topic(params, caller, ADMIN)
    await queue.delete_topic(name)
    return {"topic": name, "message": f"topic {name} deleted"}


@_route("/topics", "GET")
async def list_topics(queue: pgqueue.Queue, params: Params, caller: Caller) -> Any:
    """List the topics this token holds any scope on ([topic])."""
    topics = await queue.list_topics(_asked_topic(params, caller, SEE))
    return [
        {"topic": t.name, "description": t.description, "create_ts": _iso(t.created_at)}
        for t in topics
        if caller.sees(t.name)
    ]


@_route("/publish", "POST")
async def publish(queue: pgqueue.Queue, params: Params, caller: Caller) -> Any:
    """Publish a text message (topic, message)."""
    name, message = _topic(params, caller, PUBLISH), _required(params, "message")
    offset = await queue.publish(name, message if isinstance(message, str) else str(message))
    return {"topic": name, "offset": offset}


@_route("/topic_messages", "GET")
async def topic_messages(queue: pgqueue.Queue, params: Params, caller: Caller) -> Any:
    """List stored messages of the topics this token may consume ([topic])."""
    asked = _asked_topic(params, caller, CONSUME)
    names = [asked] if asked else [t.name for t in await queue.list_topics()]
    rows: list[dict[str, Any]] = []
    for name in names:
        if caller.may(CONSUME, name):
            rows.extend(_message_row(m) for m in await queue.read(name, limit=MAX_LISTED))
    return rows


@_route("/topic_subscribers", "GET")
async def topic_subscribers(queue: pgqueue.Queue, params: Params, caller: Caller) -> Any:
    """List subscribers of the topics this token may consume ([topic])."""
    subscribers = await queue.list_subscribers(_asked_topic(params, caller, CONSUME))
    return [_subscriber_row(s) for s in subscribers if caller.may(CONSUME, s.topic)]


@_route("/subscribe", "GET", changes_state=True)
async def subscribe(queue: pgqueue.Queue, params: Params, caller: Caller) -> Any:
    """Subscribe to a topic from its next message on (topic); creating a subscriber is admin."""
    name = _topic(params, caller, ADMIN)
    subscriber = await queue.subscribe(name, f"v1-{uuid.uuid4().hex[:12]}", start="latest")
    return {"topic": name, "subscriber_id": subscriber.subscriber_id}


@_route("/unsubscribe", "POST")
async def unsubscribe(queue: pgqueue.Queue, params: Params, caller: Caller) -> Any:
    """Remove a subscriber (subscriber_id); admin."""
    subscriber = await _subscriber(queue, params, caller, ADMIN)
    await queue.unsubscribe(subscriber.topic, subscriber.name)
    return {"subscriber_id": subscriber.subscriber_id, "message": "unsubscribed"}


@_route("/get_message", "GET")
async def get_message(queue: pgqueue.Queue, params: Params, caller: Caller) -> Any:
    """The next messages after the subscriber's position, without moving it
    (subscriber_id, num_messages 1-20)."""
    subscriber = await _subscriber(queue, params, caller, CONSUME)
    count = _integer(params, "num_messages", 1)
    if not 1 <= count <= 20:
        raise V1Error(f"num_messages is 1 to 20, got {count}")
    messages = await queue.read(subscriber.topic, from_offset=subscriber.position + 1, limit=count)
    # _epoch (extra; seed clients ignore it) lets a client's ack say what it read under.
    rows = [{**_message_row(m), "_epoch": subscriber.epoch} for m in messages]
    return rows[0] if len(rows) == 1 else rows


@_route("/ack_message", "POST")
async def ack_message(queue: pgqueue.Queue, params: Params, caller: Caller) -> Any:
    """Move the subscriber's position to offset (subscriber_id, offset[, epoch]).

    With `epoch` (the `_epoch` get_message returned) the move is skipped if the subscriber
    was reset since: a late ack must not undo a topic reset. An ack moves forward, up to the
    last offset; moving back is a reset, which takes admin.
    """
    subscriber = await _subscriber(queue, params, caller, CONSUME)
    offset = _integer(params, "offset")
    if offset < 0:
        raise V1Error(f"offset must not be negative, got {offset}")
    await _check_ack_target(queue, subscriber, offset, caller)
    epoch = _integer(params, "epoch") if params.get("epoch") is not None else None
    await queue.reset(
        subscriber.topic, subscriber=subscriber.name, to=offset + 1, if_epoch=epoch, quiet=True
    )
    return _subscriber_row(await queue.subscriber_by_id(subscriber.subscriber_id))


async def _check_ack_target(
    queue: pgqueue.Queue, subscriber: pgqueue.Subscriber, offset: int, caller: Caller
) -> None:
    found = await queue.subscriber_stats(subscriber.topic, subscriber.name)
    if not found:  # removed meanwhile
        raise pgqueue.SubscriberNotFound(f"subscriber {subscriber.subscriber_id} does not exist")
    stats = found[0]
    if offset > stats.last_offset:
        raise V1Error(f"offset {offset} is past the topic's last offset {stats.last_offset}")
    if offset < stats.position:
        caller.require(ADMIN, subscriber.topic)


@_route("/topic_reset", "GET", changes_state=True)
async def topic_reset(queue: pgqueue.Queue, params: Params, caller: Caller) -> Any:
    """Every subscriber of the topic next receives offset (topic, offset default 1)."""
    name = _topic(params, caller, ADMIN)
    offset = _integer(params, "offset", 1)
    if offset < 1:
        raise V1Error(f"offsets start at 1, got {offset}")
    results = await queue.reset(name, to=offset)
    return {"topic": name, "offset": offset, "subscriber_count": len(results)}
