"""Publishing on the caller's own asyncpg connection, inside the caller's transaction.

    async with conn.transaction():
        await save_order(conn, order)
        await pgqueue.publish(conn, "orders", {"id": order.id})   # commits or rolls back with it

Returns message ids: the offset is assigned after commit (Queue.message_offsets finds it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from pgqueue.codec import encode, encode_array, encode_headers
from pgqueue.errors import InvalidArgument, translated
from pgqueue.queries import QUERIES
from pgqueue.settings import Settings

# The same default as Settings.max_payload_bytes, for callers without a Settings.
DEFAULT_MAX_PAYLOAD_BYTES: int = Settings.model_fields["max_payload_bytes"].default


def seconds(value: timedelta | float | None) -> timedelta | None:
    """A timedelta from seconds or a timedelta; None stays None."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"expected seconds or a timedelta, got {value!r}")
    try:
        return timedelta(seconds=value)
    except OverflowError as error:
        raise InvalidArgument(f"{value!r} seconds is out of range") from error


OPTIONS = ("headers", "key", "idempotency_key", "delay", "correlation_id", "reply_to")


def message_args(
    topic: str,
    payload: Any,
    *,
    headers: Mapping[str, str] | None,
    key: str | None,
    idempotency_key: str | None,
    delay: timedelta | float | None,
    correlation_id: str | None,
    reply_to: str | None,
    limit: int,
) -> tuple[Any, ...]:
    """The parameters of the publish queries for one message, checked."""
    return (
        topic,
        encode(payload, limit=limit),
        encode_headers(headers),
        key,
        idempotency_key,
        seconds(delay),
        correlation_id,
        reply_to,
    )


def batch_args(topic: str, messages: Sequence[Any], *, limit: int) -> tuple[Any, ...]:
    """Parameters of the batch queries. Each message is a payload, or a mapping with "payload"
    and any of headers, key, idempotency_key, delay, correlation_id, reply_to. The payloads go
    as one JSON array text; an option no message uses goes as NULL."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidArgument("messages must be a list")
    specs = [item if isinstance(item, Mapping) and "payload" in item else None for item in messages]
    if not any(spec is not None for spec in specs):
        # Plain payloads, the common case: no options to collect.
        return (topic, encode_array(messages, limit=limit), *([None] * len(OPTIONS)))
    payloads: list[Any] = []
    columns: list[list[Any]] = [[] for _ in OPTIONS]
    for index, (item, spec) in enumerate(zip(messages, specs, strict=True)):
        if spec is None:
            spec = {"payload": item}
        unknown = set(spec) - {"payload", *OPTIONS}
        if unknown:
            raise InvalidArgument(f"message {index + 1}: unknown fields {sorted(unknown)}")
        payloads.append(spec["payload"])
        headers = spec.get("headers")
        values = (
            encode_headers(headers) if headers else None,  # the SQL stores NULL as {}
            spec.get("key"),
            spec.get("idempotency_key"),
            seconds(spec.get("delay")),
            spec.get("correlation_id"),
            spec.get("reply_to"),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return (
        topic,
        encode_array(payloads, limit=limit),
        *[c if any(v is not None for v in c) else None for c in columns],
    )


async def publish(
    conn: asyncpg.Connection,
    topic: str,
    payload: Any,
    *,
    headers: Mapping[str, str] | None = None,
    key: str | None = None,
    idempotency_key: str | None = None,
    delay: timedelta | float | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> int:
    """Publishes inside the connection's current transaction; returns the message id."""
    args = message_args(
        topic,
        payload,
        headers=headers,
        key=key,
        idempotency_key=idempotency_key,
        delay=delay,
        correlation_id=correlation_id,
        reply_to=reply_to,
        limit=max_payload_bytes,
    )
    with translated():
        message_id: int = await conn.fetchval(QUERIES["publish"], *args)
    return message_id


async def publish_many(
    conn: asyncpg.Connection,
    topic: str,
    messages: Sequence[Any],
    *,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> list[int]:
    """Publishes a batch inside the connection's current transaction; returns message ids."""
    args = batch_args(topic, messages, limit=max_payload_bytes)
    with translated():
        ids: list[int] = await conn.fetchval(QUERIES["publish_batch"], *args)
    return ids
