"""PostgreSQL down at start, or going away while things run: what an operator sees.

connect() and `pgqueue serve` wait for the database with a logged back-off instead of
exiting, and an outage is logged once when it starts and once when it ends, with its cause
in the message, not once per call or request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import httpx
import pytest

import pgqueue
from pgqueue.settings import Settings
from tests.private_postgres import PrivatePostgres, private_dsn, private_postgres
from tests.services.conftest import free_port, serving
from tests.support import eventually, within

__all__ = ["private_dsn", "private_postgres"]  # fixtures


def _messages(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if fragment in r.getMessage()]


async def _logged(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    async def found() -> list[str]:
        return _messages(caplog, fragment)

    return await eventually(found, seconds=30)


@pytest.mark.timeout(120)
async def test_connect_waits_for_postgres_to_start(
    private_postgres: PrivatePostgres, private_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgqueue")
    await asyncio.to_thread(private_postgres.stop)
    opening = asyncio.create_task(pgqueue.connect(private_dsn).__aenter__())
    try:
        [waiting] = await _logged(caplog, "cannot connect to PostgreSQL")
        # The cause is in the message itself (the socket is not there while it is down).
        assert "retrying for up to 60 s: " in waiting and "No such file" in waiting, waiting
        assert not opening.done()
        await asyncio.to_thread(private_postgres.start)
        queue = await within(opening, 30)
    finally:
        opening.cancel()
    try:
        await within(queue.ping())
        [connected] = _messages(caplog, "connected to PostgreSQL after")
        assert "failed attempts" in connected
    finally:
        await queue.close()


async def test_connect_gives_up_after_connect_timeout(
    private_postgres: PrivatePostgres, private_dsn: str
) -> None:
    await asyncio.to_thread(private_postgres.stop)
    settings = Settings(connect_timeout=0.5)
    with pytest.raises(pgqueue.DatabaseUnavailable) as refused:
        await within(pgqueue.connect(private_dsn, settings=settings).__aenter__())
    assert "gave up after 0.5 s" in str(refused.value)
    assert "No such file" in str(refused.value)


async def test_errors_waiting_cannot_fix_are_not_retried(
    private_postgres: PrivatePostgres, private_dsn: str
) -> None:
    nowhere = private_dsn.replace("/pgqueue_test_", "/no_such_database_", 1)
    with pytest.raises(pgqueue.PgQueueError) as refused:
        await within(pgqueue.connect(nowhere).__aenter__(), 5)
    assert "does not exist" in str(refused.value)


@pytest.mark.timeout(120)
async def test_serve_waits_for_postgres_to_start(
    private_postgres: PrivatePostgres, private_dsn: str
) -> None:
    await asyncio.to_thread(private_postgres.stop)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgqueue.cli",
        "serve",
        "--port",
        str(port),
        env={**os.environ, "PGQUEUE_DATABASE_URL": private_dsn},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        while True:
            line = (await within(proc.stderr.readline(), 30)).decode()
            assert line, "serve exited instead of waiting"
            if "cannot connect to PostgreSQL" in line:
                break
        assert "WARNING" in line and "No such file" in line, line
        await asyncio.to_thread(private_postgres.start)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, seconds=60)
            assert (await http.post("/topics", json={"name": "t"})).status_code == 201
    finally:
        proc.terminate()
        await within(proc.wait(), 20)


@pytest.mark.timeout(120)
async def test_an_outage_is_logged_once_not_per_request(
    private_postgres: PrivatePostgres, private_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = Settings(database_url=private_dsn, retention_interval=0)
    with serving(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.post("/topics", json={"name": "t"})).status_code == 201
            await asyncio.to_thread(private_postgres.stop)
            for _ in range(5):
                response = await http.get("/topics")
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "database_unavailable"
            await asyncio.to_thread(private_postgres.start)

            async def answers() -> bool:
                return (await http.get("/topics")).status_code == 200

            await eventually(answers, seconds=30)
    [down] = _messages(caplog, "database unavailable: ")
    assert len(down) > len("database unavailable: ") + 5, down  # with its cause
    assert _messages(caplog, "database available again after")
    assert not _messages(caplog, "request failed")
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks for an outage"
