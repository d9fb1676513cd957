"""Rows the library returns: frozen dataclasses, built from asyncpg records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pgqueue.codec import decode

if TYPE_CHECKING:
    from pgqueue.client import Queue


@dataclass(frozen=True)
class Topic:
    name: str
    description: str
    created_at: datetime
    retention_max_age: timedelta | None
    retention_max_count: int | None
    max_payload_bytes: int
    dedup_window: timedelta
    segment_size: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Topic:
        return cls(
            name=row["name"],
            description=row["description"],
            created_at=row["created_at"],
            retention_max_age=row["retention_max_age"],
            retention_max_count=row["retention_max_count"],
            max_payload_bytes=row["max_payload_bytes"],
            dedup_window=row["dedup_window"],
            segment_size=row["segment_size"],
        )


@dataclass(frozen=True)
class Subscriber:
    topic: str
    name: str
    subscriber_id: int
    position: int
    filter: dict[str, Any] | None
    max_attempts: int
    backoff_base: timedelta
    backoff_max: timedelta
    ephemeral: bool
    created_at: datetime
    epoch: int = 0  # how many resets it has had

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Subscriber:
        return cls(
            topic=row["topic"],
            name=row["subscriber"],
            subscriber_id=row["subscriber_id"],
            position=row["position"],
            filter=decode(row["filter"]),
            max_attempts=row["max_attempts"],
            backoff_base=row["backoff_base"],
            backoff_max=row["backoff_max"],
            ephemeral=row["ephemeral"],
            created_at=row["created_at"],
            epoch=row["epoch"],
        )


@dataclass(frozen=True)
class StoredMessage:
    """A message as stored in the log (browsing; no lease)."""

    topic: str
    offset: int
    message_id: int
    payload: Any
    headers: dict[str, str]
    key: str | None
    correlation_id: str | None
    reply_to: str | None
    published_at: datetime
    available_at: datetime | None

    @classmethod
    def from_row(cls, topic: str, row: Mapping[str, Any]) -> StoredMessage:
        return cls(topic=topic, available_at=row["available_at"], **_message_fields(row))


def _message_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """What stored and claimed messages share, from a row of either kind."""
    return {
        "offset": row["offset"],
        "message_id": row["message_id"],
        "payload": decode(row["payload"]),
        "headers": decode(row["headers"]),
        "key": row["key"],
        "correlation_id": row["correlation_id"],
        "reply_to": row["reply_to"],
        "published_at": row["published_at"],
    }


@dataclass(frozen=True)
class Message:
    """A claimed message: yours until its lease ends. Ack it, nack it, or extend the lease."""

    topic: str
    subscriber: str
    offset: int
    attempt: int
    lease_token: int
    payload: Any
    headers: dict[str, str]
    key: str | None
    correlation_id: str | None
    reply_to: str | None
    published_at: datetime
    message_id: int
    # The subscriber's reset count when this was claimed, and the position that reset set.
    epoch: int = 0
    reset_position: int | None = None
    _queue: Queue | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_row(cls, subscriber: str, row: Mapping[str, Any], queue: Queue | None) -> Message:
        return cls(
            topic=row["topic"],
            subscriber=subscriber,
            attempt=row["attempt"],
            lease_token=row["lease_token"],
            epoch=row["epoch"],
            reset_position=row["reset_position"],
            _queue=queue,
            **_message_fields(row),
        )

    def _bound(self) -> Queue:
        if self._queue is None:
            raise RuntimeError("this message is not bound to a Queue; use Queue.ack()")
        return self._queue

    async def ack(self) -> None:
        """Marks the message done. Raises LeaseLost if another consumer has it now."""
        await self._bound().ack(self.topic, self.subscriber, [self], strict=True)

    async def nack(
        self, *, delay: timedelta | float | None = None, error: str | None = None
    ) -> str:
        """Gives the message back for a retry (after `delay`, default the backoff).

        Returns "retry", or "dead" when it used its last attempt.
        """
        return await self._bound().nack(self, delay=delay, error=error)

    async def extend(self, lease: timedelta | float) -> None:
        await self._bound().extend_lease(self.topic, self.subscriber, [self], lease)


@dataclass(frozen=True)
class ResetResult:
    topic: str
    subscriber: str
    old_position: int
    new_position: int
    applied: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ResetResult:
        return cls(**dict(row))


@dataclass(frozen=True)
class DeadLetter:
    offset: int
    attempts: int
    last_error: str | None
    dead_at: datetime
    payload: Any
    headers: dict[str, str] | None
    key: str | None
    published_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DeadLetter:
        data = dict(row)
        data["payload"] = decode(data["payload"])
        data["headers"] = decode(data["headers"])
        return cls(**data)


@dataclass(frozen=True)
class TopicStats:
    topic: str
    messages: int
    first_offset: int | None
    last_offset: int
    bytes: int  # the log on disk: its segments with their indexes
    pending: int
    subscribers: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TopicStats:
        return cls(**dict(row))


@dataclass(frozen=True)
class SubscriberStats:
    topic: str
    subscriber: str
    subscriber_id: int
    position: int
    last_offset: int
    lag: int
    lag_seconds: float  # how long the oldest message not yet done has waited
    in_flight: int  # leased now
    expired: int  # leases that ran out, to be claimed again
    retrying: int
    dead: int
    ephemeral: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SubscriberStats:
        return cls(**dict(row))


@dataclass(frozen=True)
class Lease:
    """A message leased to a consumer (Queue.leases): who holds it, since when, until when."""

    offset: int
    attempt: int
    consumer: str | None
    leased_at: datetime | None
    lease_ends: datetime
    expired: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Lease:
        return cls(**dict(row))


@dataclass(frozen=True)
class RetentionResult:
    """What one retention pass did to a topic."""

    topic: str
    segments_removed: int
    messages_removed: int
    first_offset: int  # the oldest offset still readable (last + 1 when none is)
    subscribers_moved: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RetentionResult:
        return cls(
            topic=row["topic_name"],
            segments_removed=row["segments_removed"],
            messages_removed=row["messages_removed"],
            first_offset=row["first_offset"],
            subscribers_moved=row["subscribers_moved"],
        )
