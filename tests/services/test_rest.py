"""The REST API over a real server: routes, statuses, JSON errors, limits."""

from __future__ import annotations

import asyncpg
import httpx

import pgqueue
from pgqueue.settings import Settings
from tests.services.conftest import serving
from tests.support import eventually


async def test_topic_publish_browse_and_stats(http: httpx.AsyncClient) -> None:
    created = await http.post("/topics", json={"name": "orders", "description": "demo"})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "orders"
    assert (await http.post("/topics", json={"name": "orders"})).status_code == 409

    one = await http.post(
        "/topics/orders/messages",
        json={"payload": {"id": 1}, "headers": {"type": "order.created"}, "key": "c-1"},
    )
    assert (one.status_code, one.json()) == (201, {"topic": "orders", "offset": 1})
    batch = await http.post(
        "/topics/orders/messages/batch", json={"messages": [{"payload": 2}, {"payload": "three"}]}
    )
    assert (batch.status_code, batch.json()) == (201, {"topic": "orders", "offsets": [2, 3]})

    browsed = (await http.get("/topics/orders/messages", params={"from": 2, "limit": 5})).json()
    assert [m["payload"] for m in browsed["messages"]] == [2, "three"]
    # Options on some messages of a batch, and a payload that looks like a message spec.
    mixed = await http.post(
        "/topics/orders/messages/batch",
        json={
            "messages": [
                {"payload": {"payload": "inner"}},
                {"payload": 5, "headers": {"type": "t"}, "key": "k"},
                {"payload": None},
            ]
        },
    )
    assert mixed.json()["offsets"] == [4, 5, 6], mixed.text
    browsed = (await http.get("/topics/orders/messages", params={"from": 4})).json()
    assert [(m["payload"], m["headers"], m["key"]) for m in browsed["messages"]] == [
        ({"payload": "inner"}, {}, None),
        (5, {"type": "t"}, "k"),
        (None, {}, None),
    ]

    sub = await http.post(
        "/topics/orders/subscribers", json={"name": "billing", "start": "earliest"}
    )
    assert sub.status_code == 201 and sub.json()["position"] == 0
    stats = (await http.get("/stats")).json()
    assert stats["topics"][0]["last_offset"] == 6
    assert stats["subscribers"][0]["lag"] == 6

    reset = await http.post(
        "/topics/orders/subscribers/billing/reset", json={"to": "latest", "dry_run": True}
    )
    assert reset.json()["results"][0]["new_position"] == 6
    assert reset.json()["results"][0]["applied"] is False

    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    assert (await http.delete("/topics/orders")).status_code == 204
    assert (await http.get("/topics")).json() == []


async def test_errors_are_json_with_the_right_status(http: httpx.AsyncClient) -> None:
    await http.post("/topics", json={"name": "orders"})

    def error(response: httpx.Response) -> tuple[int, str]:
        assert response.headers["content-type"] == "application/json"
        return response.status_code, response.json()["error"]

    assert error(await http.post("/topics/nope/messages", json={"payload": 1})) == (
        404,
        "topic_not_found",
    )
    assert error(await http.post("/topics", json={"name": "bad name"})) == (422, "invalid_name")
    assert error(
        await http.post(
            "/topics/orders/messages",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
    ) == (422, "invalid_request")
    assert error(await http.post("/topics/orders/messages", json={"payload": 1, "extra": 2})) == (
        422,
        "invalid_request",
    )
    assert error(
        await http.post("/topics/orders/messages", json={"payload": 1, "delay_ms": "x"})
    ) == (422, "invalid_request")
    # NaN is not JSON: the body is malformed (issue 9), not a payload the codec refuses.
    assert error(
        await http.post(
            "/topics/orders/messages",
            content=b'{"payload": NaN}',
            headers={"content-type": "application/json"},
        )
    ) == (422, "invalid_request")
    assert error(
        await http.post(
            "/topics/orders/messages/batch",
            content=b'{"messages": [{"payload": 1}, {"payload": [Infinity]}]}',
            headers={"content-type": "application/json"},
        )
    ) == (422, "invalid_request")
    assert error(await http.post("/topics/orders/messages", json={"payload": "a\u0000b"})) == (
        422,
        "invalid_payload",
    )
    assert error(await http.post("/topics/orders/messages", json={"payload": "x" * 1_100_000})) == (
        413,
        "payload_too_large",
    )
    assert error(
        await http.post(
            "/topics/orders/messages/batch",
            content=b"x" * (17 * 1024 * 1024),
            headers={"content-type": "application/json"},
        )
    ) == (413, "request_too_large")
    assert error(await http.get("/topics/orders/subscribers/ghost")) == (
        404,
        "subscriber_not_found",
    )
    assert error(await http.post("/topics/orders/reset", json={"to": "whenever"})) == (
        422,
        "invalid_position",
    )

    # The database is intact and the server still answers.
    assert (await http.get("/topics/orders/messages")).json()["messages"] == []
    assert (await http.get("/readyz")).status_code == 200


async def test_the_server_enforces_retention(database_dsn: str) -> None:
    settings = Settings(database_url=database_dsn, poll_interval=30.0, retention_interval=0.05)
    with serving(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            too_small = await http.post("/topics", json={"name": "logs", "segment_size": 5})
            assert too_small.status_code == 422
            created = await http.post(
                "/topics", json={"name": "logs", "retention_max_count": 10, "segment_size": 10}
            )
            assert (created.status_code, created.json()["segment_size"]) == (201, 10)
            published = await http.post(
                "/topics/logs/messages/batch",
                json={"messages": [{"payload": i} for i in range(1, 36)]},
            )
            assert published.status_code == 201

            async def first_offset() -> int | None:
                page = (await http.get("/topics/logs/messages", params={"from": 1})).json()
                first: int = page["messages"][0]["offset"]
                return first if first > 1 else None

            # Offsets 1-19 (segments 0 and 1) have 10 newer messages; the next pass drops them.
            assert await eventually(first_offset) == 20


async def test_readers_see_committed_in_transaction_publishes(
    http: httpx.AsyncClient, database_dsn: str
) -> None:
    """Finding 7: browsing (REST, v1 get_message) never showed in-transaction publishes until
    something claimed or published directly."""
    assert (await http.post("/topics", json={"name": "orders"})).status_code == 201
    subscribed = await http.get("/v1/subscribe", params={"topic": "orders"})
    subscriber_id = subscribed.json()["subscriber_id"]
    conn = await asyncpg.connect(database_dsn)
    try:
        async with conn.transaction():
            await pgqueue.publish(conn, "orders", {"id": 1})
        browsed = await http.get("/topics/orders/messages")
        assert [(m["offset"], m["payload"]) for m in browsed.json()["messages"]] == [(1, {"id": 1})]
        async with conn.transaction():
            await pgqueue.publish(conn, "orders", {"id": 2})
        got = await http.get(
            "/v1/get_message", params={"subscriber_id": subscriber_id, "num_messages": 5}
        )
        assert [m["_offset"] for m in got.json()] == [1, 2]
    finally:
        await conn.close()
