"""The hot statements keep index plans on a log of 100k+ messages (no sequential scans).

The statements run inside PL/pgSQL, so their plans are captured with auto_explain (nested
statements, reported to the client as NOTICEs) while the real functions run.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import asyncpg
import pytest

import pgqueue

MESSAGES = 100_000


@pytest.fixture
async def big_topic(queue: pgqueue.Queue, conn: asyncpg.Connection) -> AsyncIterator[None]:
    await queue.create_topic("big", segment_size=10_000)  # a log of 11 segments
    await queue.create_topic("other")  # a second topic, so topic_id filters matter
    await queue.subscribe("big", "reader", start="earliest")
    for start in range(0, MESSAGES, 10_000):
        await queue.publish_many("big", [{"n": n} for n in range(start, start + 10_000)])
    await queue.publish_many("other", list(range(1000)))
    await conn.execute("ANALYZE")
    yield


async def _plans(conn: asyncpg.Connection, sql: str, *args: object) -> str:
    notices: list[str] = []
    conn.add_log_listener(lambda _c, message: notices.append(message.message))
    await conn.execute("LOAD 'auto_explain'")
    await conn.execute(
        "SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; "
        "SET auto_explain.log_level = notice; SET client_min_messages = notice"
    )
    await conn.fetch(sql, *args)
    await conn.execute("SET auto_explain.log_min_duration = -1")
    return "\n".join(notices)


# The log is partitioned: its segments are message_<topic_id>_<segment>.
SEGMENT = r"message_\d+_\d+"


def _assert_no_seq_scan(plans: str) -> None:
    scans = re.findall(r"Seq Scan on (\w+)", plans)
    hot = ("delivery", "pending", "subscriber")
    assert not [t for t in scans if t in hot or re.fullmatch(SEGMENT, t)], plans


async def test_publish_claim_and_ack_plans(
    big_topic: None, queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    publish = await _plans(conn, "CALL pgqueue.publish_and_commit('big', '{\"n\": -1}')")
    _assert_no_seq_scan(publish)
    # the last offset, from the newest segments only
    assert re.search(rf"Index Scan Backward using {SEGMENT}_pkey on {SEGMENT}", publish), publish

    # Claims from the middle of the log: the cursor walk is an index range scan.
    await queue.reset("big", subscriber="reader", to=50_000)
    claim = await _plans(conn, "SELECT * FROM pgqueue.claim('big', 'reader', 100)")
    _assert_no_seq_scan(claim)
    assert re.search(rf"Index Scan using {SEGMENT}_pkey on {SEGMENT}", claim), claim

    rows = await conn.fetch("SELECT * FROM pgqueue.claim('big', 'reader', 100)")
    ack = await _plans(
        conn,
        "SELECT pgqueue.ack('big', 'reader', $1::bigint[], $2::bigint[])",
        [r["offset"] for r in rows],
        [rows[0]["lease_token"]],
    )
    _assert_no_seq_scan(ack)
    assert "delivery_pkey" in ack, ack
    assert (
        len(
            await conn.fetchval(
                "SELECT pgqueue.ack('big', 'reader', $1::bigint[], $2::bigint[])",
                [r["offset"] for r in rows],
                [rows[0]["lease_token"]],
            )
        )
        == 0
    )  # the first ack took them all

    # The next-due lookup (the delivery loop's sleep) reads the partial due index.
    due = await _plans(conn, "SELECT pgqueue.seconds_until_due('big', 'reader')")
    assert "delivery_due" in due, due


async def test_in_transaction_publish_and_round_plans(
    big_topic: None, conn: asyncpg.Connection
) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pgqueue.publish('big', '1')")
    round_plans = await _plans(conn, "CALL pgqueue.assign('big', NULL)")
    _assert_no_seq_scan(round_plans)
    assert "pending_topic_xid" in round_plans
