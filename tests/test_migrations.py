"""Migrations build everything from empty, agree with db/functions, and round-trip."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import pytest

import pgqueue
from pgqueue import migrate
from tests.support import with_database

ROUTINES = """
    SELECT p.oid::regprocedure::text AS signature, pg_get_functiondef(p.oid) AS definition
      FROM pg_proc p
     WHERE p.pronamespace = 'pgqueue'::regnamespace
     ORDER BY 1
"""

COLUMNS = """
    SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
     WHERE c.relnamespace = 'pgqueue'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY 1, 2
"""

INDEXES = """
    SELECT indexdef FROM pg_indexes WHERE schemaname = 'pgqueue' ORDER BY indexname
"""


async def _snapshot(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            "routines": [tuple(r) for r in await conn.fetch(ROUTINES)],
            "columns": [tuple(r) for r in await conn.fetch(COLUMNS)],
            "indexes": [tuple(r) for r in await conn.fetch(INDEXES)],
        }
    finally:
        await conn.close()


async def test_reapplying_db_functions_changes_no_definition(empty_database_dsn: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_database_dsn)
    migrated = await _snapshot(empty_database_dsn)
    assert len(migrated["routines"]) > 30

    conn = await asyncpg.connect(empty_database_dsn)
    try:
        for path in migrate.function_sources():
            await conn.execute(path.read_text())
    finally:
        await conn.close()
    reapplied = await _snapshot(empty_database_dsn)

    # A difference means db/functions changed without a new revision freezing the change.
    assert reapplied["routines"] == migrated["routines"]


async def test_downgrade_base_then_upgrade_head_round_trips(empty_database_dsn: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_database_dsn)
    first = await _snapshot(empty_database_dsn)

    await asyncio.to_thread(migrate.downgrade, empty_database_dsn, "base")
    conn = await asyncpg.connect(empty_database_dsn)
    try:
        assert await conn.fetchval("SELECT to_regnamespace('pgqueue')") is None
    finally:
        await conn.close()

    await asyncio.to_thread(migrate.upgrade, empty_database_dsn)
    assert await _snapshot(empty_database_dsn) == first


async def test_a_database_of_the_first_release_upgrades_in_place(empty_database_dsn: str) -> None:
    """Data kept at revision 0002 (as run_all.sh keeps it) gets the later functions, and going
    back down to 0002 restores that release's definitions exactly."""
    await asyncio.to_thread(migrate.upgrade, empty_database_dsn, "0002")
    released = await _snapshot(empty_database_dsn)
    conn = await asyncpg.connect(empty_database_dsn)
    try:
        # As a 0002 client would (this library refuses a database at another revision).
        await conn.execute("SELECT pgqueue.create_topic('kept')")
        await conn.execute("CALL pgqueue.publish_and_commit('kept', '\"before\"')")
    finally:
        await conn.close()

    await asyncio.to_thread(migrate.upgrade, empty_database_dsn)
    async with pgqueue.connect(empty_database_dsn) as q:
        assert await q.publish_many("kept", ["after", {"payload": 3, "key": "k"}]) == [2, 3]
        assert [m.payload for m in await q.read("kept")] == ["before", "after", 3]

    await asyncio.to_thread(migrate.downgrade, empty_database_dsn, "0002")
    back = await _snapshot(empty_database_dsn)
    assert back["routines"] == released["routines"]
    # The topic's segments are new tables with indexes; the schema's own indexes are as released.
    segment = re.compile(r"\bmessage_\d+_\d+")
    assert [i for i in back["indexes"] if not segment.search(str(i[0]))] == [
        i for i in released["indexes"] if not segment.search(str(i[0]))
    ]


