"""pgqueue: a durable topic queue that lives entirely in PostgreSQL."""

from __future__ import annotations

from pgqueue.client import Queue, connect
from pgqueue.errors import (
    DatabaseUnavailable,
    FieldTooLarge,
    InvalidArgument,
    InvalidFilter,
    InvalidName,
    InvalidPayload,
    InvalidPosition,
    LeaseLost,
    LimitReached,
    PayloadTooLarge,
    PgQueueError,
    SchemaMismatch,
    ServerUnavailable,
    SubscriberExists,
    SubscriberNotFound,
    TopicExists,
    TopicNotFound,
    TransactionRequired,
)
from pgqueue.models import (
    DeadLetter,
    Lease,
    Message,
    ResetResult,
    RetentionResult,
    StoredMessage,
    Subscriber,
    SubscriberStats,
    Topic,
    TopicStats,
)
from pgqueue.publish import publish, publish_many
from pgqueue.repl import QPublisher, QSubscriber
from pgqueue.settings import Settings

__all__ = [
    "DatabaseUnavailable",
    "DeadLetter",
    "FieldTooLarge",
    "InvalidArgument",
    "InvalidFilter",
    "InvalidName",
    "InvalidPayload",
    "InvalidPosition",
    "Lease",
    "LeaseLost",
    "LimitReached",
    "Message",
    "PayloadTooLarge",
    "PgQueueError",
    "QPublisher",
    "QSubscriber",
    "Queue",
    "ResetResult",
    "RetentionResult",
    "SchemaMismatch",
    "ServerUnavailable",
    "Settings",
    "StoredMessage",
    "Subscriber",
    "SubscriberExists",
    "SubscriberNotFound",
    "SubscriberStats",
    "Topic",
    "TopicExists",
    "TopicNotFound",
    "TopicStats",
    "TransactionRequired",
    "connect",
    "publish",
    "publish_many",
]
