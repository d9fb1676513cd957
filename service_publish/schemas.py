"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

import pgqueue
from pgqueue.publish import is_spec
from pgqueue.web.fields import MAX_AGE_S, YEAR_MS
from pgqueue.web.openapi import SAFE_INTEGER
from service_publish.fields import Filter, Name, Offset, Start, Target, whole_numbers

# Bounds the database's types set (sizes of text fields are settings, checked by the library).
# At least a millisecond: 5e-324 s would be a zero interval, which the database refuses.
RetentionAge = Annotated[float, Field(ge=0.001, le=MAX_AGE_S)]
Count = Annotated[int, Field(gt=0, lt=SAFE_INTEGER)]
PayloadBytes = Annotated[int, Field(gt=0, le=2**31 - 1)]  # an integer column
MAX_SEGMENT_SIZE = 10**12  # segment bounds (k + 1) * size stay far inside a bigint


class Strict(BaseModel):
    # Strict: a value is taken only in the JSON type the document gives it ("5" is not an
    # integer, true is not 1). A string under a field is its description in the document.
    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)

    @field_validator("*", mode="before")
    @classmethod
    def _whole_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        return whole_numbers(value, cls.model_fields[name].annotation) if name else value


class Out(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)


class TopicIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "orders", "description": "Orders placed"}]}
    )
    name: Name = Field(examples=["orders"])
    """1-100 letters, digits, '.', '_' or '-'; the first a letter or digit."""
    description: str = ""
    """What the topic holds, for people."""
    retention_max_age_s: RetentionAge | None = None
    """Messages older than this many seconds are removed (a whole segment at a time);
    none: kept until every subscriber has passed them."""
    retention_max_count: Count | None = None
    """At most about this many messages are kept (a whole segment is removed at a time)."""
    max_payload_bytes: PayloadBytes | None = None
    """Largest payload this topic accepts; none: the server's PGQUEUE_MAX_PAYLOAD_BYTES."""
    segment_size: int | None = Field(
        default=None,
        ge=10,
        le=MAX_SEGMENT_SIZE,
        description="Offsets per log segment, the unit retention removes.",
    )


class TopicPatch(Strict):
    """Only the fields given change."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"description": "Orders placed in the shop"}]}
    )
    description: str | None = None
    """What the topic holds, for people."""
    retention_max_age_s: RetentionAge | None = None
    """Messages older than this many seconds are removed (a whole segment at a time)."""
    retention_max_count: Count | None = None
    """At most about this many messages are kept (a whole segment is removed at a time)."""
    max_payload_bytes: PayloadBytes | None = None
    """Largest payload this topic accepts from now on."""
    clear_retention: bool = False
    """Remove both retention limits (before any given here apply)."""


class TopicOut(Out):
    name: str
    """The topic's name."""
    description: str
    """What the topic holds, for people."""
    created_at: datetime
    """When it was created."""
    retention_max_age_s: float | None
    """Messages older than this many seconds are removed; null: no age limit."""
    retention_max_count: int | None
    """At most about this many messages are kept; null: no count limit."""
    max_payload_bytes: int
    """Largest payload the topic accepts."""
    segment_size: int
    """Offsets per log segment, the unit retention removes."""

    @classmethod
    def of(cls, topic: pgqueue.Topic) -> TopicOut:
        age = topic.retention_max_age
        return cls(
            name=topic.name,
            description=topic.description,
            created_at=topic.created_at,
            retention_max_age_s=age.total_seconds() if age else None,
            retention_max_count=topic.retention_max_count,
            max_payload_bytes=topic.max_payload_bytes,
            segment_size=topic.segment_size,
        )


