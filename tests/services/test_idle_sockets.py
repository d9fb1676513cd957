"""Idle WebSockets cost the database one shared check per topic and poll interval, not a
claim and a due-time check each (issue 9, finding 6: 2,000 idle sockets made ~1,850 commits
a second). Every query the library sends is a transaction of its own, so counting them at
the Queue counts the server's transactions, exactly and at once (pg_stat_database reports a
backend's counts up to 10 s late)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from typing import Any

import httpx
import pytest
import websockets

import pgqueue
from pgqueue.settings import Settings
from tests.services.conftest import serving
from tests.services.test_websocket import frame

SOCKETS = 50
POLL_INTERVAL = 0.2


class QueryCount:
    """Counts the queries every Queue sends (in any thread), by name."""

    def __init__(self) -> None:
        self.queries: Counter[str] = Counter()
        self._lock = threading.Lock()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> QueryCount:
        original = pgqueue.Queue._call

        async def _call(queue: pgqueue.Queue, method: Any, query: str, args: Any) -> Any:
            with self._lock:
                self.queries[query] += 1
            return await original(queue, method, query, args)

        monkeypatch.setattr(pgqueue.Queue, "_call", _call)
        return self

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.queries)


async def test_idle_websockets_share_one_check_per_topic_and_interval(
    database_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=database_dsn, poll_interval=POLL_INTERVAL, ws_send_timeout=2.0)
    with serving(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.post("/topics", json={"name": "orders"})).status_code == 201
        count = QueryCount().install(monkeypatch)
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(SOCKETS):
                ws = await stack.enter_async_context(
                    websockets.connect(f"{server.ws_url}/ws/topics/orders")
                )
                assert (await frame(ws))["type"] == "welcome"
            before = count.snapshot()
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.sleep(3)  # the clock is the point: 15 poll intervals of idleness
            intervals = (loop.time() - started) / POLL_INTERVAL
            queries = count.snapshot()
    window = queries - before
    # Each socket claims (and checks its due time) when it opens, and once more if the
    # listener's wake-up at connect reaches it; after that, nothing of its own. (The last
    # sockets' first claims may fall in the window: the welcome goes out before them.)
    assert queries["claim"] <= 2 * SOCKETS, queries
    assert queries["seconds_until_due"] <= 2 * SOCKETS, queries
    # Idle, the topic costs one shared check per interval (and one for a turn under way),
    # where each socket made a claim and a due-time check per interval before: 1,500 here.
    assert window["subscribers_due"] <= intervals + 2, window
    assert sum(window.values()) <= 4 * SOCKETS + intervals + 2, window
