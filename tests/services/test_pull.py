"""HTTP pull: claim, ack and nack by subscriber id, for consumers without a socket."""

from __future__ import annotations

import asyncpg
import httpx

import pgqueue
from tests.support import store_unpublishable


async def test_claim_ack_nack_over_http(http: httpx.AsyncClient) -> None:
    await http.post("/topics", json={"name": "jobs"})
    sub = (
        await http.post(
            "/topics/jobs/subscribers",
            json={
                "name": "w",
                "start": "earliest",
                "max_attempts": 2,
                "backoff": {"base_ms": 0, "max_ms": 0},
            },
        )
    ).json()
    await http.post(
        "/topics/jobs/messages/batch", json={"messages": [{"payload": "a"}, {"payload": "b"}]}
    )
    base = f"/subscribers/{sub['subscriber_id']}"

    claimed = (await http.post(f"{base}/claim", json={"max_messages": 10})).json()["messages"]
    assert [(m["offset"], m["payload"], m["attempt"]) for m in claimed] == [
        (1, "a", 1),
        (2, "b", 1),
    ]
    first, second = claimed

    acked = await http.post(
        f"{base}/ack", json={"offsets": [1], "lease_tokens": [first["lease_token"]]}
    )
    assert acked.json() == {"acked": [1], "lost": []}
    stale = await http.post(
        f"{base}/ack", json={"offsets": [1], "lease_tokens": [first["lease_token"]]}
    )
    assert stale.json() == {"acked": [], "lost": [1]}

    nacked = await http.post(
        f"{base}/nack", json={"offset": 2, "lease_token": second["lease_token"], "error": "later"}
    )
    assert nacked.json() == {"state": "retry"}
    [again] = (await http.post(f"{base}/claim", json={})).json()["messages"]
    assert (again["offset"], again["attempt"]) == (2, 2)
    dead = await http.post(f"{base}/nack", json={"offset": 2, "lease_token": again["lease_token"]})
    assert dead.json() == {"state": "dead"}
    lost = await http.post(f"{base}/nack", json={"offset": 2, "lease_token": again["lease_token"]})
    assert (lost.status_code, lost.json()["error"]) == (409, "lease_lost")

    letters = (await http.get("/topics/jobs/subscribers/w/dead-letters")).json()
    assert [d["offset"] for d in letters] == [2]
    replayed = await http.post("/topics/jobs/subscribers/w/dead-letters/replay", json={})
    assert replayed.json() == {"count": 1}
    purged = await http.delete("/topics/jobs/subscribers/w/dead-letters")
    assert purged.json() == {"count": 0}

    assert (await http.post("/subscribers/999999/claim", json={})).status_code == 404
    assert (await http.post(f"{base}/claim", json={"max_messages": 0})).status_code == 422
    assert (await http.post(f"{base}/ack", json={"offsets": [1]})).status_code == 422


async def test_a_message_that_cannot_be_encoded_costs_only_itself(
    http: httpx.AsyncClient, queue: pgqueue.Queue, conn: asyncpg.Connection
) -> None:
    """The claim has committed its leases: a message pydantic cannot serialise (nested 300
    deep) is nacked alone, and the others are answered, not a 500 for the batch."""
    await queue.create_topic("jobs")
    sub = await queue.subscribe(
        "jobs", "w", start="earliest", max_attempts=2, backoff=600, max_backoff=600
    )
    await queue.publish_many("jobs", ["a", "placeholder", "b"])
    await store_unpublishable(conn, "jobs", 2, "[" * 300 + "1" + "]" * 300)
    response = await http.post(f"/subscribers/{sub.subscriber_id}/claim", json={"max_messages": 10})
    assert response.status_code == 200, response.text
    assert [(m["offset"], m["payload"]) for m in response.json()["messages"]] == [
        (1, "a"),
        (3, "b"),
    ]
    [stats] = await queue.subscriber_stats("jobs", "w")
    assert (stats.in_flight, stats.retrying) == (2, 1)  # the poison waits for its retry
