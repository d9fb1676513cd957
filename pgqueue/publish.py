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
from pgqueue.errors import InvalidArgument, PgQueueError, translated
from pgqueue.limits import DEFAULT_LIMITS, FieldLimits
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


def is_spec(item: Any) -> bool:
    """Whether a batch item is a message spec (a mapping with "payload") or a bare payload."""
    return isinstance(item, Mapping) and "payload" in item


def option_args(
    headers: Mapping[str, str] | None,
    key: str | None,
    idempotency_key: str | None,
    delay: timedelta | float | None,
    correlation_id: str | None,
    reply_to: str | None,
    *,
    limits: FieldLimits = DEFAULT_LIMITS,
) -> tuple[Any, ...]:
    """A message's options as query parameters, checked, in OPTIONS order. Absent headers go
    as NULL, which the SQL stores as {}."""
    limits.check_text("key", key)
    limits.check_text("idempotency_key", idempotency_key)
    limits.check_text("correlation_id", correlation_id)
    limits.check_text("reply_to", reply_to)
    headers_json = encode_headers(headers) if headers else None
    limits.check_text("headers", headers_json)
    return (
        headers_json,
        key,
        idempotency_key,
        seconds(delay),
        correlation_id,
        reply_to,
    )


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
    limits: FieldLimits = DEFAULT_LIMITS,
) -> tuple[Any, ...]:
    """The parameters of the publish queries for one message, checked."""
    options = option_args(
        headers, key, idempotency_key, delay, correlation_id, reply_to, limits=limits
    )
    return (topic, encode(payload, limit=limit), *options)


def batch_params(
    topic: str, payloads: str, option_rows: Sequence[Sequence[Any]]
) -> tuple[Any, ...]:
    """Parameters of the batch queries from one JSON array text of the payloads and each
    message's option_args. An option no message uses goes as NULL: the SQL then skips it."""
    columns = [list(c) for c in zip(*option_rows, strict=True)] or [[] for _ in OPTIONS]
    return (topic, payloads, *[c if any(v is not None for v in c) else None for c in columns])


def batch_args(
    topic: str, messages: Sequence[Any], *, limit: int, limits: FieldLimits = DEFAULT_LIMITS
) -> tuple[Any, ...]:
    """Parameters of the batch queries. Each message is a payload, or a mapping with "payload"
    and any of headers, key, idempotency_key, delay, correlation_id, reply_to."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidArgument("messages must be a list")
    if not any(is_spec(item) for item in messages):
        # Plain payloads, the common case: no options to collect.
        return batch_params(topic, encode_array(messages, limit=limit), [])
    payloads: list[Any] = []
    option_rows: list[tuple[Any, ...]] = []
    for index, item in enumerate(messages):
        spec = item if is_spec(item) else {"payload": item}
        unknown = set(spec) - {"payload", *OPTIONS}
        if unknown:
            raise InvalidArgument(f"message {index + 1}: unknown fields {sorted(unknown)}")
        payloads.append(spec["payload"])
        try:
            options = [spec.get(name) for name in OPTIONS]
            option_rows.append(option_args(*options, limits=limits))
        except PgQueueError as error:
            raise type(error)(f"message {index + 1}: {error}") from error
    return batch_params(topic, encode_array(payloads, limit=limit), option_rows)


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
    limits: FieldLimits = DEFAULT_LIMITS,
) -> int:
    """Publishes inside the connection's current transaction; returns the message id.

    limits: the sizes of headers, key and ids (default: the default settings')."""
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
        limits=limits,
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
    limits: FieldLimits = DEFAULT_LIMITS,
) -> list[int]:
    """Publishes a batch inside the connection's current transaction; returns message ids."""
    args = batch_args(topic, messages, limit=max_payload_bytes, limits=limits)
    with translated():
        ids: list[int] = await conn.fetchval(QUERIES["publish_batch"], *args)
    return ids
