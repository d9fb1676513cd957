"""Real PostgreSQL for every test (SPEC §6).

The server, in this order: PGQUEUE_TEST_DSN if set (a postgresql:// URL with rights to create
databases) → a testcontainers PostgresContainer if a Docker engine answers → an embedded
PostgreSQL started for the session. The schema is migrated once into a template database;
each test gets its own copy (CREATE DATABASE ... TEMPLATE), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

import pgqueue
from pgqueue import migrate
from pgqueue.settings import Settings
from tests.support import with_database

TEMPLATE = f"pgqueue_template_{os.getpid()}"


@pytest.fixture(autouse=True)
def no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test sees pgqueue's defaults and what it sets itself: an exported PGQUEUE_*
    variable (say PGQUEUE_API_TOKENS or PGQUEUE_PUBLISH_BATCHING) or a .env file must not
    change what the suite tests. Only PGQUEUE_TEST_DSN, which picks the server, stays.

    The working directory moves to the test's own empty directory, so processes a test
    starts (the CLI, the services) find no .env either."""
    for name in list(os.environ):
        if name.startswith("PGQUEUE_") and name != "PGQUEUE_TEST_DSN":
            monkeypatch.delenv(name)
    monkeypatch.setitem(Settings.model_config, "env_file", None)
    monkeypatch.chdir(tmp_path)


def _docker_engine_answers() -> bool:
    try:
        from testcontainers.core.docker_client import DockerClient

        DockerClient().client.ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """DSN of a maintenance database on the session's server."""
    if dsn := os.environ.get("PGQUEUE_TEST_DSN"):
        yield dsn
        return
    if _docker_engine_answers():
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:
            from testcontainers.postgres import PostgresContainer
        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    from pgqueue import embedded

    with tempfile.TemporaryDirectory(prefix="pgqueue-test-") as tmp:
        yield embedded.start(Path(tmp) / "pgdata")


async def _admin(pg_server: str, sql: str) -> None:
    conn = await asyncpg.connect(pg_server)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[str]:
    """Name of a database migrated to head, used as the template for each test's database."""
    asyncio.run(_admin(pg_server, f'DROP DATABASE IF EXISTS "{TEMPLATE}"'))
    asyncio.run(_admin(pg_server, f'CREATE DATABASE "{TEMPLATE}"'))
    migrate.upgrade(with_database(pg_server, TEMPLATE))
    yield TEMPLATE
    with contextlib.suppress(Exception):
        asyncio.run(_admin(pg_server, f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))


@pytest.fixture
async def database_dsn(pg_server: str, template_db: str) -> AsyncIterator[str]:
    """DSN of a fresh database holding the migrated schema, for this test only."""
    name = f"pgqueue_test_{uuid.uuid4().hex[:12]}"
    await _admin(pg_server, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        yield with_database(pg_server, name)
    finally:
        await _admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def empty_database_dsn(pg_server: str) -> AsyncIterator[str]:
    """DSN of a fresh database with nothing in it (for migration tests)."""
    name = f"pgqueue_empty_{uuid.uuid4().hex[:12]}"
    await _admin(pg_server, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(pg_server, name)
    finally:
        await _admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def queue(database_dsn: str) -> AsyncIterator[pgqueue.Queue]:
    """An open Queue on the test's database."""
    async with pgqueue.connect(database_dsn) as q:
        yield q


@pytest.fixture
async def conn(database_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection of the test's own, outside the Queue's pool."""
    connection = await asyncpg.connect(database_dsn)
    try:
        yield connection
    finally:
        await connection.close()
