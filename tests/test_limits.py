"""Issue 9, findings 5, 7 and 9 in the library: every field has a size limit, topics and
subscribers have caps, and hostile values are refused with a plain PgQueueError, nothing
stored and nothing of the database's internals in the text."""

from __future__ import annotations

import random
import string
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import pgqueue
from pgqueue.limits import FieldLimits
from tests.test_bad_input import SNAPSHOT

Case = Callable[[pgqueue.Queue], Awaitable[Any]]
BIG_HEADERS = {f"h{n}": "x" * 100 for n in range(200)}  # 20 KiB in all, each one small
DEEP_FILTER: dict[str, Any] = {"payload": {}}
_level = DEEP_FILTER["payload"]
for _ in range(99):
    _level["a"] = {}
    _level = _level["a"]
_level["a"] = 1

# (case, call, error, words the message must hold)
OVERSIZE: list[tuple[str, Case, type[pgqueue.PgQueueError], str]] = [
    (
        "3,000-character idempotency key (finding 5)",
        lambda q: q.publish("orders", 1, idempotency_key="k" * 3000),
        pgqueue.FieldTooLarge,
        "idempotency_key is 3000 bytes; the limit is 512",
    ),
    (
        "key",
        lambda q: q.publish("orders", 1, key="k" * 1025),
        pgqueue.FieldTooLarge,
        "key is 1025 bytes; the limit is 1024",
    ),
    (
        "key counted in UTF-8 bytes",
        lambda q: q.publish("orders", 1, key="€" * 342),
        pgqueue.FieldTooLarge,
        "key is 1026 bytes",
    ),
    (
        "headers in all",
        lambda q: q.publish("orders", 1, headers=BIG_HEADERS),
        pgqueue.FieldTooLarge,
        "the limit is 16384",
    ),
    (
        "correlation_id",
        lambda q: q.publish("orders", 1, correlation_id="c" * 1025),
        pgqueue.FieldTooLarge,
        "correlation_id is 1025 bytes",
    ),
    (
        "reply_to",
        lambda q: q.publish("orders", 1, reply_to="r" * 1025),
        pgqueue.FieldTooLarge,
        "reply_to is 1025 bytes",
    ),
    (
        "a key in a batch",
        lambda q: q.publish_many("orders", [{"payload": 1}, {"payload": 2, "key": "k" * 5000}]),
        pgqueue.FieldTooLarge,
        "message 2: key is 5000 bytes",
    ),
    (
        "description",
        lambda q: q.create_topic("other", description="d" * 4097),
        pgqueue.FieldTooLarge,
        "description is 4097 bytes; the limit is 4096 (PGQUEUE_MAX_DESCRIPTION_BYTES)",
    ),
    (
        "description, altered",
        lambda q: q.alter_topic("orders", description="d" * 4097),
        pgqueue.FieldTooLarge,
        "description is 4097 bytes",
    ),
    (
        "filter",
        lambda q: q.subscribe("orders", "f", filter={"payload": {"k": "x" * 5000}}),
        pgqueue.FieldTooLarge,
        "the limit is 4096 (PGQUEUE_MAX_FILTER_BYTES)",
    ),
    (
        "filter, altered",
        lambda q: q.alter_subscriber("orders", "billing", filter={"payload": {"k": "x" * 5000}}),
        pgqueue.FieldTooLarge,
        "filter is",
    ),
    (
        "filter nested 100 levels",
        lambda q: q.subscribe("orders", "f", filter=DEEP_FILTER),
        pgqueue.InvalidFilter,
        "nested at most 99 levels",
    ),
]

HOSTILE: list[tuple[str, Case, type[pgqueue.PgQueueError], str]] = [
    (
        "lone surrogate in a payload",
        lambda q: q.publish("orders", {"text": "\ud800"}),
        pgqueue.InvalidPayload,
        "lone surrogate",
    ),
    (
        "lone surrogate in a batch",
        lambda q: q.publish_many("orders", ["fine", "\udc00"]),
        pgqueue.InvalidPayload,
        "lone surrogate",
    ),
    (
        "lone surrogate in a header",
        lambda q: q.publish("orders", 1, headers={"h": "\ud800"}),
        pgqueue.InvalidPayload,
        "lone surrogate",
    ),
    (
        "lone surrogate in a key",
        lambda q: q.publish("orders", 1, key="\ud800"),
        pgqueue.InvalidArgument,
        "lone surrogate",
    ),
    (
        "reset 99999999999d ago",
        lambda q: q.reset("orders", to="99999999999d"),
        pgqueue.InvalidPosition,
        "out of range",
    ),
    (
        "reset ago:99999999999h",
        lambda q: q.reset("orders", to="ago:99999999999h"),
        pgqueue.InvalidPosition,
        "out of range",
    ),
    (
        "reset to 5,000 digits",
        lambda q: q.reset("orders", to="9" * 5000),
        pgqueue.InvalidPosition,
        "out of range",
    ),
    (
        "reset shift of 5,000 digits",
        lambda q: q.reset("orders", to="-" + "9" * 5000),
        pgqueue.InvalidPosition,
        "out of range",
    ),
    (
        "reset to 2**64",
        lambda q: q.reset("orders", to=2**64),
        pgqueue.InvalidPosition,
        "out of range",
    ),
    (
        "reset to Arabic-Indic digits",
        lambda q: q.reset("orders", to="\u0661\u0662"),
        pgqueue.InvalidPosition,
        "not a position",
    ),
    (
        "reset to true",
        lambda q: q.reset("orders", to=True),
        pgqueue.InvalidPosition,
        "not a position",
    ),
    (
        "subscriber starting at Arabic-Indic digits",
        lambda q: q.subscribe("orders", "f", start="\u0661"),
        pgqueue.InvalidPosition,
        "not a position",
    ),
]


