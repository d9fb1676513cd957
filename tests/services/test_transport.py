"""Limits an exposed server needs (issue 9, finding 6), against a real uvicorn server: request
heads (size, line count, deadline), body deadlines, connection and WebSocket caps, and
per-caller rates. Raw sockets where a client must misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from pgqueue.settings import Settings
from tests.services.conftest import RunningServer, serving
from tests.services.test_websocket import frame
from tests.support import eventually, within

GET = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def _port(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _parse(response: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return int(status_line.split()[1]), headers, json.loads(body) if body else None


async def _exchange(server: RunningServer, request: bytes) -> bytes:
    """Sends a request as it is and reads until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    try:
        writer.write(request)
        await writer.drain()
        return await within(reader.read())
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _trickling(
    server: RunningServer, start: bytes, then: bytes
) -> AsyncIterator[asyncio.StreamReader]:
    """A client that sends `start`, then `then` a byte at a time, until the server hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))

    async def trickle() -> None:
        writer.write(start)
        with contextlib.suppress(OSError):
            for byte in then:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)

    sending = asyncio.create_task(trickle())
    try:
        yield reader
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.close()


@pytest.fixture
def settings(database_dsn: str) -> Settings:
    return Settings(database_url=database_dsn, ws_send_timeout=2.0, poll_interval=30.0)


def _with(settings: Settings, **changes: Any) -> Settings:
    return Settings(**{**settings.model_dump(), **changes})


# -- request heads ------------------------------------------------------------------------


async def test_a_header_larger_than_the_limit_is_answered_431(settings: Settings) -> None:
    with serving(_with(settings, http_max_header_bytes=8192)) as server:
        big = GET + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n"
        status, headers, body = _parse(await _exchange(server, big))
        assert (status, body["error"]) == (431, "headers_too_large"), body
        assert headers["content-type"] == "application/json"
        # Just under the limit is served.
        fits = GET + b"X-Big: " + b"a" * 7000 + b"\r\nConnection: close\r\n\r\n"
        assert _parse(await _exchange(server, fits))[0] == 200


async def test_a_header_line_that_never_ends_is_answered_431(settings: Settings) -> None:
    """httptools holds a header line until it ends: the server must not wait for that."""
    with serving(_with(settings, http_max_header_bytes=8192)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
        try:
            writer.write(GET + b"X-Endless: ")
            with contextlib.suppress(OSError):  # the server stops reading at some point
                for _ in range(64):  # 4 MiB, never a line end
                    writer.write(b"a" * 65536)
                    await writer.drain()
            status, _, body = _parse(await within(reader.read()))
        finally:
            writer.close()
        assert (status, body["error"]) == (431, "headers_too_large"), body


async def test_too_many_header_lines_are_answered_431(settings: Settings) -> None:
    with serving(_with(settings, http_max_headers=20)) as server:
        many = GET + b"".join(b"X-H%d: 1\r\n" % i for i in range(20)) + b"\r\n"
        status, _, body = _parse(await _exchange(server, many))
        assert (status, body["error"]) == (431, "too_many_headers"), body


async def test_a_head_sent_a_byte_at_a_time_is_cut_off(settings: Settings) -> None:
    with serving(_with(settings, http_header_timeout=0.5)) as server:
        async with _trickling(server, GET, b"X-Slow: " + b"a" * 2000) as reader:
            status, _, body = _parse(await within(reader.read()))
        assert (status, body["error"]) == (408, "request_timeout"), body


async def test_a_connection_that_sends_nothing_is_cut_off(settings: Settings) -> None:
    with serving(_with(settings, http_header_timeout=0.5)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
        try:
            status, _, body = _parse(await within(reader.read()))
        finally:
            writer.close()
        assert (status, body["error"]) == (408, "request_timeout"), body


async def test_a_body_sent_a_byte_at_a_time_is_cut_off(settings: Settings) -> None:
    with serving(_with(settings, http_body_timeout=0.5)) as server:
        head = (
            b"POST /topics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\n\r\n"
        )
        async with _trickling(server, head, b'{"name": "' + b"a" * 4000) as reader:
            status, _, body = _parse(await within(reader.read()))
        assert (status, body["error"]) == (408, "request_timeout"), body


# -- connection and WebSocket caps ----------------------------------------------------------


async def _open_websockets(
    stack: contextlib.AsyncExitStack, url: str, n: int, **options: Any
) -> None:
    for _ in range(n):
        ws = await stack.enter_async_context(websockets.connect(url, **options))
        assert (await frame(ws))["type"] == "welcome"  # the server holds it from here on


async def _refused_status(url: str, **options: Any) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, **options):
            pass
    status: int = refused.value.response.status_code
    return status


async def _create_orders(server: RunningServer) -> None:
    body = b'{"name": "orders"}'
    request = (
        b"POST /topics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert _parse(await _exchange(server, request))[0] == 201


async def test_the_connection_cap_counts_websockets_and_refuses_both_kinds(
    settings: Settings,
) -> None:
    with serving(_with(settings, max_connections=3, ws_max_connections=10)) as server:
        await _create_orders(server)
        url = f"{server.ws_url}/ws/topics/orders"
        async with contextlib.AsyncExitStack() as stack:
            await _open_websockets(stack, url, 3)
            status, headers, body = _parse(await _exchange(server, GET + b"\r\n"))
            assert (status, body["error"]) == (503, "too_many_connections"), body
            assert headers["retry-after"] == "1"
            assert await _refused_status(url) == 503


async def test_the_websocket_cap_refuses_the_next_handshake(settings: Settings) -> None:
    with serving(_with(settings, ws_max_connections=2)) as server:
        await _create_orders(server)
        url = f"{server.ws_url}/ws/topics/orders"
        async with contextlib.AsyncExitStack() as stack:
            await _open_websockets(stack, url, 2)
            assert await _refused_status(url) == 503
        # Closed ones make room again, once the server has seen them go.
        await eventually(lambda: _opens(url))


async def _opens(url: str) -> bool:
    try:
        async with websockets.connect(url) as ws:
            return (await frame(ws))["type"] == "welcome"
    except websockets.InvalidStatus:
        return False


async def test_the_per_caller_websocket_cap_without_tokens_is_per_address(
    settings: Settings,
) -> None:
    with serving(_with(settings, ws_max_per_token=2)) as server:
        await _create_orders(server)
        url = f"{server.ws_url}/ws/topics/orders"
        async with contextlib.AsyncExitStack() as stack:
            await _open_websockets(stack, url, 2)
            assert await _refused_status(url) == 429


async def test_the_per_token_websocket_cap(settings: Settings) -> None:
    tokens = {"alpha": ["admin"], "beta": ["admin"]}
    with serving(_with(settings, ws_max_per_token=1, api_tokens=tokens)) as server:
        alpha = {"additional_headers": {"Authorization": "Bearer alpha"}}
        beta = {"additional_headers": {"Authorization": "Bearer beta"}}
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            created = await http.post(
                "/topics", json={"name": "orders"}, headers={"Authorization": "Bearer alpha"}
            )
            assert created.status_code == 201, created.text
        async with contextlib.AsyncExitStack() as stack:
            url = f"{server.ws_url}/ws/topics/orders"
            await _open_websockets(stack, url, 1, **alpha)
            assert await _refused_status(url, **alpha) == 429
            await _open_websockets(stack, url, 1, **beta)  # another token has its own share
            # A browser's token, sent as a subprotocol, is the same caller as the header's.
            alpha_by_browser = {"subprotocols": ["pgqueue", "bearer.alpha"]}
            assert await _refused_status(url, **alpha_by_browser) == 429


# -- rates ----------------------------------------------------------------------------------


async def test_publishing_over_the_rate_is_answered_429_with_retry_after(
    settings: Settings,
) -> None:
    slow = _with(settings, publish_rate=0.001, publish_burst=2)
    with serving(slow) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.post("/topics", json={"name": "orders"})).status_code == 201
            for _ in range(2):
                response = await http.post("/topics/orders/messages", json={"payload": 1})
                assert response.status_code == 201, response.text
            refused = await http.post("/topics/orders/messages", json={"payload": 1})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"] == "rate_limited"
            assert int(refused.headers["retry-after"]) >= 1
            # Every protocol draws on the same bucket.
            batch = await http.post(
                "/topics/orders/messages/batch", json={"messages": [{"payload": 2}]}
            )
            assert batch.status_code == 429, batch.text
            v1 = await http.post("/v1/publish", json={"topic": "orders", "message": "m"})
            assert v1.status_code == 429, v1.text
            # Reading is not publishing.
            assert (await http.get("/topics/orders/messages")).status_code == 200


async def test_admin_calls_over_the_rate_are_answered_429(settings: Settings) -> None:
    with serving(_with(settings, admin_rate=0.001, admin_burst=1)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.post("/topics", json={"name": "orders"})).status_code == 201
            refused = await http.post("/topics/orders/subscribers", json={"name": "billing"})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"] == "rate_limited"
            assert "retry-after" in refused.headers
            v1 = await http.post("/v1/topic", json={"topic": "more", "description": ""})
            assert v1.status_code == 429, v1.text


async def test_a_websocket_publish_over_the_rate_gets_an_error_frame_not_a_close(
    settings: Settings,
) -> None:
    with serving(_with(settings, publish_rate=0.001, publish_burst=1)) as server:
        await _create_orders(server)
        async with websockets.connect(f"{server.ws_url}/ws/topics/orders") as ws:
            assert (await frame(ws))["type"] == "welcome"
            await ws.send(json.dumps({"type": "publish", "payload": 1, "ref": "a"}))
            assert (await _reply(ws))["type"] == "published"
            await ws.send(json.dumps({"type": "publish", "payload": 2, "ref": "b"}))
            refused = await _reply(ws)
            assert (refused["type"], refused["code"]) == ("error", "rate_limited"), refused
            assert refused["detail"]["ref"] == "b"
            assert refused["detail"]["retry_after"] > 0
            # Still open: the next frame is answered.
            await ws.send(json.dumps({"type": "ack", "offsets": [99]}))
            assert (await _reply(ws))["code"] == "unknown_offset"


async def _reply(ws: Any) -> dict[str, Any]:
    """The next frame that is not a message (the connection receives what it published)."""
    while (got := await frame(ws))["type"] == "message":
        pass
    return got
