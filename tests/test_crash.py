"""A PostgreSQL crash while the services run: a backend is killed with SIGKILL, PostgreSQL
terminates every session and recovers. Nothing acknowledged is lost, and the services and
their consumers carry on without a restart of their own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import websockets

from pgqueue import embedded, migrate
from pgqueue.settings import Settings
from tests.services.conftest import serving
from tests.support import with_database, within


@pytest.fixture(scope="module")
def own_server() -> Iterator[tuple[str, Path]]:
    """A PostgreSQL of this module's own (DSN, data directory): crashing it disturbs no
    other test."""
    with tempfile.TemporaryDirectory(prefix="pgqueue-crash-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        yield embedded.start(pgdata), pgdata


async def _kill_a_backend(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 "
            "AND backend_type = 'client backend' ORDER BY pid LIMIT 1",
            database,
        )
    finally:
        await conn.close()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the postmaster answers with a crash restart


async def _until(check: object, seconds: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            if await check():  # type: ignore[operator]
                return
        except (httpx.TransportError, OSError):
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not recovered in time")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(180)
async def test_services_survive_a_postgres_crash(own_server: tuple[str, Path]) -> None:
    own_dsn, pgdata = own_server
    admin = await asyncpg.connect(own_dsn)
    await admin.execute("CREATE DATABASE crash")
    await admin.close()
    dsn = with_database(own_dsn, "crash")
    await asyncio.to_thread(migrate.upgrade, dsn)

    settings = Settings(database_url=dsn, poll_interval=1.0, listener_reconnect_delay=0.2)
    acknowledged: list[int] = []
    with serving(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.post("/topics", json={"name": "orders"})).status_code == 201
            await http.post(
                "/topics/orders/subscribers", json={"name": "live", "start": "earliest"}
            )
            ws = await websockets.connect(
                f"{server.ws_url}/ws/topics/orders?subscriber=live&ack=auto"
            )
            assert json.loads(await within(ws.recv()))["type"] == "welcome"

            for i in range(30):
                response = await http.post("/topics/orders/messages", json={"payload": i})
                acknowledged.append(response.json()["offset"])

            await _kill_a_backend(own_dsn, "crash")

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await _until(ready)
            for i in range(30, 60):
                while True:  # a request that meets the outage gets a 503 and is retried
                    response = await http.post("/topics/orders/messages", json={"payload": i})
                    if response.status_code == 201:
                        acknowledged.append(response.json()["offset"])
                        break
                    assert response.status_code == 503, response.text
                    await asyncio.sleep(0.1)

            # The same WebSocket connection keeps delivering through the crash.
            received: set[int] = set()
            while not set(acknowledged) <= received:
                frame = json.loads(await within(ws.recv(), 30))
                if frame["type"] == "message":
                    received.add(frame["offset"])
            await ws.close()

            stored = (await http.get("/topics/orders/messages", params={"limit": 1000})).json()
    assert [m["offset"] for m in stored["messages"]] == sorted(acknowledged)
    assert [m["payload"] for m in stored["messages"]] == list(range(60))
    log = (pgdata / "log").read_text()
    assert "was terminated by signal 9" in log
    assert "all server processes terminated; reinitializing" in log
