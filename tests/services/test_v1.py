"""The seed workflow through QPublisher/QSubscriber against a running server's /v1."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import pgqueue
from tests.services.conftest import RunningServer


def seed_workflow(url: str) -> dict[str, Any]:
    """What a queue-sample script does, unchanged but for the URL (PUBLISHER_URL style)."""
    pub = pgqueue.QPublisher(url + "/v1")
    pub.create_topic("news", "news items")
    subs = [pgqueue.QSubscriber(url + "/v1") for _ in range(3)]
    ids = [s.subscribe("news") for s in subs]
    for i in range(5):
        pub.publish_message("news", f"item {i}")

    seen: dict[int, list[str]] = {i: [] for i in ids}

    class Recorder(pgqueue.QSubscriber):
        def process_message(self, message: Any) -> None:
            seen[self._id()].append(message["message"])

    recorders = [Recorder(url, subscriber_id=i) for i in ids]
    consumed = [r.consume(num_messages=2, stop_when_empty=True) for r in recorders]

    reset = pub.reset_topic("news", 3)
    again = [r.consume(num_messages=20, stop_when_empty=True) for r in recorders]
    result = {
        "consumed": consumed,
        "seen": seen,
        "reset": reset,
        "again": again,
        "topics": pub.list_topics(),
        "messages": pub.list_messages("news"),
        "subscribers": pub.list_subscribers("news"),
        "one": recorders[0].get_message(),
    }
    subs[0].unsubscribe()
    result["after_unsubscribe"] = len(pub.list_subscribers("news"))
    pub.delete_topic("news")
    result["after_delete"] = pub.list_topics()
    for client in [pub, *subs, *recorders]:
        client.close()
    return result


async def test_seed_workflow_through_the_repl_clients(server: RunningServer) -> None:
    result = await asyncio.to_thread(seed_workflow, server.url)
    items = [f"item {i}" for i in range(5)]
    assert result["consumed"] == [5, 5, 5]
    assert result["reset"] == {"topic": "news", "offset": 3, "subscriber_count": 3}
    assert result["again"] == [3, 3, 3]
    assert all(seen == items + items[2:] for seen in result["seen"].values())
    assert [t["topic"] for t in result["topics"]] == ["news"]
    assert [m["_offset"] for m in result["messages"]] == [1, 2, 3, 4, 5]
    assert [m["message"] for m in result["messages"]] == items
    assert {s["_offset"] for s in result["subscribers"]} == {5}
    assert result["one"] == []  # nothing after the position
    assert result["after_unsubscribe"] == 2
    assert result["after_delete"] == []


async def test_v1_contract_details(server: RunningServer, http: httpx.AsyncClient) -> None:
    v1 = "/v1"
    created = await http.post(f"{v1}/topic", json={"topic": "t", "description": "d"})
    assert created.status_code == 200
    assert created.headers["content-type"] == "application/json"
    assert created.json()["topic"] == "t"
    assert (
        await http.post(f"{v1}/topic", json={"topic": "t", "description": "d"})
    ).status_code == 422
    assert (
        await http.post(f"{v1}/topic", json={"topic": "u"})
    ).status_code == 422  # no description
    assert (
        await http.post(f"{v1}/publish", json={"topic": "nope", "message": "x"})
    ).status_code == 422
    assert (await http.get(f"{v1}/subscribe", params={"topic": "nope"})).status_code == 422

    sub = (await http.get(f"{v1}/subscribe", params={"topic": "t"})).json()
    assert isinstance(sub["subscriber_id"], int)
    for i in range(3):
        assert (
            await http.post(f"{v1}/publish", json={"topic": "t", "message": f"m{i}"})
        ).status_code == 200
    one = (
        await http.get(f"{v1}/get_message", params={"subscriber_id": sub["subscriber_id"]})
    ).json()
    assert (one["_offset"], one["message"]) == (1, "m0")  # one → the object itself
    two = (
        await http.get(
            f"{v1}/get_message", params={"subscriber_id": sub["subscriber_id"], "num_messages": 2}
        )
    ).json()
    assert [m["_offset"] for m in two] == [1, 2]  # the position did not move
    assert (
        await http.get(
            f"{v1}/get_message", params={"subscriber_id": sub["subscriber_id"], "num_messages": 21}
        )
    ).status_code == 422
    acked = (
        await http.post(
            f"{v1}/ack_message", json={"subscriber_id": sub["subscriber_id"], "offset": 2}
        )
    ).json()
    assert acked["_offset"] == 2
    last = (
        await http.get(
            f"{v1}/get_message", params={"subscriber_id": sub["subscriber_id"], "num_messages": 5}
        )
    ).json()
    assert last["_offset"] == 3
    assert (
        await http.post(
            f"{v1}/ack_message", content=b"{oops", headers={"content-type": "application/json"}
        )
    ).status_code == 422
    assert (await http.post(f"{v1}/unsubscribe", json={"subscriber_id": 999999})).status_code == 422


@pytest.mark.parametrize("env", ["PGQUEUE_URL", "PUBLISHER_URL"])
def test_the_clients_find_the_server_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    monkeypatch.delenv("PGQUEUE_URL", raising=False)
    monkeypatch.delenv("PUBLISHER_URL", raising=False)
    monkeypatch.setenv(env, "http://example.invalid:9999/v1")
    assert pgqueue.QPublisher().url == "http://example.invalid:9999"


async def test_a_stale_v1_ack_does_not_undo_a_topic_reset(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    await http.post("/v1/topic", json={"topic": "t", "description": "d"})
    sid = (await http.get("/v1/subscribe", params={"topic": "t"})).json()["subscriber_id"]
    for i in range(5):
        await http.post("/v1/publish", json={"topic": "t", "message": f"m{i}"})
    read = (
        await http.get("/v1/get_message", params={"subscriber_id": sid, "num_messages": 5})
    ).json()
    epoch = read[-1]["_epoch"]
    await http.get("/v1/topic_reset", params={"topic": "t", "offset": 2})  # meanwhile

    stale = await http.post(
        "/v1/ack_message", json={"subscriber_id": sid, "offset": 5, "epoch": epoch}
    )
    assert stale.json()["_offset"] == 1  # the reset stands: 2 is next
    again = (await http.get("/v1/get_message", params={"subscriber_id": sid})).json()
    assert again["_offset"] == 2
    fresh = await http.post(
        "/v1/ack_message", json={"subscriber_id": sid, "offset": 3, "epoch": again["_epoch"]}
    )
    assert fresh.json()["_offset"] == 3
    seed_style = await http.post("/v1/ack_message", json={"subscriber_id": sid, "offset": 5})
    assert seed_style.json()["_offset"] == 5  # without an epoch: the seed's behaviour