class MessageIn(Strict):
    # The example is what Swagger's "Try it out" sends: it must publish once, now (generated
    # from the fields, it scheduled the message a year ahead under idempotency key "string").
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"payload": {"id": 1}, "headers": {"type": "order.created"}}]
        }
    )
    # Any, not JsonValue: the body is JSON already, and JsonValue's per-node checks cost more
    # than the rest of a 100-message batch's validation. NaN (which Python's JSON parser
    # admits) is refused when the payload is encoded.
    payload: Any = Field(examples=[{"id": 1}])
    """Any JSON value."""
    headers: dict[str, str] | None = Field(default=None, examples=[{"type": "order.created"}])
    """String attributes; subscriber filters can match them."""
    key: str | None = Field(default=None, examples=["customer-7"])
    """Messages with one key are never in flight at once for a subscriber: per-key order."""
    idempotency_key: str | None = Field(default=None, examples=["order-1-created"])
    """A repeat on this topic within the dedup window returns the first offset and stores
    nothing: give each distinct message its own."""
    delay_ms: int | None = Field(default=None, ge=0, le=366 * 24 * 3600 * 1000, examples=[0])
    """Deliver no earlier than this many milliseconds from now."""
    correlation_id: str | None = None
    """Passed through to consumers, e.g. to match a reply to its request."""
    reply_to: str | None = None
    """Passed through to consumers: where a reply should go."""

    def options(self) -> dict[str, Any]:
        return {
            "headers": self.headers,
            "key": self.key,
            "idempotency_key": self.idempotency_key,
            "delay": timedelta(milliseconds=self.delay_ms) if self.delay_ms else None,
            "correlation_id": self.correlation_id,
            "reply_to": self.reply_to,
        }

    def spec(self) -> dict[str, Any]:
        return {"payload": self.payload, **self.options()}

    def item(self) -> Any:
        """What Queue.publish_many takes for this message: the bare payload when it has no
        options (and cannot be taken for a mapping of options itself), else its spec."""
        bare = self.model_fields_set <= {"payload"} and not is_spec(self.payload)
        return self.payload if bare else self.spec()


class BatchIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"messages": [{"payload": {"id": 1}}, {"payload": {"id": 2}, "key": "customer-7"}]}
            ]
        }
    )
    messages: list[MessageIn] = Field(min_length=1, max_length=10_000)
    """Published in this order, in one transaction: all or none."""


class PublishedOut(Out):
    topic: str
    """The topic published to."""
    offset: int
    """The message's offset (the first one's, for a repeated idempotency key)."""


class BatchPublishedOut(Out):
    topic: str
    """The topic published to."""
    offsets: list[int]
    """In the order the messages were given."""


class StoredMessageOut(Out):
    offset: int
    """Its place in the topic's log, from 1."""
    message_id: int
    """Unique across topics; stable while the message is kept."""
    payload: Any
    """The JSON value published."""
    headers: dict[str, str]
    """String attributes given at publish ({} when none)."""
    key: str | None
    """The ordering key given at publish."""
    correlation_id: str | None
    """As given at publish."""
    reply_to: str | None
    """As given at publish."""
    published_at: datetime
    """When the publish committed."""
    available_at: datetime | None
    """Not delivered before this time (a delayed message); null: at once."""


class MessagesOut(Out):
    topic: str
    """The topic read."""
    messages: list[StoredMessageOut]
    """In offset order."""


class BackoffIn(Strict):
    """Retry n waits base_ms * 2^(n-1), at most max_ms."""

    base_ms: int = Field(default=1000, ge=0, le=YEAR_MS)
    """The wait before the first retry, in milliseconds (at most 366 days)."""
    max_ms: int = Field(default=300_000, ge=0, le=YEAR_MS)
    """The longest wait between retries, in milliseconds; not below base_ms."""

    @model_validator(mode="after")
    def _max_not_below_base(self) -> BackoffIn:
        if self.max_ms < self.base_ms:
            raise ValueError("backoff max_ms must not be below base_ms")
        return self


class BackoffOut(Out):
    """Retry n waits base_ms * 2^(n-1), at most max_ms."""

    base_ms: int
    """The wait before the first retry, in milliseconds."""
    max_ms: int
    """The longest wait between retries, in milliseconds."""


class SubscriberIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "billing", "start": "earliest"}]}
    )
    name: Name = Field(examples=["billing"])
    """1-100 letters, digits, '.', '_' or '-'; the first a letter or digit."""
    start: Start = Field(default="latest", examples=["earliest", "latest", 42])
    """The first message it receives: an offset, earliest, latest or an ISO time."""
    filter: Filter | None = Field(
        default=None, examples=[{"match": {"type": "order.*"}, "payload": {"region": "eu"}}]
    )
    """Only matching messages are delivered: "payload" and "headers" by JSON containment,
    "match" by a glob per header; the others are skipped."""
    max_attempts: int = Field(default=5, ge=1, le=1000)
    """Deliveries before a message goes to the dead letters."""
    backoff: BackoffIn | None = None
    """The wait before a retry; none: 1 s doubling up to 5 min."""


class SubscriberPatch(Strict):
    """Only the fields given change."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"max_attempts": 10}]})
    filter: Filter | None = None
    """The new filter (see SubscriberIn)."""
    clear_filter: bool = False
    """Deliver every message from now on."""
    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    """Deliveries before a message goes to the dead letters."""
    backoff: BackoffIn | None = None
    """The wait before a retry."""


class SubscriberOut(Out):
    topic: str
    """The topic it reads."""
    name: str
    """Its name, unique within the topic."""
    subscriber_id: int
    """The id HTTP pull and v1 use."""
    position: int
    """Every offset up to here is done: acked, filtered out or dead-lettered."""
    filter: dict[str, Any] | None
    """Only matching messages are delivered; null: all."""
    max_attempts: int
    """Deliveries before a message goes to the dead letters."""
    backoff: BackoffOut
    """The wait before a retry."""
    ephemeral: bool
    """Made for one WebSocket connection and removed with it."""
    created_at: datetime
    """When it was created."""

    @classmethod
    def of(cls, s: pgqueue.Subscriber) -> SubscriberOut:
        return cls(
            topic=s.topic,
            name=s.name,
            subscriber_id=s.subscriber_id,
            position=s.position,
            filter=s.filter,
            max_attempts=s.max_attempts,
            backoff=BackoffOut(
                base_ms=int(s.backoff_base.total_seconds() * 1000),
                max_ms=int(s.backoff_max.total_seconds() * 1000),
            ),
            ephemeral=s.ephemeral,
            created_at=s.created_at,
        )


class ResetIn(Strict):
    # A dry run: "Try it out" shows where the subscribers would go and moves nothing.
    model_config = ConfigDict(json_schema_extra={"examples": [{"to": "earliest", "dry_run": True}]})
    to: Target = Field(
        examples=["earliest", "latest", 42, "2026-11-01T00:00:00Z", "5m", "-10", "+10"]
    )
    """The next message delivered: an offset, earliest, latest, an ISO time, a duration ago
    ("5m", "PT5M", "ago:1h") or a shift of the position ("+10", "-10")."""
    dry_run: bool = False
    """Report the new positions without moving anything."""


class ResetRowOut(Out):
    topic: str
    """The topic."""
    subscriber: str
    """The subscriber reset."""
    old_position: int
    """Its position before."""
    new_position: int
    """Its position after (or, for a dry run, where it would go)."""
    applied: bool
    """False for a dry run."""


class ResetOut(Out):
    results: list[ResetRowOut]
    """One row per subscriber reset."""


class DeadLetterOut(Out):
    offset: int
    """The message's offset."""
    attempts: int
    """Deliveries made before it was given up."""
    last_error: str | None
    """What the last nack said."""
    dead_at: datetime
    """When it was given up."""
    payload: Any
    """null once retention removed the message itself."""
    headers: dict[str, str] | None
    """null once retention removed the message itself."""
    key: str | None
    """null once retention removed the message itself."""
    published_at: datetime | None
    """null once retention removed the message itself."""


class ReplayIn(Strict):
    """Which dead letters to deliver again; neither bound: all of them."""

    model_config = ConfigDict(json_schema_extra={"examples": [{}]})
    first: Offset | None = None
    """The lowest offset replayed."""
    last: Offset | None = None
    """The highest offset replayed."""


class CountOut(Out):
    count: int
    """How many dead letters it concerned."""


class StatsOut(Out):
    topics: list[dict[str, Any]]
    """Per topic: messages, offsets, size."""
    subscribers: list[dict[str, Any]]
    """Per subscriber: position, lag, in flight, retrying, dead."""