@pytest.fixture
async def populated(queue: pgqueue.Queue) -> pgqueue.Queue:
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish("orders", {"id": 1})
    return queue


@pytest.mark.parametrize(
    ("case", "call", "error", "words"), OVERSIZE + HOSTILE, ids=[c[0] for c in OVERSIZE + HOSTILE]
)
async def test_oversize_and_hostile_values_are_refused_and_change_nothing(
    populated: pgqueue.Queue,
    conn: asyncpg.Connection,
    case: str,
    call: Case,
    error: type[pgqueue.PgQueueError],
    words: str,
) -> None:
    before = tuple(await conn.fetchrow(SNAPSHOT))
    description = (await populated.list_topics("orders"))[0].description
    with pytest.raises(error) as raised:
        await call(populated)
    assert words in str(raised.value), case
    assert tuple(await conn.fetchrow(SNAPSHOT)) == before
    assert (await populated.list_topics("orders"))[0].description == description


async def test_fields_at_their_limit_are_stored(populated: pgqueue.Queue) -> None:
    await populated.publish(
        "orders",
        2,
        key="€" * 341,  # 1023 bytes
        idempotency_key="i" * 512,
        correlation_id="c" * 1024,
        reply_to="r" * 1024,
        headers={"h": "x" * (16 * 1024 - 8)},  # {"h":"..."} is 16384 bytes
    )
    stored = (await populated.read("orders"))[-1]
    assert stored.key == "€" * 341 and len(stored.headers["h"]) == 16 * 1024 - 8
    await populated.create_topic("described", description="d" * 4096)


async def test_limits_are_settings_and_hold_inside_the_callers_transaction(
    database_dsn: str, conn: asyncpg.Connection
) -> None:
    settings = pgqueue.Settings(max_key_bytes=10, max_headers_bytes=20, max_description_bytes=5)
    async with pgqueue.connect(database_dsn, settings=settings) as q:
        await q.create_topic("small", description="12345")
        await q.publish("small", 1, key="k" * 10)
        with pytest.raises(pgqueue.FieldTooLarge, match="PGQUEUE_MAX_KEY_BYTES"):
            await q.publish("small", 1, key="k" * 11)
        with pytest.raises(pgqueue.FieldTooLarge, match="headers is 21 bytes"):
            await q.publish("small", 1, headers={"h": "x" * 13})
    async with conn.transaction():
        with pytest.raises(pgqueue.FieldTooLarge, match="idempotency_key is 3000 bytes"):
            await pgqueue.publish(conn, "small", 1, idempotency_key="k" * 3000)
        with pytest.raises(pgqueue.FieldTooLarge, match="key is 11 bytes"):
            await pgqueue.publish_many(
                conn, "small", [{"payload": 1, "key": "k" * 11}], limits=FieldLimits(key=10)
            )


async def test_database_errors_reach_callers_without_internals(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    """Finding 5/9: the btree error quoted the index name, and details carried HINT lines."""
    await queue.create_topic("orders")
    # Past the library's own limit, the database's refusal is what the caller would see.
    # Random text: a repetitive key would be compressed below the index's limit.
    key = "".join(random.choices(string.ascii_letters, k=3000))
    with pytest.raises(pgqueue.InvalidArgument) as too_long:
        await pgqueue.publish(
            conn, "orders", 1, idempotency_key=key, limits=FieldLimits(idempotency_key=10_000)
        )
    text = str(too_long.value)
    assert "idempotency" not in text and "index" in text, text  # "too large ... to index"
    with pytest.raises(pgqueue.InvalidName) as bad_name:
        await queue.create_topic("no good")
    for internal in ("HINT", "DETAIL", "\n"):
        assert internal not in str(bad_name.value)
    assert "names are 1-100 characters" in str(bad_name.value)  # our own hint, as plain text
    with pytest.raises(pgqueue.TopicNotFound) as unknown:
        await queue.publish("x" * 100_000, 1)
    assert len(str(unknown.value)) < 700


async def test_topics_and_durable_subscribers_have_caps(database_dsn: str) -> None:
    """Finding 7: subscribers (and topics) could be created without end."""
    settings = pgqueue.Settings(max_topics=2, max_subscribers_per_topic=2)
    async with pgqueue.connect(database_dsn, settings=settings) as q:
        await q.create_topic("a")
        await q.create_topic("b")
        with pytest.raises(pgqueue.LimitReached, match="PGQUEUE_MAX_TOPICS"):
            await q.create_topic("c")
        await q.subscribe("a", "one")
        await q.subscribe("a", "two")
        with pytest.raises(pgqueue.LimitReached, match="PGQUEUE_MAX_SUBSCRIBERS_PER_TOPIC"):
            await q.subscribe("a", "three")
        # Ephemeral subscribers end with their connection: they do not count, nor are capped.
        await q.subscribe("a", "live", ephemeral=True)
        await q.subscribe("b", "three")  # the cap is per topic
        await q.unsubscribe("a", "one")
        await q.subscribe("a", "three")
        assert sorted(s.name for s in await q.list_subscribers("a")) == ["live", "three", "two"]
    async with pgqueue.connect(
        database_dsn, settings=pgqueue.Settings(max_topics=0, max_subscribers_per_topic=0)
    ) as unlimited:
        await unlimited.create_topic("c")
        await unlimited.subscribe("a", "four")