async def test_no_relation_on_the_message_path_is_unlogged(conn: asyncpg.Connection) -> None:
    persistence = dict(
        await conn.fetch(
            "SELECT relname, relpersistence::text FROM pg_class "
            "WHERE relnamespace = 'pgqueue'::regnamespace AND relkind IN ('r', 'p', 'i', 'S')"
        )
    )
    for table in ("message", "pending", "delivery", "subscriber", "topic", "dead_letter"):
        assert persistence[table] == "p", table
    assert set(persistence.values()) == {"p"}


# The full catalog of schema pgqueue: everything two ways of building it must agree on.
CATALOG = {
    "relations": """
        SELECT c.relname, c.relkind::text, pg_get_userbyid(c.relowner), c.relacl::text,
               c.relpersistence::text
          FROM pg_class c WHERE c.relnamespace = 'pgqueue'::regnamespace ORDER BY 1
    """,
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               a.attidentity::text, pg_get_expr(d.adbin, d.adrelid), a.attacl::text
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'pgqueue'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY 1, 2
    """,
    "constraints": """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
          FROM pg_constraint c WHERE c.connamespace = 'pgqueue'::regnamespace ORDER BY 1, 2
    """,
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'pgqueue' ORDER BY 1",
    "sequences": """
        SELECT sequencename, data_type::text, start_value, increment_by, cache_size
          FROM pg_sequences WHERE schemaname = 'pgqueue' ORDER BY 1
    """,
    "routines": """
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), pg_get_userbyid(p.proowner),
               p.proacl::text, p.prosecdef, p.proconfig
          FROM pg_proc p WHERE p.pronamespace = 'pgqueue'::regnamespace ORDER BY 1
    """,
    "schema": """
        SELECT pg_get_userbyid(n.nspowner), n.nspacl::text
          FROM pg_namespace n WHERE n.nspname = 'pgqueue'
    """,
    "default_privileges": """
        SELECT pg_get_userbyid(d.defaclrole), d.defaclnamespace::regnamespace::text,
               d.defaclobjtype::text, d.defaclacl::text
          FROM pg_default_acl d WHERE pg_get_userbyid(d.defaclrole) LIKE 'pgqueue\\_%'
         ORDER BY 1, 2, 3
    """,
}


async def _catalog(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {name: [tuple(r) for r in await conn.fetch(sql)] for name, sql in CATALOG.items()}
    finally:
        await conn.close()


async def test_the_migrations_build_what_the_current_files_describe(
    empty_database_dsn: str, pg_server: str
) -> None:
    """db/schema.sql and db/functions/ say what the schema is now; the migrations must build
    exactly that, grants and owners included."""
    await asyncio.to_thread(migrate.upgrade, empty_database_dsn)
    migrated = await _catalog(empty_database_dsn)

    name = f"pgqueue_files_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        files_dsn = with_database(pg_server, name)
        conn = await asyncpg.connect(files_dsn)
        try:
            await conn.execute(migrate.schema_source().read_text())
            await conn.execute("SET ROLE pgqueue_owner")
            for path in migrate.function_sources():
                await conn.execute(path.read_text())
        finally:
            await conn.close()
        from_files = await _catalog(files_dsn)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    for part in CATALOG:
        assert from_files[part] == migrated[part], part


async def test_the_library_refuses_a_database_at_another_revision(empty_database_dsn: str) -> None:
    with pytest.raises(
        pgqueue.SchemaMismatch, match=r"without the pgqueue schema.*pgqueue migrate"
    ):
        await pgqueue.Queue.open(empty_database_dsn)
    await asyncio.to_thread(migrate.upgrade, empty_database_dsn, "0004")
    with pytest.raises(pgqueue.SchemaMismatch, match="at revision 0004, this pgqueue needs 0005"):
        await pgqueue.Queue.open(empty_database_dsn)
    await asyncio.to_thread(migrate.upgrade, empty_database_dsn)
    async with pgqueue.connect(empty_database_dsn) as queue:
        await queue.create_topic("t")


def test_the_code_needs_the_newest_revision() -> None:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(migrate.alembic_config("")).get_current_head()
    assert migrate.SCHEMA_REVISION == head
