"""WebSocket delivery against a real uvicorn server with the `websockets` client."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from starlette.websockets import WebSocket

import pgqueue
from tests.services.conftest import RunningServer
from tests.support import ClaimWatch, drain, store_unpublishable, within


async def frame(ws: Any, seconds: float = 10) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await within(ws.recv(), seconds))
    return data


async def messages(ws: Any, n: int) -> list[dict[str, Any]]:
    got = []
    while len(got) < n:
        f = await frame(ws)
        assert f["type"] == "message", f
        got.append(f)
    return got


@pytest.fixture
async def orders(http: httpx.AsyncClient) -> None:
    assert (await http.post("/topics", json={"name": "orders"})).status_code == 201


async def test_rest_publish_reaches_a_websocket_client_and_manual_ack(
    server: RunningServer, http: httpx.AsyncClient, orders: None
) -> None:
    url = f"{server.ws_url}/ws/topics/orders?subscriber=billing&start=earliest"
    async with websockets.connect(url) as ws:
        welcome = await frame(ws)
        assert welcome["type"] == "welcome" and welcome["subscriber"] == "billing"
        await http.post("/topics/orders/messages", json={"payload": {"id": 1}, "key": "k"})
        [message] = await messages(ws, 1)
        assert (message["offset"], message["payload"], message["attempt"]) == (1, {"id": 1}, 1)
        await ws.send(json.dumps({"type": "ack", "offsets": [1]}))
        await _until_position(http, "billing", 1)


async def test_nack_redelivers_after_the_delay(
    server: RunningServer, http: httpx.AsyncClient, orders: None
) -> None:
    url = f"{server.ws_url}/ws/topics/orders?subscriber=billing&start=earliest"
    async with websockets.connect(url) as ws:
        await frame(ws)
        await http.post("/topics/orders/messages", json={"payload": "retry me"})
        [first] = await messages(ws, 1)
        await ws.send(json.dumps({"type": "nack", "offset": first["offset"], "delay_ms": 300}))
        [again] = await messages(ws, 1)  # the consumer polls every 30 s; the retry wakes it
        assert (again["offset"], again["attempt"]) == (first["offset"], 2)


async def test_a_closed_connection_releases_its_messages_to_another(
    server: RunningServer, http: httpx.AsyncClient, orders: None
) -> None:
    url = f"{server.ws_url}/ws/topics/orders?subscriber=billing&start=earliest&prefetch=5"
    first = await websockets.connect(url)
    await frame(first)
    await http.post(
        "/topics/orders/messages/batch", json={"messages": [{"payload": i} for i in range(3)]}
    )
    held = await messages(first, 3)
    await first.close()  # mid-flight: nothing acked

    async with websockets.connect(url) as second:
        await frame(second)
        again = await messages(second, 3)
        assert [m["offset"] for m in again] == [m["offset"] for m in held]
        assert all(m["attempt"] == 2 for m in again)


async def test_a_rest_reset_reaches_a_live_connection(
    server: RunningServer, http: httpx.AsyncClient, orders: None
) -> None:
    url = f"{server.ws_url}/ws/topics/orders?subscriber=billing&start=earliest&ack=auto"
    async with websockets.connect(url) as ws:
        await frame(ws)
        await http.post(
            "/topics/orders/messages/batch", json={"messages": [{"payload": i} for i in range(5)]}
        )
        assert [m["offset"] for m in await messages(ws, 5)] == [1, 2, 3, 4, 5]
        await _until_position(http, "billing", 5)

        response = await http.post("/topics/orders/subscribers/billing/reset", json={"to": 3})
        assert response.json()["results"][0]["new_position"] == 2
        reset = await frame(ws)
        assert (reset["type"], reset["position"]) == ("reset", 2), reset
        assert [m["offset"] for m in await messages(ws, 3)] == [3, 4, 5]


async def test_a_reset_frame_goes_out_while_a_claim_waits_and_before_its_messages(
    server: RunningServer, http: httpx.AsyncClient, orders: None, database_dsn: str
) -> None:
    """The connection's claim is stuck behind the subscriber row when the reset commits (it
    polls for the row, for up to 500 ms a time): the reset frame still goes out at once, and
    the messages claimed after it come after it."""
    url = f"{server.ws_url}/ws/topics/orders?subscriber=billing&start=earliest&ack=auto"
    resetter, blocker, watcher = [await asyncpg.connect(database_dsn) for _ in range(3)]
    try:
        async with websockets.connect(url) as ws:
            await frame(ws)
            await http.post(
                "/topics/orders/messages/batch",
                json={"messages": [{"payload": i} for i in (1, 2, 3)]},
            )
            assert [m["offset"] for m in await messages(ws, 3)] == [1, 2, 3]
            await _until_position(http, "billing", 3)

            reset_tx = resetter.transaction()
            await reset_tx.start()
            await resetter.execute("SELECT pgqueue.reset('orders', 'billing', to_offset => 2)")
            blocker_tx = blocker.transaction()
            await blocker_tx.start()
            # Queued on the subscriber row ahead of the connection's claim.
            locking = asyncio.ensure_future(
                blocker.execute(
                    "SELECT 1 FROM pgqueue.subscriber WHERE name = 'billing' FOR UPDATE"
                )
            )
            await _until_lock_waiters(watcher, 1)
            await http.post("/topics/orders/messages", json={"payload": 4})  # wakes the claim
            await _until_claim_polls(watcher)  # it polls for the row (SKIP LOCKED + pg_sleep)

            await reset_tx.commit()
            await within(locking)  # the blocker holds the row now; the claim still waits
            reset = await frame(ws)
            assert (reset["type"], reset["position"]) == ("reset", 1), reset
            await blocker_tx.commit()
            assert [m["offset"] for m in await messages(ws, 3)] == [2, 3, 4]
    finally:
        for connection in (resetter, blocker, watcher):
            await connection.close()


async def _until_lock_waiters(watcher: asyncpg.Connection, n: int) -> None:
    async def reached() -> bool:
        waiting = await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return bool(waiting == n)

    await _eventually(reached)


async def _until_claim_polls(watcher: asyncpg.Connection) -> None:
    async def polling() -> bool:
        sleeping = await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event = 'PgSleep'"
        )
        return bool(sleeping)

    await _eventually(polling)


async def test_seek_from_the_client(
    server: RunningServer, http: httpx.AsyncClient, orders: None
) -> None:
    url = f"{server.ws_url}/ws/topics/orders?subscriber=billing&start=earliest&ack=auto"
    async with websockets.connect(url) as ws:
        await frame(ws)
        await http.post(
            "/topics/orders/messages/batch", json={"messages": [{"payload": i} for i in range(4)]}
        )
        await messages(ws, 4)
        await ws.send(json.dumps({"type": "seek", "to": "earliest"}))
        assert (await frame(ws))["type"] == "reset"
        assert [m["offset"] for m in await messages(ws, 4)] == [1, 2, 3, 4]


async def test_two_subscribers_each_receive_everything(
    server: RunningServer, http: httpx.AsyncClient, orders: None
) -> None:
    base = f"{server.ws_url}/ws/topics/orders?start=earliest&ack=auto&subscriber="
    async with websockets.connect(base + "a") as a, websockets.connect(base + "b") as b:
        await frame(a)
        await frame(b)
        await http.post(
            "/topics/orders/messages/batch", json={"messages": [{"payload": i} for i in range(10)]}
        )
        assert [m["payload"] for m in await messages(a, 10)] == list(range(10))
        assert [m["payload"] for m in await messages(b, 10)] == list(range(10))


async def test_an_ephemeral_subscriber_disappears_on_disconnect(
    server: RunningServer, http: httpx.AsyncClient, orders: None
) -> None:
    async with websockets.connect(f"{server.ws_url}/ws/topics/orders") as ws:
        welcome = await frame(ws)
        assert welcome["ephemeral"] is True
        names = [s["name"] for s in (await http.get("/topics/orders/subscribers")).json()]
        assert names == [welcome["subscriber"]]
        await http.post("/topics/orders/messages", json={"payload": "live"})
        assert (await messages(ws, 1))[0]["payload"] == "live"

    async def gone() -> bool:
        return (await http.get("/topics/orders/subscribers")).json() == []

    await _eventually(gone)


async def test_a_client_that_stops_reading_does_not_hold_up_a_fast_one(
    server: RunningServer,
    http: httpx.AsyncClient,
    orders: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The slow client's transport never takes a message frame: the server's send to it
    blocks, as it does once a client stops reading and the socket buffers are full (made
    explicit here: how much fills those buffers depends on the kernel)."""
    stalled = threading.Event()
    send_text = WebSocket.send_text

    async def stalling_send_text(self: WebSocket, data: str) -> None:
        if self.query_params.get("subscriber") == "slow" and '"type":"message"' in data:
            stalled.set()
            await asyncio.Event().wait()  # never taken; the server gives up after 2 s
        await send_text(self, data)

    monkeypatch.setattr(WebSocket, "send_text", stalling_send_text)
    base = f"{server.ws_url}/ws/topics/orders?start=earliest&ack=auto&prefetch=1000&subscriber="
    slow = await websockets.connect(base + "slow")
    fast = await websockets.connect(base + "fast")
    try:
        await frame(slow)
        await frame(fast)
        await http.post(
            "/topics/orders/messages/batch", json={"messages": [{"payload": i} for i in range(50)]}
        )
        assert await asyncio.to_thread(stalled.wait, 10)
        got = await messages(fast, 50)
        assert [m["offset"] for m in got] == list(range(1, 51))
    finally:
        await fast.close()

    # After ws_send_timeout (2 s here) the server closes the slow connection and gives its
    # claims back: released claims are 'retry' rows, which auto-ack delivery never leaves.
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await within(slow.recv(), 30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013

    async def given_back() -> bool:
        stats = (await http.get("/stats")).json()["subscribers"]
        slow_stats = next(s for s in stats if s["subscriber"] == "slow")
        return slow_stats["in_flight"] == 0 and slow_stats["retrying"] == 50

    await _eventually(given_back)


async def _until_position(http: httpx.AsyncClient, name: str, position: int) -> None:
    async def reached() -> bool:
        stats = (await http.get("/stats")).json()["subscribers"]
        return any(s["subscriber"] == name and s["position"] == position for s in stats)

    await _eventually(reached)


async def _eventually(check: Any, seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in {seconds} s")
        await asyncio.sleep(0.02)


async def test_an_idle_socket_costs_nothing_and_is_woken_by_a_publish(
    server: RunningServer,
    http: httpx.AsyncClient,
    orders: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server polls every 30 s: an idle connection claims once, once more after the
    listener's wake-up at connect, and then only when a notification wakes it."""
    watch = ClaimWatch().install(monkeypatch)
    url = f"{server.ws_url}/ws/topics/orders?subscriber=billing&start=earliest"
    async with websockets.connect(url) as ws:
        await frame(ws)
        await watch.until_idle()
        await asyncio.sleep(2)  # the clock is the point: idle for 2 s
        assert watch.claims <= 2, watch.claims
        await http.post("/topics/orders/messages", json={"payload": "wake up"})
        [message] = await messages(ws, 1)
        assert message["payload"] == "wake up"


async def test_an_idle_socket_is_woken_by_a_reset(
    server: RunningServer,
    http: httpx.AsyncClient,
    orders: None,
    queue: pgqueue.Queue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish_many("orders", ["a", "b"])
    assert await drain(queue, "orders", "billing") == ["a", "b"]
    watch = ClaimWatch().install(monkeypatch)
    url = f"{server.ws_url}/ws/topics/orders?subscriber=billing"
    async with websockets.connect(url) as ws:
        assert (await frame(ws))["position"] == 2
        await watch.until_idle()
        response = await http.post("/topics/orders/subscribers/billing/reset", json={"to": 1})
        assert response.status_code == 200, response.text
        reset = await frame(ws)
        assert (reset["type"], reset["position"]) == ("reset", 0), reset
        assert [m["payload"] for m in await messages(ws, 2)] == ["a", "b"]


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_a_message_that_cannot_be_framed_costs_only_itself(
    server: RunningServer,
    http: httpx.AsyncClient,
    orders: None,
    queue: pgqueue.Queue,
    conn: asyncpg.Connection,
) -> None:
    """A payload stored and decoded fine that pydantic cannot serialise (nested 300 deep):
    that message alone is nacked (an error frame names it), it reaches the dead letters
    after exactly max_attempts, and the connection and its neighbours keep flowing."""
    await queue.subscribe("orders", "billing", start="earliest", max_attempts=3, backoff=0)
    await queue.publish_many("orders", ["before", "placeholder", "after"])
    await store_unpublishable(conn, "orders", 2, json.dumps(_nested(300)))
    url = f"{server.ws_url}/ws/topics/orders?subscriber=billing&prefetch=10"
    async with websockets.connect(url) as ws:
        await frame(ws)
        delivered, undeliverable = [], 0
        while undeliverable < 3 or len(delivered) < 2:
            f = await frame(ws)
            if f["type"] == "message":
                delivered.append(f["payload"])
                await ws.send(json.dumps({"type": "ack", "offsets": [f["offset"]]}))
            else:
                assert (f["code"], f["detail"]["offsets"]) == ("undeliverable", [2]), f
                undeliverable += 1
        assert delivered == ["before", "after"]
        [dead] = await queue.dead_letters("orders", "billing")
        assert (dead.offset, dead.attempts) == (2, 3)
        assert "undeliverable" in (dead.last_error or "")
        await http.post("/topics/orders/messages", json={"payload": "still open"})
        assert (await messages(ws, 1))[0]["payload"] == "still open"


async def test_claims_never_sent_go_back_without_an_attempt(
    server: RunningServer,
    orders: None,
    queue: pgqueue.Queue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection claims five, sends the first, and the client stalls on the second: on
    closing, the two sent (or in hand) go back as attempts, the three never sent as if never
    claimed."""
    stalled = threading.Event()
    send_text = WebSocket.send_text

    async def stalling_send_text(self: WebSocket, data: str) -> None:
        if '"type":"message"' in data and '"offset":2,' in data:
            stalled.set()
            await asyncio.Event().wait()  # never taken; the server gives up after 2 s
        await send_text(self, data)

    monkeypatch.setattr(WebSocket, "send_text", stalling_send_text)
    await queue.subscribe("orders", "billing", start="earliest")
    await queue.publish_many("orders", ["a", "b", "c", "d", "e"])
    url = f"{server.ws_url}/ws/topics/orders?subscriber=billing&prefetch=10"
    async with websockets.connect(url) as ws:
        await frame(ws)
        assert (await messages(ws, 1))[0]["offset"] == 1
        assert await asyncio.to_thread(stalled.wait, 10)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await frame(ws, 30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    again = await queue.claim("orders", "billing", 10)
    assert [(m.offset, m.attempt) for m in again] == [(1, 2), (2, 2), (3, 1), (4, 1), (5, 1)]
