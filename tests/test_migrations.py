"""Migrations build everything from empty, agree with db/functions, and round-trip."""

from __future__ import annotations

import asyncio
import re

import asyncpg

import pgqueue
from pgqueue import migrate

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
    async with pgqueue.connect(empty_database_dsn) as q:
        await q.create_topic("kept")
    conn = await asyncpg.connect(empty_database_dsn)
    try:
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
