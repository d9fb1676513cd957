"""PostgreSQL down at start, or going away while things run: what an operator sees.

connect() and `pgqueue serve` wait for the database with a logged back-off instead of
exiting, and an outage is logged once when it starts and once when it ends, with its cause
in the message, not once per call or request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

import httpx
import pytest
import websockets

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


# -- WebSocket connections through an outage (finding 15) ---------------------------------------


def _ws_settings(dsn: str) -> Settings:
    return Settings(
        database_url=dsn,
        poll_interval=30.0,  # what reaches a connection after the restart was woken, not polled
        listener_reconnect_delay=0.2,
        ws_send_timeout=5.0,
        retention_interval=0,
    )


async def _frame(ws: Any, seconds: float = 30) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await within(ws.recv(), seconds))
    return data


async def _publish(http: httpx.AsyncClient, payload: Any) -> int:
    """Publishes, retrying the 503s of a database still coming back."""

    async def published() -> int | None:
        response = await http.post("/topics/orders/messages", json={"payload": payload})
        if response.status_code == 503:
            return None
        assert response.status_code == 201, response.text
        offset: int = response.json()["offset"]
        return offset

    return await eventually(published, seconds=60, every=0.1)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop", ["fast", "immediate"])
async def test_a_websocket_keeps_delivering_after_postgres_restarts(
    private_postgres: PrivatePostgres, private_dsn: str, stop: str
) -> None:
    """Stopped ("fast"), or crashed ("immediate": every process quits at once) and started
    again: the same connection gets what is published afterwards. An ack sent while the
    database is away gets an error frame naming its offsets, and can be sent again."""
    with serving(_ws_settings(private_dsn)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.post("/topics", json={"name": "orders"})).status_code == 201
            url = f"{server.ws_url}/ws/topics/orders?subscriber=s&start=earliest&prefetch=2"
            async with websockets.connect(url) as ws:
                assert (await _frame(ws))["type"] == "welcome"
                await _publish(http, "a")
                await _publish(http, "b")
                assert {(await _frame(ws))["offset"] for _ in range(2)} == {1, 2}

                await asyncio.to_thread(private_postgres.stop, stop)
                await ws.send(json.dumps({"type": "ack", "offsets": [1, 2]}))
                error = await _frame(ws)
                assert (error["type"], error["code"]) == ("error", "database_unavailable"), error
                assert error["detail"]["offsets"] == [1, 2] and error["detail"]["message"]
                await asyncio.to_thread(private_postgres.start)

                # prefetch is full until the ack goes through: send it again while the
                # server reconnects, as a client does after such an error frame.
                await ws.send(json.dumps({"type": "ack", "offsets": [1, 2]}))
                assert await _publish(http, "c") == 3
                while True:
                    frame = await _frame(ws)
                    if frame["type"] == "message":
                        break
                    assert frame["code"] == "database_unavailable", frame
                    await ws.send(
                        json.dumps({"type": "ack", "offsets": frame["detail"]["offsets"]})
                    )
                assert (frame["offset"], frame["payload"], frame["attempt"]) == (3, "c", 1)


@pytest.mark.timeout(120)
async def test_a_failed_ack_does_not_hold_prefetch_room_forever(
    private_postgres: PrivatePostgres, private_dsn: str
) -> None:
    """The client never sends its failed ack again: once the lease runs out, the connection
    has room and delivers again (the unacked message too, as its next attempt)."""
    with serving(_ws_settings(private_dsn)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.post("/topics", json={"name": "orders"})).status_code == 201
            url = f"{server.ws_url}/ws/topics/orders?subscriber=s&start=earliest&prefetch=1"
            async with websockets.connect(url + "&lease=2") as ws:
                assert (await _frame(ws))["type"] == "welcome"
                await _publish(http, "a")
                assert (await _frame(ws))["offset"] == 1
                await asyncio.to_thread(private_postgres.stop)
                await ws.send(json.dumps({"type": "ack", "offsets": [1]}))
                error = await _frame(ws)
                assert (error["code"], error["detail"]["offsets"]) == ("database_unavailable", [1])
                await asyncio.to_thread(private_postgres.start)
                await _publish(http, "b")

                seen: dict[int, int] = {}
                while 2 not in seen:
                    frame = await _frame(ws)
                    if frame["type"] != "message":
                        continue  # an error frame for something tried during the outage
                    seen[frame["offset"]] = frame["attempt"]
                    await ws.send(json.dumps({"type": "ack", "offsets": [frame["offset"]]}))
                assert seen == {1: 2, 2: 1}


async def test_a_websocket_opened_during_an_outage_is_told_to_try_again_later(
    private_postgres: PrivatePostgres, private_dsn: str
) -> None:
    with serving(_ws_settings(private_dsn)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.post("/topics", json={"name": "orders"})).status_code == 201
        await asyncio.to_thread(private_postgres.stop)
        for query in ("?subscriber=s", ""):  # a named subscriber, and an ephemeral one
            async with websockets.connect(f"{server.ws_url}/ws/topics/orders{query}") as ws:
                error = await _frame(ws)
                assert (error["type"], error["code"]) == ("error", "database_unavailable")
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await _frame(ws)
                assert closed.value.rcvd is not None
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                    1013,
                    "database_unavailable",
                )


async def test_claims_that_cannot_go_back_are_logged_with_the_cause(
    private_postgres: PrivatePostgres, private_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with serving(_ws_settings(private_dsn)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.post("/topics", json={"name": "orders"})).status_code == 201
            url = f"{server.ws_url}/ws/topics/orders?subscriber=s&start=earliest"
            async with websockets.connect(url) as ws:
                assert (await _frame(ws))["type"] == "welcome"
                await _publish(http, "a")
                assert (await _frame(ws))["offset"] == 1
                await asyncio.to_thread(private_postgres.stop)
        [line] = await _logged(caplog, "could not give back the claims of orders/s: ")
        assert len(line) > len("could not give back the claims of orders/s: ") + 5, line


@pytest.mark.timeout(120)
async def test_consume_carries_on_after_postgres_restarts(
    private_postgres: PrivatePostgres, private_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The library's delivery loop (pgqueue.delivery.Claims) retries its claims with back-off
    through the outage, and the listener's reconnect wakes it: a message published after the
    restart arrives although the poll interval is a minute."""
    caplog.set_level(logging.WARNING)
    settings = Settings(listener_reconnect_delay=0.2)
    async with pgqueue.connect(private_dsn, settings=settings) as queue:
        await queue.create_topic("orders")
        await queue.subscribe("orders", "billing")
        received: asyncio.Queue[Any] = asyncio.Queue()

        async def consume() -> None:
            async for message in queue.consume("orders", "billing", poll_interval=60):
                await message.ack()
                await received.put(message.payload)

        consumer = asyncio.create_task(consume())
        try:
            await queue.publish("orders", "before")
            assert await within(received.get()) == "before"
            await asyncio.to_thread(private_postgres.stop, "immediate")
            await _logged(caplog, "database unavailable: ")  # the consumer met the outage
            await asyncio.to_thread(private_postgres.start)

            async def published() -> bool:
                try:
                    await queue.publish("orders", "after")
                except pgqueue.DatabaseUnavailable:
                    return False
                return True

            await eventually(published, seconds=60, every=0.1)
            assert await within(received.get(), 30) == "after"
            assert not consumer.done()
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
