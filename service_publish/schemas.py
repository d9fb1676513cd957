"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

import pgqueue
from pgqueue.publish import is_spec
from pgqueue.targets import BIGINT_MAX
from pgqueue.web.fields import MAX_AGE_S, Millis, Offset, Target

INT_MAX = 2**31 - 1  # max_payload_bytes is a PostgreSQL integer
MAX_SEGMENT_SIZE = 10**12  # segment bounds (k + 1) * size stay far inside a bigint


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Sizes of descriptions, keys, ids, headers and filters are settings, checked by the library
# (pgqueue.limits); the bounds here are fixed by the database's types.
Name = Annotated[str, Field(min_length=1, max_length=100)]
RetentionAge = Annotated[float, Field(gt=0, le=MAX_AGE_S, allow_inf_nan=False)]
Count = Annotated[StrictInt, Field(gt=0, le=BIGINT_MAX)]
PayloadBytes = Annotated[StrictInt, Field(gt=0, le=INT_MAX)]


class TopicIn(Strict):
    name: Name = Field(examples=["orders"])
    description: str = ""
    retention_max_age_s: RetentionAge | None = None
    retention_max_count: Count | None = None
    max_payload_bytes: PayloadBytes | None = None
    segment_size: StrictInt | None = Field(
        default=None,
        ge=10,
        le=MAX_SEGMENT_SIZE,
        description="Offsets per log segment, the unit retention removes.",
    )


class TopicPatch(Strict):
    description: str | None = None
    retention_max_age_s: RetentionAge | None = None
    retention_max_count: Count | None = None
    max_payload_bytes: PayloadBytes | None = None
    clear_retention: bool = False


class TopicOut(BaseModel):
    name: str
    description: str
    created_at: datetime
    retention_max_age_s: float | None
    retention_max_count: int | None
    max_payload_bytes: int
    segment_size: int

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
    # Any, not JsonValue: the body is JSON already, and JsonValue's per-node checks cost more
    # than the rest of a 100-message batch's validation. NaN (which Python's JSON parser
    # admits) is refused when the payload is encoded.
    payload: Any = Field(examples=[{"id": 1}])
    headers: dict[str, str] | None = Field(default=None, examples=[{"type": "order.created"}])
    key: str | None = None
    idempotency_key: str | None = None
    delay_ms: Millis | None = None
    correlation_id: str | None = None
    reply_to: str | None = None

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
    messages: list[MessageIn] = Field(min_length=1, max_length=10_000)


class PublishedOut(BaseModel):
    topic: str
    offset: int


class BatchPublishedOut(BaseModel):
    topic: str
    offsets: list[int]


class StoredMessageOut(BaseModel):
    offset: int
    message_id: int
    payload: Any
    headers: dict[str, str]
    key: str | None
    correlation_id: str | None
    reply_to: str | None
    published_at: datetime
    available_at: datetime | None


class MessagesOut(BaseModel):
    topic: str
    messages: list[StoredMessageOut]


class BackoffIn(Strict):
    base_ms: Millis = 1000
    max_ms: Millis = 300_000

    @model_validator(mode="after")
    def _max_not_below_base(self) -> BackoffIn:
        if self.max_ms < self.base_ms:
            raise ValueError("backoff max_ms must not be below base_ms")
        return self


class BackoffOut(BaseModel):
    base_ms: int
    max_ms: int


Attempts = Annotated[StrictInt, Field(ge=1, le=1000)]


class SubscriberIn(Strict):
    name: Name = Field(examples=["billing"])
    start: Target = Field(default="latest", examples=["earliest", "latest", 42])
    filter: dict[str, Any] | None = Field(
        default=None, examples=[{"match": {"type": "order.*"}, "payload": {"region": "eu"}}]
    )
    max_attempts: Attempts = 5
    backoff: BackoffIn | None = None


class SubscriberPatch(Strict):
    filter: dict[str, Any] | None = None
    clear_filter: bool = False
    max_attempts: Attempts | None = None
    backoff: BackoffIn | None = None


class SubscriberOut(BaseModel):
    topic: str
    name: str
    subscriber_id: int
    position: int
    filter: dict[str, Any] | None
    max_attempts: int
    backoff: BackoffOut
    ephemeral: bool
    created_at: datetime

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
    to: Target = Field(
        examples=["earliest", "latest", 42, "2026-11-01T00:00:00Z", "5m", "-10", "+10"]
    )
    dry_run: bool = False


class ResetRowOut(BaseModel):
    topic: str
    subscriber: str
    old_position: int
    new_position: int
    applied: bool


class ResetOut(BaseModel):
    results: list[ResetRowOut]


class DeadLetterOut(BaseModel):
    offset: int
    attempts: int
    last_error: str | None
    dead_at: datetime
    payload: Any
    headers: dict[str, str] | None
    key: str | None
    published_at: datetime | None


class ReplayIn(Strict):
    first: Offset | None = None
    last: Offset | None = None


class CountOut(BaseModel):
    count: int


class StatsOut(BaseModel):
    topics: list[dict[str, Any]]
    subscribers: list[dict[str, Any]]
