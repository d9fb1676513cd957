"""Least privilege (issue 9, finding 11): the runtime role can do everything the API offers and
nothing else, and no function of ours can be made to call a function planted on a path."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

import pgqueue
from pgqueue import migrate
from pgqueue.migrate import RUNTIME_ROLE as RUNTIME
from pgqueue.migrate import as_role


@pytest.fixture
async def runtime_dsn(database_dsn: str) -> str:
    return as_role(database_dsn, RUNTIME)


@pytest.fixture
async def runtime_conn(runtime_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(runtime_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def test_the_runtime_role_can_do_everything_the_api_offers(runtime_dsn: str) -> None:
    queue = await pgqueue.Queue.open(runtime_dsn)
    try:
        assert not await queue.pool.fetchval(
            "SELECT rolsuper FROM pg_roles WHERE rolname = $1", RUNTIME
        )
        await queue.create_topic("t", segment_size=10, retention_max_count=10)
        await queue.alter_topic("t", description="orders")
        # 35 offsets cross three segment boundaries: partition DDL at publish time.
        offsets = [await queue.publish("t", {"n": n}) for n in range(5)]
        offsets += await queue.publish_many("t", [{"n": n} for n in range(5, 35)])
        assert offsets == list(range(1, 36))
        async with queue.pool.acquire() as conn, conn.transaction():
            ids = await pgqueue.publish_many(conn, "t", [{"n": "tx"}])
        assert await queue.message_offsets("t", ids) == [36]
        assert await queue.assign("t") == 0

        await queue.subscribe("t", "s", start="earliest")
        await queue.alter_subscriber("t", "s", max_attempts=1)
        claimed = await queue.claim("t", "s", 3, lease=timedelta(seconds=30))
        assert [m.offset for m in claimed] == [1, 2, 3]
        assert await queue.extend_lease("t", "s", claimed[:1], 60) == [1]
        assert await queue.ack("t", "s", claimed[:1]) == [1]
        assert await queue.nack(claimed[1], error="poison") == "dead"
        assert await queue.release("t", "s", claimed[2:]) == [3]
        assert [d.offset for d in await queue.dead_letters("t", "s")] == [2]
        assert await queue.replay_dead_letters("t", "s") == 1
        again = await queue.claim("t", "s", 1)
        assert await queue.nack(again[0]) == "dead"
        assert await queue.purge_dead_letters("t", "s") == 1
        assert [r.applied for r in await queue.reset("t", to="latest", subscriber="s")] == [True]
        assert [m.offset for m in await queue.read("t", from_offset=1, limit=2)] == [1, 2]
        await queue.topic_stats("t")
        await queue.subscriber_stats("t", "s")
        await queue.list_topics()
        await queue.list_subscribers("t")
        await queue.idle_wait("t", "s", 0.01)
        await queue.remove_orphans(0)

        removed = await queue.enforce_retention("t")
        assert (
            sum(r.segments_removed for r in removed) > 0
        )  # segments dropped with the owner's rights
        await queue.unsubscribe("t", "s")
        await queue.delete_topic("t")
        assert await queue.list_topics() == []
    finally:
        await queue.close()


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO pgqueue.topic (name) VALUES ('x')",
        "SELECT * FROM pgqueue.message",
        "UPDATE pgqueue.subscriber SET cursor = 0",
        "DELETE FROM pgqueue.delivery",
        "TRUNCATE pgqueue.pending",
        "CREATE TABLE pgqueue.mine (x int)",
        "ALTER TABLE pgqueue.topic ADD COLUMN x int",
        "DROP FUNCTION pgqueue.ack(text, text, bigint[], bigint[])",
        "SELECT pgqueue._find_topic('t')",
        "SELECT pgqueue._assign_locked(NULL)",
        "SELECT pgqueue.after_restore()",
        "SELECT nextval('pgqueue.message_id_seq')",
    ],
)
async def test_the_runtime_role_can_do_nothing_else(
    queue: pgqueue.Queue, runtime_conn: asyncpg.Connection, statement: str
) -> None:
    await queue.create_topic("t")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await runtime_conn.execute(statement)
    assert await queue.publish("t", 1) == 1


async def test_internal_functions_are_closed_to_the_runtime_role(conn: asyncpg.Connection) -> None:
    callable_internals = await conn.fetch(
        """
        SELECT p.proname FROM pg_proc p
         WHERE p.pronamespace = 'pgqueue'::regnamespace AND p.proname ~ '^_'
           AND has_function_privilege($1, p.oid, 'EXECUTE')
         ORDER BY 1
        """,
        RUNTIME,
    )
    # The three the committing procedures call as their caller, each SECURITY DEFINER, and two
    # pure helpers that touch no table.
    assert [r[0] for r in callable_internals] == [
        "_assign_now",
        "_flush_at_commit",
        "_jsonb_elements",
        "_lock_class",
        "_publish_direct",
    ]


async def test_every_function_pins_its_search_path(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        """
        SELECT p.proname, p.prokind, p.prosecdef, p.proconfig FROM pg_proc p
         WHERE p.pronamespace = 'pgqueue'::regnamespace
        """
    )
    unpinned = [
        r["proname"]
        for r in rows
        if "search_path=pg_catalog, pgqueue, pg_temp" not in (r["proconfig"] or [])
    ]
    # PostgreSQL forbids SET (and SECURITY DEFINER) on a procedure that COMMITs.
    assert sorted(unpinned) == ["assign", "publish_and_commit", "publish_batch_and_commit"]
    assert all(r["prokind"] == b"p" for r in rows if r["proname"] in unpinned)
    # Every API function runs with the owner's rights; after_restore is the owner's own tool.
    api = [r for r in rows if r["prokind"] == b"f" and r["proname"][0] != "_"]
    assert [r["proname"] for r in api if not r["prosecdef"]] == ["after_restore"]


async def test_owner_and_runtime_are_not_superusers_and_own_what_they_should(
    conn: asyncpg.Connection,
) -> None:
    roles = await conn.fetch(
        "SELECT rolname, rolsuper, rolcanlogin FROM pg_roles WHERE rolname LIKE 'pgqueue\\_%'"
    )
    assert {(r[0], r[1], r[2]) for r in roles} >= {
        ("pgqueue_owner", False, False),
        ("pgqueue_runtime", False, True),
    }
    owners = await conn.fetch(
        """
        SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c
         WHERE c.relnamespace = 'pgqueue'::regnamespace
        UNION
        SELECT DISTINCT pg_get_userbyid(p.proowner) FROM pg_proc p
         WHERE p.pronamespace = 'pgqueue'::regnamespace
        UNION
        SELECT pg_get_userbyid(n.nspowner) FROM pg_namespace n WHERE n.nspname = 'pgqueue'
        """
    )
    assert [r[0] for r in owners] == ["pgqueue_owner"]


async def test_a_function_planted_on_the_callers_path_is_never_called(
    queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    """Finding 11: with CREATE on a schema in a privileged caller's search_path, a
    `format(text, text)` there was called by create_topic with the caller's rights."""
    await conn.execute(
        """
        CREATE SCHEMA planted;
        CREATE TABLE planted.calls (name text);
        CREATE FUNCTION planted.format(f text, a text) RETURNS text LANGUAGE sql AS
            $$ INSERT INTO planted.calls VALUES ('format') RETURNING f $$;
        CREATE FUNCTION planted.format(f text, a text, b text) RETURNS text LANGUAGE sql AS
            $$ INSERT INTO planted.calls VALUES ('format3') RETURNING f $$;
        CREATE FUNCTION planted.quote_literal(a text) RETURNS text LANGUAGE sql AS
            $$ INSERT INTO planted.calls VALUES ('quote_literal') RETURNING a $$;
        CREATE FUNCTION planted.now() RETURNS timestamptz LANGUAGE sql AS
            $$ INSERT INTO planted.calls VALUES ('now') RETURNING pg_catalog.now() $$;
        SET search_path = planted, pg_catalog, pgqueue;
        """
    )
    await conn.execute("SELECT pgqueue.create_topic('t', segment_size => 10)")
    await conn.execute("SELECT pgqueue.publish_batch('t', array_fill('1'::jsonb, ARRAY[25]))")
    await conn.execute("CALL pgqueue.assign('t')")
    await conn.execute("SELECT * FROM pgqueue.create_subscriber('t', 's', 'earliest')")
    await conn.execute("SELECT * FROM pgqueue.claim('t', 's', 5, assign => true)")
    await conn.execute("SELECT * FROM pgqueue.topic_stats()")
    await conn.execute("SELECT pgqueue.delete_topic('t')")
    assert await conn.fetch("SELECT name FROM planted.calls") == []


