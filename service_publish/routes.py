"""The v2 REST API: topics, publishing, browsing, subscribers, reset, dead letters, stats."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from pgqueue.errors import SubscriberNotFound, TopicNotFound
from pgqueue.web.auth import ADMIN, CONSUME, PUBLISH, SEE, CallerDep, on_topic
from pgqueue.web.bodies import JsonRoute
from pgqueue.web.openapi import SAFE_INTEGER
from pgqueue.web.rates import rate_limit
from pgqueue.web.state import QueueDep
from service_publish.schemas import (
    BatchIn,
    BatchPublishedOut,
    CountOut,
    DeadLetterOut,
    MessageIn,
    MessagesOut,
    PublishedOut,
    ReplayIn,
    ResetIn,
    ResetOut,
    ResetRowOut,
    StatsOut,
    StoredMessageOut,
    SubscriberIn,
    SubscriberOut,
    SubscriberPatch,
    TopicIn,
    TopicOut,
    TopicPatch,
)

router = APIRouter(route_class=JsonRoute)
# Each route holds a scope on the {topic} it acts on; routes without one check in the body.
# Publish and admin calls also count against the caller's rates (pgqueue.web.rates).
Sees = [Depends(on_topic(SEE))]
Consume = [Depends(on_topic(CONSUME))]
Admin = [Depends(on_topic(ADMIN)), Depends(rate_limit("admin"))]
Publish = [Depends(on_topic(PUBLISH)), Depends(rate_limit("publish"))]
NO_CONTENT = Response(status_code=204)


def _seconds(value: float | None) -> timedelta | None:
    return timedelta(seconds=value) if value is not None else None


@router.get("/topics", tags=["topics"])
async def list_topics(queue: QueueDep, caller: CallerDep) -> list[TopicOut]:
    """The topics this token holds any scope on."""
    return [TopicOut.of(t) for t in await queue.list_topics() if caller.sees(t.name)]


@router.post(
    "/topics", status_code=201, tags=["topics"], dependencies=[Depends(rate_limit("admin"))]
)
async def create_topic(body: TopicIn, queue: QueueDep, caller: CallerDep) -> TopicOut:
    """Create a topic (409 if it exists); takes admin on its name."""
    caller.require(ADMIN, body.name)
    topic = await queue.create_topic(
        body.name,
        description=body.description,
        retention_max_age=_seconds(body.retention_max_age_s),
        retention_max_count=body.retention_max_count,
        max_payload_bytes=body.max_payload_bytes,
        segment_size=body.segment_size,
    )
    return TopicOut.of(topic)


@router.get("/topics/{topic}", tags=["topics"], dependencies=Sees)
async def get_topic(topic: str, queue: QueueDep) -> TopicOut:
    """One topic's settings."""
    found = await queue.list_topics(topic)
    if not found:
        raise TopicNotFound(f"topic {topic!r} does not exist")
    return TopicOut.of(found[0])


@router.patch("/topics/{topic}", tags=["topics"], dependencies=Admin)
async def alter_topic(topic: str, body: TopicPatch, queue: QueueDep) -> TopicOut:
    """Change a topic's description, retention or payload limit."""
    altered = await queue.alter_topic(
        topic,
        description=body.description,
        retention_max_age=_seconds(body.retention_max_age_s),
        retention_max_count=body.retention_max_count,
        max_payload_bytes=body.max_payload_bytes,
        clear_retention=body.clear_retention,
    )
    return TopicOut.of(altered)


@router.delete("/topics/{topic}", status_code=204, tags=["topics"], dependencies=Admin)
async def delete_topic(topic: str, queue: QueueDep) -> Response:
    """Delete a topic with its messages, subscribers and dead letters."""
    await queue.delete_topic(topic)
    return NO_CONTENT


@router.post("/topics/{topic}/messages", status_code=201, tags=["messages"], dependencies=Publish)
async def publish(topic: str, body: MessageIn, queue: QueueDep) -> PublishedOut:
    """Publish one message; the answer comes once it is durable."""
    offset = await queue.publish(topic, body.payload, **body.options())
    return PublishedOut(topic=topic, offset=offset)


@router.post(
    "/topics/{topic}/messages/batch", status_code=201, tags=["messages"], dependencies=Publish
)
async def publish_batch(topic: str, body: BatchIn, queue: QueueDep) -> BatchPublishedOut:
    """Publish several messages in one transaction, in order."""
    offsets = await queue.publish_many(topic, [m.item() for m in body.messages])
    return BatchPublishedOut(topic=topic, offsets=offsets)


@router.get("/topics/{topic}/messages", tags=["messages"], dependencies=Consume)
async def read_messages(
    topic: str,
    queue: QueueDep,
    from_offset: Annotated[
        int, Query(alias="from", ge=1, lt=SAFE_INTEGER, description="The first offset.")
    ] = 1,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many.")] = 100,
) -> MessagesOut:
    """Browse the log from an offset, without claiming anything."""
    messages = await queue.read(topic, from_offset=from_offset, limit=limit)
    return MessagesOut(
        topic=topic,
        messages=[
            StoredMessageOut(**{k: v for k, v in asdict(m).items() if k != "topic"})
            for m in messages
        ],
    )


@router.get("/topics/{topic}/subscribers", tags=["subscribers"], dependencies=Consume)
async def list_subscribers(topic: str, queue: QueueDep) -> list[SubscriberOut]:
    """The topic's subscribers."""
    subscribers = await queue.list_subscribers(topic)
    if not subscribers and not await queue.list_topics(topic):
        raise TopicNotFound(f"topic {topic!r} does not exist")
    return [SubscriberOut.of(s) for s in subscribers]


