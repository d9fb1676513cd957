"""Alembic environment: async, driven by a plain PostgreSQL DSN.

The DSN comes from pgqueue.migrate (config.attributes), `alembic -x dsn=postgresql://...` or
PGQUEUE_DATABASE_URL, and is handed to
asyncpg unchanged (SQLAlchemy only wraps the connection), so nothing here parses or rebuilds it.
"""

from __future__ import annotations

import asyncio
import os

import asyncpg
from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config


def _dsn() -> str:
    dsn = (
        config.attributes.get("dsn")
        or context.get_x_argument(as_dictionary=True).get("dsn")
        or os.environ.get("PGQUEUE_DATABASE_URL")
    )
    if not dsn:
        raise SystemExit("no database: pass `-x dsn=postgresql://...` or set PGQUEUE_DATABASE_URL")
    return dsn


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table=config.get_main_option("version_table", "pgqueue_alembic_version"),
        version_table_schema=config.get_main_option("version_table_schema"),
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    dsn = _dsn()
    engine = create_async_engine(
        "postgresql+asyncpg://",
        async_creator=lambda: asyncpg.connect(dsn),
        poolclass=pool.NullPool,
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("pgqueue migrations run online only (they execute SQL files as scripts)")
asyncio.run(_run_async())
