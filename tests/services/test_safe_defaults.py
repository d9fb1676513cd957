"""Safe by default: browsers cannot drive the server from another site, and nothing serves an
open API on the network by accident (issue 9, finding 3)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import websockets

from pgqueue.settings import Settings
from pgqueue.web.exposure import check_bind
from tests.services.conftest import RunningServer, free_port, serving
from tests.services.test_websocket import frame

EVIL = "http://evil.example"


async def topics(http: httpx.AsyncClient) -> set[str]:
    return {t["name"] for t in (await http.get("/topics")).json()}


async def test_v1_changes_state_on_get_only_where_its_contract_says(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    await http.post("/v1/topic", json={"topic": "kept", "description": "d"})
    for path, params in [
        ("/v1/topic_delete", {"topic": "kept"}),
        ("/v1/topic", {"topic": "made", "description": "d"}),
        ("/v1/publish", {"topic": "kept", "message": "m"}),
        ("/v1/unsubscribe", {"subscriber_id": 1}),
    ]:
        refused = await http.get(path, params=params)
        assert (refused.status_code, refused.json()["error"]) == (405, "method_not_allowed")
    assert await topics(http) == {"kept"}
    assert (await http.get("/topics/kept/messages")).json()["messages"] == []


async def test_json_bodies_only_as_application_json(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    await http.post("/topics", json={"name": "t"})
    for path, body in [
        ("/v1/publish", '{"topic": "t", "message": "m"}'),
        ("/v1/topic_delete", '{"topic": "t"}'),
        ("/topics/t/messages", '{"payload": 1}'),
    ]:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"content-type": content_type} if content_type else {}
            refused = await http.post(path, content=body, headers=headers)
            assert refused.status_code == 415, (path, content_type, refused.text)
            assert refused.json()["error"] == "unsupported_media_type"
    form = await http.post("/v1/topic", data={"topic": "x", "description": "d"})
    assert form.status_code == 415
    assert await topics(http) == {"t"}
    assert (await http.get("/topics/t/messages")).json()["messages"] == []
    charset = await http.post(
        "/topics/t/messages",
        content=b'{"payload": 1}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert charset.status_code == 201


async def test_a_cross_site_request_cannot_change_state(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    await http.post("/topics", json={"name": "t"})
    evil = {"origin": EVIL}
    for method, path, body in [
        ("POST", "/topics", {"name": "evil"}),
        ("DELETE", "/topics/t", None),
        ("POST", "/v1/topic_delete", {"topic": "t"}),
    ]:
        refused = await http.request(method, path, json=body, headers=evil)
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden"), path
    # A GET that changes state (the v1 contract's) refuses what a browser sends for an
    # <img> on another site: no Origin, but Sec-Fetch-Site.
    sneaky = await http.get(
        "/v1/topic_reset", params={"topic": "t"}, headers={"sec-fetch-site": "cross-site"}
    )
    assert sneaky.status_code == 403
    assert await topics(http) == {"t"}
    # The server's own pages (same origin) and clients without Origin go through.
    own = await http.post("/topics", json={"name": "mine"}, headers={"origin": server.url})
    assert own.status_code == 201
    assert (await http.get("/v1/topic_reset", params={"topic": "t"})).status_code == 200


async def test_a_websocket_from_another_origin_is_refused(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    await http.post("/topics", json={"name": "t"})
    url = f"{server.ws_url}/ws/topics/t"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, origin=websockets.Origin(EVIL))
    assert refused.value.response.status_code == 403
    async with websockets.connect(url, origin=websockets.Origin(server.url)) as ws:
        assert (await frame(ws))["type"] == "welcome"


async def test_only_the_hosts_it_serves_answer(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own name."""
    rebound = await http.get("/topics", headers={"host": "evil.example:8888"})
    assert (rebound.status_code, rebound.json()["error"]) == (400, "host_not_allowed")
    for host in ("localhost:1234", "127.0.0.1", "[::1]:8888"):
        assert (await http.get("/topics", headers={"host": host})).status_code == 200, host
    handshake = {
        "host": "evil.example",
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
    }
    refused = await http.get("/ws/topics/t", headers=handshake)
    assert (refused.status_code, refused.json()["error"]) == (400, "host_not_allowed")


@pytest.fixture
def listed(database_dsn: str) -> Iterator[RunningServer]:
    settings = Settings(
        database_url=database_dsn,
        allowed_hosts="queue.example.com, *.internal",
        allowed_origins=["https://app.example.com"],
    )
    with serving(settings) as running:
        yield running


async def test_allow_lists_are_configurable(listed: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=listed.url) as http:
        for host in ("queue.example.com", "a.b.internal:80"):
            assert (await http.get("/topics", headers={"host": host})).status_code == 200
        made = await http.post(
            "/topics", json={"name": "t"}, headers={"origin": "https://app.example.com"}
        )
        assert made.status_code == 201


def _serve(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    return subprocess.run(
        [sys.executable, "-m", *argv],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["pgqueue.cli", "serve", "--host", "0.0.0.0"],
        ["service_publish"],
        ["service_subscribe"],
    ],
)
def test_no_open_api_on_the_network_without_tokens(argv: list[str], database_dsn: str) -> None:
    env = {
        "PGQUEUE_DATABASE_URL": database_dsn,
        "PGQUEUE_HOST": "0.0.0.0",
        "PGQUEUE_PORT": str(free_port()),
    }
    refused = _serve(argv, env)
    assert refused.returncode != 0
    assert "refusing to serve 0.0.0.0 without tokens" in refused.stderr, refused.stderr
    assert "--insecure" in refused.stderr


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_insecure_is_said_loudly() -> None:
    captured = Captured()
    logger = logging.getLogger("pgqueue.web.exposure")
    logger.addHandler(captured)
    try:
        check_bind(Settings(), "0.0.0.0", insecure=True)
        check_bind(Settings(insecure=True), "10.1.2.3")
        check_bind(Settings(api_tokens={"t": ["admin"]}), "0.0.0.0")  # tokens: nothing to say
        check_bind(Settings(), "127.0.0.1")
    finally:
        logger.removeHandler(captured)
    assert len(captured.lines) == 2, captured.lines
    assert all(line.startswith("INSECURE: ") for line in captured.lines)
