"""What the code expects of the database: its schema revision and roles (no alembic import,
so `import pgqueue` stays light)."""

from __future__ import annotations

import asyncpg

# The revision this code needs; tests/test_migrations.py checks it is the newest one.
SCHEMA_REVISION = "0005"
VERSION_TABLE = "pgqueue_alembic_version"

# The role servers and applications connect as: it may call the API and nothing else (see
# db/functions/99_privileges.sql). The migrations create it, and pgqueue_owner, which owns
# the schema.
RUNTIME_ROLE = "pgqueue_runtime"


async def schema_revision(conn: asyncpg.Connection) -> str | None:
    """The database's revision; None when it has no pgqueue schema at all."""
    try:
        revision: str | None = await conn.fetchval(
            f"SELECT version_num FROM public.{VERSION_TABLE}"
        )
    except asyncpg.UndefinedTableError:
        return None
    return revision
