"""GET /metrics scraped from a real server after known traffic (issue 10, build item 5)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from pgqueue.settings import Settings
from tests.private_postgres import PrivatePostgres, private_dsn, private_postgres
from tests.services.conftest import RunningServer, serving
from tests.services.test_websocket import _eventually, frame, messages

__all__ = ["private_dsn", "private_postgres"]  # fixtures

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
PUBLISH_ROUTE = {"method": "POST", "route": "/topics/{topic}/messages", "status": "201"}


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(http: httpx.AsyncClient, **headers: str) -> Samples:
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(response.text)


async def scrape_until(http: httpx.AsyncClient, done: Callable[[Samples], bool]) -> Samples:
    """Scrapes until `done` holds (an ack or nack frame has no reply to wait for)."""
    latest: Samples = {}

    async def check() -> bool:
        nonlocal latest
        latest = await scrape(http)
        return done(latest)

    await _eventually(check)
    return latest


@pytest.fixture
def fresh(server_settings: Settings) -> Iterator[RunningServer]:
    """A server whose every scrape reads the database: the gauges can be compared with
    /stats read right after."""
    with serving(server_settings.model_copy(update={"metrics_cache": 0.0})) as running:
        yield running


async def test_metrics_count_known_traffic_and_match_the_database(fresh: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=fresh.url, timeout=10) as http:
        assert (await http.post("/topics", json={"name": "t"})).status_code == 201
        for name, attempts in (("billing", 1), ("audit", 5)):
            created = await http.post(
                "/topics/t/subscribers",
                json={"name": name, "start": "earliest", "max_attempts": attempts},
            )
            assert created.status_code == 201
        audit_id = created.json()["subscriber_id"]
        for i in range(5):
            assert (await http.post("/topics/t/messages", json={"payload": i})).status_code == 201

        url = f"{fresh.ws_url}/ws/topics/t?subscriber=billing&prefetch=10"
        async with websockets.connect(url) as ws:
            await frame(ws)  # welcome
            offsets = [m["offset"] for m in await messages(ws, 5)]
            await ws.send(json.dumps({"type": "ack", "offsets": offsets[:4]}))
            await ws.send(json.dumps({"type": "nack", "offset": offsets[4]}))  # its last attempt
            claimed = await http.post(f"/subscribers/{audit_id}/claim", json={"max_messages": 2})
            assert len(claimed.json()["messages"]) == 2

            def settled(s: Samples) -> bool:
                billing = {"topic": "t", "subscriber": "billing"}
                return (value(s, "pgqueue_acked_messages_total", **billing) or 0) >= 4 and (
                    value(s, "pgqueue_dead_lettered_messages_total", **billing) or 0
                ) >= 1

            await scrape_until(http, settled)
            # Scraped again: the read that saw the counters settle may have read the database
            # just before the nack committed; this one reads it after.
            samples = await scrape(http)
            stats = (await http.get("/stats")).json()

            assert value(samples, "pgqueue_websocket_connections") == 1
            _assert_counts(samples)
            _assert_gauges_match(samples, stats)
            _assert_latency_by_template(samples)

        closed = await scrape_until(http, lambda s: value(s, "pgqueue_websocket_connections") == 0)
        assert value(closed, "pgqueue_websocket_connections") == 0


def _assert_counts(samples: Samples) -> None:
    billing = {"topic": "t", "subscriber": "billing"}
    audit = {"topic": "t", "subscriber": "audit"}
    assert value(samples, "pgqueue_published_messages_total", topic="t") == 5
    assert value(samples, "pgqueue_delivered_messages_total", **billing) == 5
    assert value(samples, "pgqueue_delivered_messages_total", **audit) == 2
    assert value(samples, "pgqueue_acked_messages_total", **billing) == 4
    assert value(samples, "pgqueue_nacked_messages_total", **billing) == 1
    assert value(samples, "pgqueue_dead_lettered_messages_total", **billing) == 1
    assert value(samples, "pgqueue_acked_messages_total", **audit) is None  # never acked


def _assert_gauges_match(samples: Samples, stats: dict[str, Any]) -> None:
    assert value(samples, "pgqueue_database_up") == 1
    [topic] = stats["topics"]
    assert value(samples, "pgqueue_topic_last_offset", topic="t") == topic["last_offset"] == 5
    assert value(samples, "pgqueue_topic_log_bytes", topic="t") == topic["bytes"] > 0
    for s in stats["subscribers"]:
        labels = {"topic": "t", "subscriber": s["subscriber"]}
        for gauge, field in (
            ("pgqueue_subscriber_lag_messages", "lag"),
            ("pgqueue_subscriber_in_flight_messages", "in_flight"),
            ("pgqueue_subscriber_retrying_messages", "retrying"),
            ("pgqueue_subscriber_dead_letters", "dead"),
            ("pgqueue_subscriber_position", "position"),
        ):
            assert value(samples, gauge, **labels) == s[field], (gauge, s)
        # Read a moment before /stats: the oldest waiting message was a little younger.
        scraped_age = value(samples, "pgqueue_subscriber_lag_seconds", **labels)
        assert scraped_age is not None and scraped_age <= s["lag_seconds"]
    by_name = {s["subscriber"]: s for s in stats["subscribers"]}
    assert (by_name["audit"]["lag"], by_name["audit"]["in_flight"]) == (5, 2)
    assert (by_name["billing"]["lag"], by_name["billing"]["dead"]) == (0, 1)
    assert by_name["audit"]["lag_seconds"] > 0

    open_, in_use, idle, most = (
        value(samples, f"pgqueue_pool_{kind}_connections")
        for kind in ("open", "in_use", "idle", "max")
    )
    assert most == 10 and open_ is not None and in_use is not None and idle is not None
    assert in_use + idle == open_ <= most and open_ >= 1


def _assert_latency_by_template(samples: Samples) -> None:
    count = value(samples, "pgqueue_http_request_duration_seconds_count", **PUBLISH_ROUTE)
    assert count == 5
    slowest = value(
        samples, "pgqueue_http_request_duration_seconds_bucket", **PUBLISH_ROUTE, le="+Inf"
    )
    assert slowest == 5
    routes = {dict(labels).get("route") for _, labels in samples if dict(labels).get("route")}
    assert "/subscribers/{subscriber_id}/claim" in routes
    assert not any("/t/" in route for route in routes if route), routes  # templates only


async def test_ephemeral_subscribers_share_one_label(fresh: RunningServer) -> None:
    """An anonymous WebSocket gets a subscriber with a random name: counting it by name would
    add series without bound."""
    async with httpx.AsyncClient(base_url=fresh.url, timeout=10) as http:
        assert (await http.post("/topics", json={"name": "t"})).status_code == 201
        await http.post("/topics/t/messages", json={"payload": "x"})
        labels = {"topic": "t", "subscriber": "(ephemeral)"}
        for _ in range(2):
            async with websockets.connect(f"{fresh.ws_url}/ws/topics/t?start=earliest") as ws:
                welcome = await frame(ws)
                assert welcome["ephemeral"] and welcome["subscriber"].startswith("ws-")
                [message] = await messages(ws, 1)
                await ws.send(json.dumps({"type": "ack", "offsets": [message["offset"]]}))
                await scrape_until(
                    http, lambda s: value(s, "pgqueue_subscriber_lag_messages", **labels) == 0
                )

        samples = await scrape(http)
        assert value(samples, "pgqueue_delivered_messages_total", **labels) == 2
        named = {(n, dict(k)["subscriber"]) for n, k in samples if "subscriber" in dict(k)}
        assert {label for _, label in named} == {"(ephemeral)"}, named


async def test_scrapes_within_the_cache_time_reuse_the_database_statistics(
    server_settings: Settings,
) -> None:
    """A dashboard and two Prometheus servers scraping together cost the database one read."""
    with serving(server_settings.model_copy(update={"metrics_cache": 3600.0})) as cached:
        async with httpx.AsyncClient(base_url=cached.url, timeout=10) as client:
            assert (await client.post("/topics", json={"name": "t"})).status_code == 201
            before = await scrape(client)
            assert (await client.post("/topics/t/messages", json={"payload": 1})).status_code
            after = await scrape(client)
    assert value(before, "pgqueue_topic_last_offset", topic="t") == 0
    assert value(after, "pgqueue_topic_last_offset", topic="t") == 0  # the cached read
    assert value(after, "pgqueue_published_messages_total", topic="t") == 1  # counted live


async def test_metrics_need_an_admin_token_when_tokens_are_on(database_dsn: str) -> None:
    """Their labels name every topic and subscriber."""
    # "?" matches the name "*" too, but not every topic: it is no admin-everywhere grant.
    tokens = {"pub-token": ["publish"], "admin-token": ["admin"], "one-char": {"?": ["admin"]}}
    settings = Settings(database_url=database_dsn, api_tokens=tokens)
    with serving(settings) as secured:
        async with httpx.AsyncClient(base_url=secured.url, timeout=10) as http:
            for token, status, error in (
                (None, 401, "unauthorized"),
                ("nope", 401, "unauthorized"),
                ("pub-token", 403, "forbidden"),
                ("one-char", 403, "forbidden"),
            ):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                refused = await http.get("/metrics", headers=headers)
                assert (refused.status_code, refused.json()["error"]) == (status, error)
            samples = await scrape(http, Authorization="Bearer admin-token")
    assert value(samples, "pgqueue_database_up") == 1


async def test_a_scrape_answers_while_the_database_is_down(
    private_postgres: PrivatePostgres, private_dsn: str
) -> None:
    """An outage is when an operator needs the metrics most: the process's own go out, and
    pgqueue_database_up says why the database's are missing."""
    settings = Settings(database_url=private_dsn, retention_interval=0, metrics_cache=0.0)
    with serving(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            assert (await http.post("/topics", json={"name": "t"})).status_code == 201
            assert (await http.post("/topics/t/messages", json={"payload": 1})).status_code
            up = await scrape(http)
            await asyncio.to_thread(private_postgres.stop)
            try:
                down = await scrape(http)
            finally:
                await asyncio.to_thread(private_postgres.start)
    assert value(up, "pgqueue_database_up") == 1
    assert value(up, "pgqueue_topic_last_offset", topic="t") == 1
    assert value(down, "pgqueue_database_up") == 0
    assert value(down, "pgqueue_published_messages_total", topic="t") == 1
    assert not [name for name, _ in down if name.startswith(("pgqueue_topic_", "pgqueue_sub"))]