async def test_the_runtime_password_is_stored_as_a_verifier_of_it(
    database_dsn: str, conn: asyncpg.Connection
) -> None:
    await migrate.set_runtime_password(database_dsn, "s3cret 'quoted'")
    stored = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", RUNTIME)
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", stored)
    assert match is not None
    iterations, salt, stored_key, _ = match.groups()
    salted = hashlib.pbkdf2_hmac(
        "sha256", b"s3cret 'quoted'", base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    assert base64.b64decode(stored_key) == hashlib.sha256(client_key).digest()


async def test_the_runtime_role_cannot_borrow_the_owners_rights_through_its_temporary_schema(
    queue: pgqueue.Queue, runtime_conn: asyncpg.Connection, conn: asyncpg.Connection
) -> None:
    """Unless a SECURITY DEFINER function names pg_temp last in its search_path, PostgreSQL
    looks there first for types: a temporary domain called `text` with a CHECK of the caller's
    would run with the owner's rights inside enforce_retention."""
    await queue.create_topic("t", retention_max_count=10)
    await runtime_conn.execute(
        """
        CREATE FUNCTION pg_temp.borrowed(v pg_catalog.text) RETURNS boolean
        LANGUAGE sql AS $$ INSERT INTO pgqueue.topic (name) VALUES ('stolen') RETURNING true $$;
        CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.borrowed(VALUE));
        """
    )
    await runtime_conn.execute("SELECT * FROM pgqueue.enforce_retention()")
    with pytest.raises(asyncpg.PostgresError, match="segment_size"):  # a `text` variable is set
        await runtime_conn.execute("SELECT pgqueue.create_topic('x', segment_size => 1)")
    assert await conn.fetchval("SELECT count(*) FROM pgqueue.topic WHERE name = 'stolen'") == 0
