"""Tokens when auth is on; garbage over the WebSocket; the server stays healthy."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import websockets

from pgqueue.settings import Settings
from tests.services.conftest import RunningServer, serving
from tests.services.test_websocket import frame, messages

TOKENS = {"pub-token": ["publish"], "sub-token": ["subscribe"], "admin-token": ["admin"]}


@pytest.fixture
def secured(database_dsn: str) -> Iterator[RunningServer]:
    settings = Settings(database_url=database_dsn, api_tokens=TOKENS, poll_interval=30.0)
    with serving(settings) as running:
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tokens_and_scopes_over_http(secured: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=secured.url) as http:
        no_token = await http.post("/topics", json={"name": "orders"})
        assert (no_token.status_code, no_token.json()["error"]) == (401, "unauthorized")
        wrong = await http.post("/topics", json={"name": "orders"}, headers=bearer("nope"))
        assert wrong.status_code == 401
        publisher_admins = await http.post(
            "/topics", json={"name": "orders"}, headers=bearer("pub-token")
        )
        assert (publisher_admins.status_code, publisher_admins.json()["error"]) == (
            403,
            "forbidden",
        )
        assert (
            await http.post("/topics", json={"name": "orders"}, headers=bearer("admin-token"))
        ).status_code == 201
        assert (
            await http.post(
                "/topics/orders/messages", json={"payload": 1}, headers=bearer("pub-token")
            )
        ).status_code == 201
        assert (
            await http.post(
                "/topics/orders/messages", json={"payload": 1}, headers=bearer("sub-token")
            )
        ).status_code == 403
        assert (await http.get("/topics", headers=bearer("sub-token"))).status_code == 200
        assert (await http.get("/v1/topics")).status_code == 401
        assert (await http.get("/v1/topics", headers=bearer("sub-token"))).status_code == 200
        assert (
            await http.post(
                "/v1/publish",
                json={"topic": "orders", "message": "m"},
                headers=bearer("sub-token"),
            )
        ).status_code == 403
        assert (await http.get("/topics/orders/messages", headers=bearer("admin-token"))).json()[
            "messages"
        ][0]["payload"] == 1


async def test_tokens_over_websocket(secured: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=secured.url) as http:
        await http.post("/topics", json={"name": "orders"}, headers=bearer("admin-token"))
    url = f"{secured.ws_url}/ws/topics/orders"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url)
    assert refused.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, additional_headers=bearer("pub-token"))
    assert refused.value.response.status_code == 403
    async with websockets.connect(url, additional_headers=bearer("sub-token")) as ws:
        assert (await frame(ws))["type"] == "welcome"
        await ws.send(json.dumps({"type": "publish", "payload": 1}))
        assert (await frame(ws))["code"] == "forbidden"
    async with websockets.connect(url, additional_headers=bearer("admin-token")) as ws:
        await frame(ws)
        await ws.send(json.dumps({"type": "publish", "payload": "mine", "ref": "r1"}))
        # Two frames in either order: the delivery loop may send the message before the
        # publish handler sends its answer.
        got = {f["type"]: f for f in [await frame(ws), await frame(ws)]}
        assert set(got) == {"published", "message"}, got
        assert (got["published"]["ref"], got["published"]["offset"]) == ("r1", 1)
        assert (got["message"]["payload"], got["message"]["offset"]) == ("mine", 1)


async def test_garbage_frames_get_error_frames(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    await http.post("/topics", json={"name": "orders"})
    async with websockets.connect(f"{server.ws_url}/ws/topics/orders?subscriber=s") as ws:
        await frame(ws)
        garbage: list[str | bytes] = [
            "not json",
            "[]",
            json.dumps({"type": "dance"}),
            json.dumps({"type": "ack"}),
            json.dumps({"type": "ack", "offsets": ["x"]}),
            json.dumps({"type": "nack", "offset": 1, "delay_ms": -5}),
            json.dumps({"type": "seek", "to": "whenever"}),
            json.dumps({"type": "publish", "payload": 1, "topic": "no such topic"}),
            b"\x00\x01binary",
        ]
        codes = []
        for item in garbage:
            await ws.send(item)
            reply = await frame(ws)
            assert reply["type"] == "error", reply
            codes.append(reply["code"])
        assert codes == ["invalid_frame"] * 6 + [
            "invalid_position",
            "topic_not_found",
            "invalid_frame",
        ]
        await ws.send(json.dumps({"type": "ack", "offsets": [12345]}))
        assert (await frame(ws))["code"] == "unknown_offset"
        # Still working after all that.
        await http.post("/topics/orders/messages", json={"payload": "fine"})
        assert (await messages(ws, 1))[0]["payload"] == "fine"


async def test_oversize_frames_close_the_connection(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    await http.post("/topics", json={"name": "orders"})
    async with websockets.connect(f"{server.ws_url}/ws/topics/orders") as ws:
        await frame(ws)
        await ws.send(json.dumps({"type": "publish", "payload": "x" * (3 * 1024 * 1024)}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await frame(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert (await http.get("/readyz")).status_code == 200


async def test_bad_connection_parameters_are_refused(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    await http.post("/topics", json={"name": "orders"})
    async with websockets.connect(f"{server.ws_url}/ws/topics/nope") as ws:
        error = await frame(ws)
        assert (error["type"], error["code"]) == ("error", "topic_not_found")
    async with websockets.connect(f"{server.ws_url}/ws/topics/orders?start=sometime") as ws:
        assert (await frame(ws))["code"] == "invalid_position"
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(f"{server.ws_url}/ws/topics/orders?prefetch=0")
