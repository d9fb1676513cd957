"""Scopes that mean what they say, per-topic ACLs, and how WebSocket clients carry tokens
(issue 9, findings 1, 2 and 4)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import websockets

from pgqueue.settings import Settings
from tests.services.conftest import RunningServer, serving
from tests.services.test_websocket import frame


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer("admin-token")
CONSUMER = bearer("sub-token")


@pytest.fixture
def old_style(database_dsn: str) -> Iterator[RunningServer]:
    """Tokens as they were configured before per-topic ACLs ("subscribe" is now "consume")."""
    tokens: dict[str, Any] = {"sub-token": ["subscribe"], "admin-token": ["admin"]}
    settings = Settings(database_url=database_dsn, api_tokens=tokens, poll_interval=30.0)
    with serving(settings) as running:
        yield running


@pytest.fixture
async def as_admin(old_style: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """Topic t with 3 messages and a durable subscriber "billing" at position 1."""
    async with httpx.AsyncClient(base_url=old_style.url, headers=ADMIN, timeout=10) as http:
        assert (await http.post("/topics", json={"name": "t"})).status_code == 201
        for i in range(3):
            await http.post("/topics/t/messages", json={"payload": i})
        await http.post("/topics/t/subscribers", json={"name": "billing", "start": "earliest"})
        await http.post("/topics/t/subscribers/billing/reset", json={"to": 2})
        yield http


async def billing(http: httpx.AsyncClient) -> dict[str, Any]:
    found: dict[str, Any] = (await http.get("/topics/t/subscribers/billing")).json()
    return found


# -- finding 1: a consume token does no admin work through the side doors --------------------


async def test_v1_ack_moves_a_subscriber_forward_only(
    old_style: RunningServer, as_admin: httpx.AsyncClient
) -> None:
    sid = (await billing(as_admin))["subscriber_id"]
    async with httpx.AsyncClient(base_url=old_style.url, headers=CONSUMER) as http:
        back = await http.post("/v1/ack_message", json={"subscriber_id": sid, "offset": 0})
        assert (back.status_code, back.json().get("error")) == (403, "forbidden")
        beyond = await http.post("/v1/ack_message", json={"subscriber_id": sid, "offset": 99})
        assert beyond.status_code == 422
        assert (await billing(as_admin))["position"] == 1
        forward = await http.post("/v1/ack_message", json={"subscriber_id": sid, "offset": 2})
        assert (forward.status_code, forward.json()["_offset"]) == (200, 2)
    back = await as_admin.post("/v1/ack_message", json={"subscriber_id": sid, "offset": 0})
    assert (back.status_code, back.json()["_offset"]) == (200, 0)  # admin may move it back


async def test_v1_unsubscribe_takes_admin(
    old_style: RunningServer, as_admin: httpx.AsyncClient
) -> None:
    sid = (await billing(as_admin))["subscriber_id"]
    async with httpx.AsyncClient(base_url=old_style.url, headers=CONSUMER) as http:
        refused = await http.post("/v1/unsubscribe", json={"subscriber_id": sid})
        assert refused.status_code == 403
    assert (await billing(as_admin))["subscriber_id"] == sid


async def test_a_websocket_consumer_cannot_create_a_durable_subscriber(
    old_style: RunningServer, as_admin: httpx.AsyncClient
) -> None:
    url = f"{old_style.ws_url}/ws/topics/t?subscriber=new&start=earliest"
    async with websockets.connect(url, additional_headers=CONSUMER) as ws:
        refused = await frame(ws)
        assert (refused["type"], refused["code"]) == ("error", "forbidden"), refused
    names = {s["name"] for s in (await as_admin.get("/topics/t/subscribers")).json()}
    assert names == {"billing"}
    # An existing durable subscriber, and a throwaway one, are consume.
    for query in ("?subscriber=billing", "?start=earliest"):
        async with websockets.connect(
            f"{old_style.ws_url}/ws/topics/t{query}", additional_headers=CONSUMER
        ) as ws:
            assert (await frame(ws))["type"] == "welcome"


async def test_a_seek_frame_takes_admin(
    old_style: RunningServer, as_admin: httpx.AsyncClient
) -> None:
    url = f"{old_style.ws_url}/ws/topics/t?subscriber=billing&prefetch=1"
    async with websockets.connect(url, additional_headers=CONSUMER) as ws:
        assert (await frame(ws))["type"] == "welcome"
        assert (await frame(ws))["offset"] == 2
        await ws.send(json.dumps({"type": "seek", "to": "latest"}))
        refused = await frame(ws)
        assert (refused["type"], refused["code"]) == ("error", "forbidden"), refused
    assert (await billing(as_admin))["position"] == 1
    async with websockets.connect(url, additional_headers=ADMIN) as ws:
        await frame(ws)
        await ws.send(json.dumps({"type": "seek", "to": "latest"}))
        while (reply := await frame(ws))["type"] == "message":
            pass
        assert (reply["type"], reply["position"]) == ("reset", 3)


async def test_leases_are_capped_on_every_protocol(
    old_style: RunningServer, as_admin: httpx.AsyncClient
) -> None:
    sid = (await billing(as_admin))["subscriber_id"]
    async with httpx.AsyncClient(base_url=old_style.url, headers=CONSUMER) as http:
        day = await http.post(
            f"/subscribers/{sid}/claim", json={"max_messages": 10, "lease_ms": 86_400_000}
        )
        assert (day.status_code, day.json().get("error")) == (422, "invalid_argument")
        stats = (await as_admin.get("/stats")).json()["subscribers"]
        assert [s["in_flight"] for s in stats] == [0]
        cap_ms = int(old_style.settings.max_lease * 1000)  # PGQUEUE_MAX_LEASE, 600 s
        within_cap = await http.post(
            f"/subscribers/{sid}/claim", json={"max_messages": 1, "lease_ms": cap_ms}
        )
        assert within_cap.status_code == 200
    url = f"{old_style.ws_url}/ws/topics/t?subscriber=billing&lease=86400"
    async with websockets.connect(url, additional_headers=CONSUMER) as ws:
        assert (await frame(ws))["code"] == "invalid_argument"


# -- finding 2: scopes per topic pattern --------------------------------------------------


SECRET = "a-token-kept-only-as-its-digest"
ACL: dict[str, Any] = {
    "orders-token": {"orders.*": ["publish", "consume"], "audit": ["consume"]},
    f"sha256:{hashlib.sha256(SECRET.encode()).hexdigest()}": {"audit": ["admin"]},
    "root": {"*": ["admin"]},
}


@pytest.fixture
def acl_server(database_dsn: str) -> Iterator[RunningServer]:
    settings = Settings(database_url=database_dsn, api_tokens=ACL, poll_interval=30.0)
    with serving(settings) as running:
        yield running


@pytest.fixture
async def as_root(acl_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=acl_server.url, headers=bearer("root"), timeout=10
    ) as http:
        for topic in ("orders.eu", "orders", "audit", "payroll"):
            assert (await http.post("/topics", json={"name": topic})).status_code == 201
            await http.post(f"/topics/{topic}/messages", json={"payload": f"{topic} secret"})
        yield http


async def test_a_token_reaches_only_the_topics_its_patterns_match(
    acl_server: RunningServer, as_root: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(base_url=acl_server.url, headers=bearer("orders-token")) as http:
        listed = {t["name"] for t in (await http.get("/topics")).json()}
        assert listed == {"orders.eu", "audit"}  # orders.* does not match "orders"
        assert (await http.get("/topics/orders.eu/messages")).status_code == 200
        assert (await http.get("/topics/audit/messages")).status_code == 200
        for topic in ("payroll", "orders"):
            refused = await http.get(f"/topics/{topic}/messages")
            assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
            assert "secret" not in refused.text
        published = await http.post("/topics/orders.eu/messages", json={"payload": 1})
        assert published.status_code == 201
        assert (await http.post("/topics/audit/messages", json={"payload": 1})).status_code == 403
        assert (await http.get("/v1/topic_messages")).json() == [
            row
            for row in (await as_root.get("/v1/topic_messages")).json()
            if row["topic"] in {"orders.eu", "audit"}
        ]


async def test_a_websocket_publish_frame_is_checked_against_the_topic_it_names(
    acl_server: RunningServer, as_root: httpx.AsyncClient
) -> None:
    url = f"{acl_server.ws_url}/ws/topics/orders.eu"
    async with websockets.connect(url, additional_headers=bearer("orders-token")) as ws:
        await frame(ws)
        await ws.send(json.dumps({"type": "publish", "topic": "payroll", "payload": "forged"}))
        refused = await frame(ws)
        assert (refused["type"], refused["code"]) == ("error", "forbidden"), refused
    payroll = (await as_root.get("/topics/payroll/messages")).json()["messages"]
    assert [m["payload"] for m in payroll] == ["payroll secret"]


async def test_a_token_configured_by_its_sha256(
    acl_server: RunningServer, as_root: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(base_url=acl_server.url, headers=bearer(SECRET)) as http:
        assert (await http.post("/topics/audit/reset", json={"to": "latest"})).status_code == 200
        assert (await http.get("/topics/payroll")).status_code == 403
    digest_itself = ACL.keys() - {"orders-token", "root"}
    async with httpx.AsyncClient(
        base_url=acl_server.url, headers=bearer(next(iter(digest_itself)))
    ) as http:
        assert (await http.get("/topics/audit")).status_code == 401


async def test_unknown_and_forbidden_subscriber_ids_look_the_same(
    acl_server: RunningServer, as_root: httpx.AsyncClient
) -> None:
    created = await as_root.post("/topics/payroll/subscribers", json={"name": "s"})
    forbidden_id = created.json()["subscriber_id"]
    async with httpx.AsyncClient(base_url=acl_server.url, headers=bearer("orders-token")) as http:
        answers = []
        for sid in (forbidden_id, forbidden_id + 1000):
            response = await http.post(f"/subscribers/{sid}/claim", json={})
            detail = response.json()["detail"].replace(str(sid), "N")
            answers.append((response.status_code, response.json()["error"], detail))
        assert answers[0] == answers[1] == (403, "forbidden", answers[0][2])


# -- finding 4: WebSocket tokens travel in a header or a subprotocol, never in a log ---------


async def test_a_browser_sends_its_token_as_a_subprotocol(
    acl_server: RunningServer, as_root: httpx.AsyncClient
) -> None:
    url = f"{acl_server.ws_url}/ws/topics/audit"
    async with websockets.connect(
        url,
        subprotocols=[websockets.Subprotocol("pgqueue"), websockets.Subprotocol("bearer.root")],
    ) as ws:
        assert ws.subprotocol == "pgqueue"  # the token is never echoed
        assert (await frame(ws))["type"] == "welcome"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(
            url, subprotocols=[websockets.Subprotocol("pgqueue"), websockets.Subprotocol("x")]
        )
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"] == "unauthorized"


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_a_token_in_the_query_string_stays_out_of_the_logs(database_dsn: str) -> None:
    tokens: dict[str, Any] = {"root": ["admin"]}
    settings = Settings(database_url=database_dsn, api_tokens=tokens, poll_interval=30.0)
    captured = Captured()
    loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error")]
    with serving(settings, log_level="info") as server:
        for logger in loggers:
            logger.addHandler(captured)
        try:
            async with httpx.AsyncClient(base_url=server.url) as http:
                await http.get("/topics", params={"token": "root"})
                await http.get("/healthz", params={"x": "1", "token": "root"})
            try:
                async with websockets.connect(f"{server.ws_url}/ws/topics/t?token=root"):
                    handshake = 101
            except websockets.InvalidStatus as refused:
                handshake = refused.response.status_code
        finally:
            for logger in loggers:
                logger.removeHandler(captured)
    logged = "\n".join(captured.lines)
    assert "token=root" not in logged, logged
    assert "/topics?token=*** " in logged and "WebSocket /ws/topics/t?token=***" in logged
    # Not a way to authenticate any more: URLs end up in logs on their way, too.
    assert handshake == 401
