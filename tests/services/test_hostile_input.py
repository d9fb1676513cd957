"""Issue 9, findings 5, 7 and 9 against a real server: oversize fields, endless subscribers
and hostile values get a JSON 4xx naming the problem and change nothing; what is left
unexpected is a JSON 500 with an id the log has too, never a stack trace."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from fastapi import WebSocket

import pgqueue
from pgqueue.settings import Settings
from pgqueue.web.combined import create_app
from tests.services.conftest import RunningServer, serving
from tests.services.test_websocket import frame, messages
from tests.test_bad_input import SNAPSHOT

Body = dict[str, Any] | str | bytes  # text and bytes go as they are, as application/json
NESTED_100: Any = "bottom"
for _ in range(100):
    NESTED_100 = [NESTED_100]

# (case, method, path, body, status, error, words in the detail)
REST: list[tuple[str, str, str, Body | None, int, str, str]] = [
    # finding 5: every field has a size limit
    ("idempotency key of 3,000 characters", "POST", "/topics/orders/messages",
     {"payload": 1, "idempotency_key": "k" * 3000}, 413, "field_too_large",
     "idempotency_key is 3000 bytes; the limit is 512"),
    ("key", "POST", "/topics/orders/messages", {"payload": 1, "key": "k" * 5000},
     413, "field_too_large", "key is 5000 bytes"),
    ("headers in all", "POST", "/topics/orders/messages",
     {"payload": 1, "headers": {f"h{n}": "x" * 100 for n in range(200)}},
     413, "field_too_large", "headers is"),
    ("correlation_id", "POST", "/topics/orders/messages",
     {"payload": 1, "correlation_id": "c" * 2000}, 413, "field_too_large", "correlation_id"),
    ("reply_to", "POST", "/topics/orders/messages", {"payload": 1, "reply_to": "r" * 2000},
     413, "field_too_large", "reply_to"),
    ("a key in a batch", "POST", "/topics/orders/messages/batch",
     {"messages": [{"payload": 1}, {"payload": 2, "key": "k" * 2000}]},
     413, "field_too_large", "message 2: key"),
    ("topic description", "POST", "/topics", {"name": "other", "description": "d" * 5000},
     413, "field_too_large", "description is 5000 bytes; the limit is 4096"),
    ("description, altered", "PATCH", "/topics/orders", {"description": "d" * 5000},
     413, "field_too_large", "description"),
    ("subscriber filter", "POST", "/topics/orders/subscribers",
     {"name": "f", "filter": {"payload": {"k": "x" * 5000}}}, 413, "field_too_large", "filter"),
    ("filter, altered", "PATCH", "/topics/orders/subscribers/billing",
     {"filter": {"payload": {"k": "x" * 5000}}}, 413, "field_too_large", "filter"),
    ("topic name", "POST", "/topics", {"name": "n" * 5000}, 422, "invalid_name",
     "characters) (names are 1-100 characters"),
    ("payload nested 100 levels", "POST", "/topics/orders/messages", {"payload": NESTED_100},
     422, "invalid_payload", "nested more than 99 levels"),
    # finding 9: values that gave plain-text 500s
    ("lone surrogate in a payload", "POST", "/topics/orders/messages",
     '{"payload": "\\ud800"}', 422, "invalid_request", "lone surrogate"),
    ("lone surrogate in a batch", "POST", "/topics/orders/messages/batch",
     '{"messages": [{"payload": 1}, {"payload": {"a": "x\\udfff"}}]}',
     422, "invalid_request", "lone surrogate"),
    ("lone surrogate in a key", "POST", "/topics/orders/messages",
     '{"payload": 1, "key": "\\ud800"}', 422, "invalid_request", "lone surrogate"),
    ("NaN payload", "POST", "/topics/orders/messages", '{"payload": NaN}',
     422, "invalid_request", "NaN is not JSON"),
    ("Infinity in a batch", "POST", "/topics/orders/messages/batch",
     '{"messages": [{"payload": [1, -Infinity]}]}', 422, "invalid_request", "Infinity"),
    ("1e999 payload", "POST", "/topics/orders/messages", '{"payload": 1e999}',
     422, "invalid_request", "out of range"),
    ("reset to 99999999999d", "POST", "/topics/orders/reset", {"to": "99999999999d"},
     422, "invalid_position", "out of range"),
    ("reset to ago:99999999999h", "POST", "/topics/orders/subscribers/billing/reset",
     {"to": "ago:99999999999h"}, 422, "invalid_position", "out of range"),
    ("reset to 5,000 digits", "POST", "/topics/orders/reset", {"to": "9" * 5000},
     422, "invalid_position", "out of range"),
    ("reset to a 5,000-digit number", "POST", "/topics/orders/reset", '{"to": ' + "9" * 5000 + "}",
     422, "invalid_request", "too many digits"),
    ("reset to 2**63", "POST", "/topics/orders/reset", {"to": 2**63}, 422, "invalid_request", ""),
    ("reset to a 19-digit shift past a bigint", "POST", "/topics/orders/reset",
     {"to": "+9999999999999999999"}, 422, "invalid_position", "out of range"),
    ("reset to true", "POST", "/topics/orders/reset", {"to": True}, 422, "invalid_request", ""),
    ("reset to Arabic-Indic digits", "POST", "/topics/orders/reset", {"to": "\u0661\u0662"},
     422, "invalid_position", "not a position"),
    ("subscriber starting at true", "POST", "/topics/orders/subscribers",
     {"name": "t", "start": True}, 422, "invalid_request", ""),
    ("backoff.max_ms 2.6e17", "POST", "/topics/orders/subscribers",
     {"name": "b", "backoff": {"base_ms": 0, "max_ms": 2.6e17}}, 422, "invalid_request", ""),
    ("backoff.max_ms 260000000000000000", "POST", "/topics/orders/subscribers",
     {"name": "b", "backoff": {"base_ms": 0, "max_ms": 260_000_000_000_000_000}},
     422, "invalid_request", ""),
    ("backoff max below base", "POST", "/topics/orders/subscribers",
     {"name": "b", "backoff": {"base_ms": 10, "max_ms": 5}}, 422, "invalid_request", ""),
    ("retention_max_age_s 1e18", "POST", "/topics", {"name": "r", "retention_max_age_s": 1e18},
     422, "invalid_request", ""),
    ("retention_max_age_s 1e18, altered", "PATCH", "/topics/orders",
     {"retention_max_age_s": 1e18}, 422, "invalid_request", ""),
    ("retention_max_count past a bigint", "POST", "/topics",
     {"name": "r", "retention_max_count": 2**70}, 422, "invalid_request", ""),
    ("max_payload_bytes past an integer", "POST", "/topics",
     {"name": "r", "max_payload_bytes": 2**40}, 422, "invalid_request", ""),
    ("browse from 2**64", "GET", "/topics/orders/messages?from=18446744073709551616", None,
     422, "invalid_request", ""),
    ("claim for subscriber 2**64", "POST", "/subscribers/18446744073709551616/claim", {},
     422, "invalid_request", ""),
    ("ack offset true", "POST", "/subscribers/1/ack", {"offsets": [True], "lease_tokens": [1]},
     422, "invalid_request", ""),
    ("ack offset 2**64", "POST", "/subscribers/1/ack", {"offsets": [2**64], "lease_tokens": [1]},
     422, "invalid_request", ""),
    ("nack lease token 2**64", "POST", "/subscribers/1/nack", {"offset": 1, "lease_token": 2**64},
     422, "invalid_request", ""),
    ("replay from 2**64", "POST", "/topics/orders/subscribers/billing/dead-letters/replay",
     {"first": 2**64}, 422, "invalid_request", ""),
    ("not UTF-8", "POST", "/topics/orders/messages", b'{"payload": "\xff"}',
     422, "invalid_request", "UTF-8"),
    ("nested 5,000 levels", "POST", "/topics/orders/messages",
     '{"payload": ' + "[" * 5000 + "]" * 5000 + "}", 422, "invalid_request", "nested too deeply"),
]  # fmt: skip

V1: list[tuple[str, str, str, Body | None, int, str, str]] = [
    ("NaN message", "POST", "/v1/publish", '{"topic": "orders", "message": NaN}',
     422, "invalid_argument", "NaN is not JSON"),
    ("Infinity message", "POST", "/v1/publish", '{"topic": "orders", "message": Infinity}',
     422, "invalid_argument", "Infinity is not JSON"),
    ("lone surrogate message", "POST", "/v1/publish", '{"topic": "orders", "message": "\\ud800"}',
     422, "invalid_argument", "lone surrogate"),
    ("subscriber_id 1e999", "POST", "/v1/ack_message", '{"subscriber_id": 1e999, "offset": 1}',
     422, "invalid_argument", "out of range"),
    ("subscriber_id 2**64", "POST", "/v1/ack_message", {"subscriber_id": 2**64, "offset": 1},
     422, "invalid_request", "out of range"),
    ("subscriber_id true", "POST", "/v1/ack_message", {"subscriber_id": True, "offset": 1},
     422, "invalid_request", "must be an integer"),
    ("offset 1.5", "POST", "/v1/ack_message", {"subscriber_id": 1, "offset": 1.5},
     422, "invalid_request", "must be an integer"),
    ("Arabic-Indic subscriber_id", "GET", "/v1/get_message?subscriber_id=\u0661", None,
     422, "invalid_request", "must be an integer"),
    ("5,000-digit reset offset", "GET", "/v1/topic_reset?topic=orders&offset=" + "9" * 5000,
     None, 422, "invalid_request", "out of range"),
    ("topic description", "POST", "/v1/topic", {"topic": "other", "description": "d" * 5000},
     422, "field_too_large", "description is 5000 bytes"),
    ("nested 5,000 levels", "POST", "/v1/publish",
     '{"topic": "orders", "message": ' + "[" * 5000 + "]" * 5000 + "}",
     422, "invalid_argument", "nested too deeply"),
]  # fmt: skip


@pytest.fixture
async def orders(http: httpx.AsyncClient) -> None:
    """Topic orders with one message, and subscriber billing (id 1) past it."""
    assert (await http.post("/topics", json={"name": "orders"})).status_code == 201
    assert (await http.post("/topics/orders/messages", json={"payload": 1})).status_code == 201
    created = await http.post("/topics/orders/subscribers", json={"name": "billing"})
    assert (created.json()["subscriber_id"], created.json()["position"]) == (1, 1)


async def _send(http: httpx.AsyncClient, method: str, path: str, body: Body | None) -> Any:
    if isinstance(body, str | bytes):
        content = body.encode() if isinstance(body, str) else body
        return await http.request(
            method, path, content=content, headers={"content-type": "application/json"}
        )
    return await http.request(method, path, json=body)


def _no_internals(text: str) -> None:
    for internal in ("Traceback", "HINT", "DETAIL", "pkey", "constraint", "SQLSTATE", "$1"):
        assert internal not in text, text


@pytest.mark.parametrize("table", ["REST", "V1"])
async def test_hostile_requests_get_a_json_4xx_and_change_nothing(
    http: httpx.AsyncClient, orders: None, conn: asyncpg.Connection, table: str
) -> None:
    for case, method, path, body, status, error, words in REST if table == "REST" else V1:
        before = tuple(await conn.fetchrow(SNAPSHOT))
        description = await conn.fetchval("SELECT description FROM pgqueue.topic")
        answer = await _send(http, method, path, body)
        assert answer.status_code == status, (case, answer.status_code, answer.text[:300])
        assert answer.headers["content-type"] == "application/json", case
        assert answer.json()["error"] == error, (case, answer.text[:300])
        assert words in json.dumps(answer.json()["detail"], ensure_ascii=False), (case, answer.text)
        _no_internals(answer.text)
        assert tuple(await conn.fetchrow(SNAPSHOT)) == before, case
        assert await conn.fetchval("SELECT description FROM pgqueue.topic") == description, case
    assert (await http.get("/readyz")).status_code == 200


SEEKS: list[Any] = [
    "99999999999d",
    "ago:99999999999h",
    "9" * 5000,
    "-" + "9" * 50,
    2**64,
    True,
    "\u0661\u0662",
    1.5,
]


async def test_hostile_frames_get_error_frames_and_the_connection_goes_on(
    server: RunningServer, http: httpx.AsyncClient, orders: None, conn: asyncpg.Connection
) -> None:
    """Finding 9: a seek to such a target closed the WebSocket with 1011."""
    before = tuple(await conn.fetchrow(SNAPSHOT))
    url = f"{server.ws_url}/ws/topics/orders?subscriber=billing"
    async with websockets.connect(url) as ws:
        assert (await frame(ws))["type"] == "welcome"
        hostile = [json.dumps({"type": "seek", "to": to}) for to in SEEKS] + [
            '{"type": "publish", "payload": NaN}',
            '{"type": "publish", "payload": 1e999}',
            '{"type": "publish", "payload": "\\ud800"}',
            json.dumps({"type": "publish", "payload": 1, "key": "k" * 2000}),
            json.dumps({"type": "publish", "payload": 1, "headers": {"h": "x" * 20_000}}),
            json.dumps({"type": "publish", "payload": NESTED_100}),
            json.dumps({"type": "ack", "offsets": [True]}),
            json.dumps({"type": "ack", "offsets": [2**64]}),
            json.dumps({"type": "nack", "offset": 2**64}),
            '{"type": "publish", "payload": ' + "[" * 5000 + "]" * 5000 + "}",
        ]
        codes = []
        for text in hostile:
            await ws.send(text)
            reply = await frame(ws)
            assert reply["type"] == "error", (text[:80], reply)
            _no_internals(json.dumps(reply))
            codes.append(reply["code"])
        assert codes == (
            ["invalid_position", "invalid_position", "invalid_frame", "invalid_position"]
            + ["invalid_frame", "invalid_frame", "invalid_position", "invalid_frame"]
            + ["invalid_frame"] * 3
            + ["field_too_large", "field_too_large", "invalid_payload"]
            + ["invalid_frame"] * 4
        ), codes
        assert tuple(await conn.fetchrow(SNAPSHOT)) == before
        # Still serving.
        await http.post("/topics/orders/messages", json={"payload": "fine"})
        assert (await messages(ws, 1))[0]["payload"] == "fine"


async def test_v1_subscribers_have_a_cap_and_can_be_removed(
    server: RunningServer, http: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    """Finding 7: 100 /v1/subscribe calls made 100 durable subscribers, without end."""
    await http.post("/topics", json={"name": "orders"})
    ids = []
    for _ in range(100):  # the default cap
        answer = await http.get("/v1/subscribe", params={"topic": "orders"})
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["subscriber_id"])
    refused = await http.get("/v1/subscribe", params={"topic": "orders"})
    assert refused.status_code == 422
    assert refused.json()["error"] == "limit_reached"
    assert "PGQUEUE_MAX_SUBSCRIBERS_PER_TOPIC" in refused.json()["detail"]
    rest = await http.post("/topics/orders/subscribers", json={"name": "billing"})
    assert (rest.status_code, rest.json()["error"]) == (409, "limit_reached")
    async with websockets.connect(f"{server.ws_url}/ws/topics/orders?subscriber=named") as ws:
        assert (await frame(ws))["code"] == "limit_reached"
    assert await conn.fetchval("SELECT count(*) FROM pgqueue.subscriber") == 100
    # An abandoned v1 subscriber goes with /v1/unsubscribe (or DELETE .../subscribers/v1-...),
    # and its place is free again.
    gone = await http.post("/v1/unsubscribe", json={"subscriber_id": ids[0]})
    assert gone.status_code == 200
    assert (await http.get("/v1/subscribe", params={"topic": "orders"})).status_code == 200


async def test_topics_have_a_cap(database_dsn: str) -> None:
    with serving(Settings(database_url=database_dsn, max_topics=2)) as running:
        async with httpx.AsyncClient(base_url=running.url) as http:
            for name in ("a", "b"):
                assert (await http.post("/topics", json={"name": name})).status_code == 201
            refused = await http.post("/topics", json={"name": "c"})
            assert (refused.status_code, refused.json()["error"]) == (409, "limit_reached")
            v1 = await http.post("/v1/topic", json={"topic": "c", "description": "d"})
            assert (v1.status_code, v1.json()["error"]) == (422, "limit_reached")
            assert [t["name"] for t in (await http.get("/topics")).json()] == ["a", "b"]


def _failing_app(settings: Settings) -> Any:
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: SELECT * FROM pgqueue.topic")

    @app.get("/unmapped")
    async def unmapped() -> None:
        raise pgqueue.PgQueueError("the database refused the request (SQLSTATE 23505)")

    @app.websocket("/ws/boom")
    async def ws_boom(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise RuntimeError("secret internals in a socket")

    return app


async def test_unexpected_errors_are_json_500s_with_an_id_the_log_has_too(
    database_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(database_url=database_dsn)
    caplog.set_level(logging.ERROR, logger="pgqueue.web.incidents")
    app = _failing_app(settings)
    with serving(settings, app) as running:
        async with httpx.AsyncClient(base_url=running.url) as http:
            for path in ("/boom", "/unmapped"):
                answer = await http.get(path)
                assert answer.status_code == 500
                assert answer.headers["content-type"] == "application/json"
                body = answer.json()
                assert set(body) == {"error", "detail", "id"} and body["error"] == "internal"
                assert "secret" not in answer.text and "SQLSTATE" not in answer.text
                _logged_with_traceback(caplog, str(uuid.UUID(body["id"])))
            assert (await http.get("/healthz")).status_code == 200
        async with websockets.connect(f"{running.ws_url}/ws/boom") as ws:
            await ws.send("go")
            error = await frame(ws)
            assert (error["type"], error["code"]) == ("error", "internal")
            assert "secret" not in json.dumps(error)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await frame(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        _logged_with_traceback(caplog, str(uuid.UUID(error["id"])))

        # A bug met while a session carries out a frame: the same, from the session itself.
        async with httpx.AsyncClient(base_url=running.url) as http:
            await http.post("/topics", json={"name": "orders"})
        async with websockets.connect(f"{running.ws_url}/ws/topics/orders?subscriber=s") as ws:
            assert (await frame(ws))["type"] == "welcome"

            async def unnamed_refusal(*_args: Any, **_kwargs: Any) -> None:
                raise pgqueue.PgQueueError('violates unique constraint "secret_key"')

            async def broken_reset(*_args: Any, **_kwargs: Any) -> None:
                raise RuntimeError("secret internals in a session")

            # An error the library could not name: that frame fails, the connection goes on.
            app.state.queue.reset = unnamed_refusal
            await ws.send(json.dumps({"type": "seek", "to": "earliest"}))
            error = await frame(ws)
            assert (error["type"], error["code"]) == ("error", "internal")
            assert "secret" not in json.dumps(error)
            _logged_with_traceback(caplog, str(uuid.UUID(error["id"])))

            app.state.queue.reset = broken_reset
            await ws.send(json.dumps({"type": "seek", "to": "earliest"}))
            error = await frame(ws)
            assert (error["type"], error["code"]) == ("error", "internal")
            assert "secret" not in json.dumps(error)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await frame(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        _logged_with_traceback(caplog, str(uuid.UUID(error["id"])))


def _logged_with_traceback(caplog: pytest.LogCaptureFixture, incident_id: str) -> None:
    [record] = [r for r in caplog.records if incident_id in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[2] is not None