@router.post(
    "/topics/{topic}/subscribers", status_code=201, tags=["subscribers"], dependencies=Admin
)
async def create_subscriber(topic: str, body: SubscriberIn, queue: QueueDep) -> SubscriberOut:
    """Create a durable subscriber (409 if the name is taken)."""
    backoff = body.backoff
    subscriber = await queue.subscribe(
        topic,
        body.name,
        start=body.start,
        filter=body.filter,
        max_attempts=body.max_attempts,
        backoff=timedelta(milliseconds=backoff.base_ms) if backoff else 1.0,
        max_backoff=timedelta(milliseconds=backoff.max_ms) if backoff else 300.0,
    )
    return SubscriberOut.of(subscriber)


@router.get("/topics/{topic}/subscribers/{name}", tags=["subscribers"], dependencies=Consume)
async def get_subscriber(topic: str, name: str, queue: QueueDep) -> SubscriberOut:
    """One subscriber: its position, filter and retry policy."""
    for subscriber in await queue.list_subscribers(topic):
        if subscriber.name == name:
            return SubscriberOut.of(subscriber)
    raise SubscriberNotFound(f"subscriber {name!r} of topic {topic!r} does not exist")


@router.patch("/topics/{topic}/subscribers/{name}", tags=["subscribers"], dependencies=Admin)
async def alter_subscriber(
    topic: str, name: str, body: SubscriberPatch, queue: QueueDep
) -> SubscriberOut:
    """Change a subscriber's filter or retry policy."""
    backoff = body.backoff
    altered = await queue.alter_subscriber(
        topic,
        name,
        filter=body.filter,
        clear_filter=body.clear_filter,
        max_attempts=body.max_attempts,
        backoff=timedelta(milliseconds=backoff.base_ms) if backoff else None,
        max_backoff=timedelta(milliseconds=backoff.max_ms) if backoff else None,
    )
    return SubscriberOut.of(altered)


@router.delete(
    "/topics/{topic}/subscribers/{name}",
    status_code=204,
    tags=["subscribers"],
    dependencies=Admin,
)
async def delete_subscriber(topic: str, name: str, queue: QueueDep) -> Response:
    """Delete a subscriber with its leases and dead letters."""
    await queue.unsubscribe(topic, name)
    return NO_CONTENT


@router.post("/topics/{topic}/reset", tags=["reset"], dependencies=Admin)
async def reset_topic(topic: str, body: ResetIn, queue: QueueDep) -> ResetOut:
    """Move every subscriber of the topic (dry_run: only report where to)."""
    results = await queue.reset(topic, to=body.to, dry_run=body.dry_run)
    return ResetOut(results=[ResetRowOut(**asdict(r)) for r in results])


@router.post("/topics/{topic}/subscribers/{name}/reset", tags=["reset"], dependencies=Admin)
async def reset_subscriber(topic: str, name: str, body: ResetIn, queue: QueueDep) -> ResetOut:
    """Move one subscriber (dry_run: only report where to)."""
    results = await queue.reset(topic, subscriber=name, to=body.to, dry_run=body.dry_run)
    return ResetOut(results=[ResetRowOut(**asdict(r)) for r in results])


@router.get(
    "/topics/{topic}/subscribers/{name}/dead-letters", tags=["dead letters"], dependencies=Admin
)
async def list_dead_letters(
    topic: str,
    name: str,
    queue: QueueDep,
    after: Annotated[int, Query(ge=0, lt=SAFE_INTEGER, description="Only offsets above this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many.")] = 100,
) -> list[DeadLetterOut]:
    """The subscriber's dead letters, by offset after `after`."""
    letters = await queue.dead_letters(topic, name, after=after, limit=limit)
    return [DeadLetterOut(**asdict(d)) for d in letters]


@router.post(
    "/topics/{topic}/subscribers/{name}/dead-letters/replay",
    tags=["dead letters"],
    dependencies=Admin,
)
async def replay_dead_letters(topic: str, name: str, body: ReplayIn, queue: QueueDep) -> CountOut:
    """Deliver dead letters again (from first to last; all by default)."""
    count = await queue.replay_dead_letters(topic, name, first=body.first, last=body.last)
    return CountOut(count=count)


@router.delete(
    "/topics/{topic}/subscribers/{name}/dead-letters", tags=["dead letters"], dependencies=Admin
)
async def purge_dead_letters(
    topic: str,
    name: str,
    queue: QueueDep,
    first: Annotated[
        int | None, Query(ge=1, lt=SAFE_INTEGER, description="The lowest offset removed.")
    ] = None,
    last: Annotated[
        int | None, Query(ge=1, lt=SAFE_INTEGER, description="The highest offset removed.")
    ] = None,
) -> CountOut:
    """Remove dead letters (from first to last; all by default)."""
    return CountOut(count=await queue.purge_dead_letters(topic, name, first=first, last=last))


@router.get("/stats", tags=["stats"])
async def stats(queue: QueueDep, caller: CallerDep) -> StatsOut:
    """Figures per topic and per subscriber, of the topics this token holds admin on."""
    return StatsOut(
        topics=[asdict(t) for t in await queue.topic_stats() if caller.may(ADMIN, t.topic)],
        subscribers=[
            asdict(s) for s in await queue.subscriber_stats() if caller.may(ADMIN, s.topic)
        ],
    )
