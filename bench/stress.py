"""queue_stress.sh: several topics, publishers that reset topics at random, subscribers over
the v1 API, the v2 HTTP pull API and WebSockets, then a loss checker.

Lost, per subscriber: a committed message (its publish returned an offset) at or above the
subscriber's threshold that the subscriber never received. The threshold is the later of where
the subscriber started and the topic's last reset point; messages below a reset point may be
skipped by design, and a v1 ack racing a reset may legally move the position past messages the
subscriber had already received. Duplicates and throughput are reported; the exit status is 1
when anything is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import websockets

import pgqueue

PUBLISH_SHARE = 0.7  # resets stop after this share of the run, so the end state is checkable
DRAIN_SECONDS = 120.0  # after publishing, how long subscribers may take to catch up


@dataclass(frozen=True)
class Plan:
    url: str
    topics: list[str]
    seconds: float
    out: Path
    seed: int


# -- publishers ---------------------------------------------------------------------------


def publisher(plan: Plan, number: int) -> None:
    asyncio.run(_publisher(plan, number))


async def _publisher(plan: Plan, number: int) -> None:
    rng = random.Random(plan.seed * 1000 + number)
    committed: list[tuple[str, int]] = []
    resets: list[dict[str, Any]] = []
    deadline = time.time() + plan.seconds
    reset_until = time.time() + plan.seconds * PUBLISH_SHARE
    v1 = pgqueue.QPublisher(plan.url + "/v1")
    async with httpx.AsyncClient(base_url=plan.url, timeout=30) as http:
        i = 0
        while time.time() < deadline:
            topic = rng.choice(plan.topics)
            roll = rng.random()
            if roll < 0.02 and time.time() < reset_until:
                stats = (await http.get("/stats")).json()["topics"]
                top = next(t["last_offset"] for t in stats if t["topic"] == topic)
                point = rng.randint(1, max(1, top))
                await asyncio.to_thread(v1.reset_topic, topic, point)
                resets.append({"topic": topic, "point": point, "at": time.time()})
            elif roll < 0.35:
                body = {"messages": [{"payload": f"p{number}-{i}-{j}"} for j in range(10)]}
                response = await http.post(f"/topics/{topic}/messages/batch", json=body)
                if response.status_code == 201:
                    committed += [(topic, o) for o in response.json()["offsets"]]
            elif roll < 0.7:
                response = await http.post(
                    f"/topics/{topic}/messages", json={"payload": f"p{number}-{i}"}
                )
                if response.status_code == 201:
                    committed.append((topic, response.json()["offset"]))
            else:
                reply = await asyncio.to_thread(v1.publish_message, topic, f"v1-{number}-{i}")
                committed.append((topic, int(reply["offset"])))
            i += 1
    v1.close()
    _write(plan.out / f"publisher-{number}.json", {"committed": committed, "resets": resets})


# -- subscribers --------------------------------------------------------------------------


def subscriber(plan: Plan, kind: str, number: int, topic: str, ready: Any, done: Any) -> None:
    asyncio.run(_subscriber(plan, kind, number, topic, ready, done))


class Drain:
    """Keeps a subscriber going until publishing is over and it has caught up, or until the
    drain deadline passes (the checker then reports what it missed)."""

    def __init__(self, topic: str, name: str, done: Any) -> None:
        self.topic, self.name, self.done = topic, name, done
        self.deadline: float | None = None
        self.checked = 0.0

    async def more(self, http: httpx.AsyncClient) -> bool:
        if not self.done.is_set():
            return True
        now = time.time()
        if self.deadline is None:
            self.deadline = now + DRAIN_SECONDS
        if now > self.deadline:
            return False
        if now - self.checked < 0.5:
            return True
        self.checked = now
        stats = (await http.get("/stats")).json()
        last = next(t["last_offset"] for t in stats["topics"] if t["topic"] == self.topic)
        mine = [
            s
            for s in stats["subscribers"]
            if s["topic"] == self.topic and s["subscriber"] == self.name
        ]
        return not mine or mine[0]["position"] < last or mine[0]["in_flight"] > 0


async def _subscriber(
    plan: Plan, kind: str, number: int, topic: str, ready: Any, done: Any
) -> None:
    seen: list[int] = []
    start = 0
    async with httpx.AsyncClient(base_url=plan.url, timeout=30) as http:
        if kind == "v1":
            v1 = pgqueue.QSubscriber(plan.url + "/v1")
            sub_id = await asyncio.to_thread(v1.subscribe, topic)
            rows = (await http.get("/v1/topic_subscribers", params={"topic": topic})).json()
            start = next(r["_offset"] for r in rows if r["id"] == sub_id)
            name = next(
                s["name"]
                for s in (await http.get(f"/topics/{topic}/subscribers")).json()
                if s["subscriber_id"] == sub_id
            )
            drain = Drain(topic, name, done)
            ready.wait()
            while await drain.more(http):
                batch = await asyncio.to_thread(v1.get_message, 20)
                batch = [batch] if isinstance(batch, dict) else batch
                if not batch:
                    await asyncio.sleep(0.05)
                    continue
                seen += [int(m["_offset"]) for m in batch]
                last = batch[-1]
                await asyncio.to_thread(v1.ack_message, int(last["_offset"]), last["_epoch"])
            v1.close()
        elif kind == "pull":
            name = f"pull-{number}"
            created = await http.post(
                f"/topics/{topic}/subscribers", json={"name": name, "start": "earliest"}
            )
            sub_id = created.json()["subscriber_id"]
            drain = Drain(topic, name, done)
            ready.wait()
            while await drain.more(http):
                claimed = (
                    await http.post(f"/subscribers/{sub_id}/claim", json={"max_messages": 50})
                ).json()["messages"]
                if not claimed:
                    await asyncio.sleep(0.05)
                    continue
                seen += [m["offset"] for m in claimed]
                await http.post(
                    f"/subscribers/{sub_id}/ack",
                    json={
                        "offsets": [m["offset"] for m in claimed],
                        "lease_tokens": [m["lease_token"] for m in claimed],
                    },
                )
        else:
            name = f"ws-{number}"
            ws_url = plan.url.replace("http", "ws", 1)
            url = f"{ws_url}/ws/topics/{topic}?subscriber={name}&start=earliest&prefetch=200"
            drain = Drain(topic, name, done)
            async with websockets.connect(url, max_size=None) as ws:
                json.loads(await ws.recv())  # welcome
                ready.wait()
                while await drain.more(http):
                    offsets = await _take_frames(ws)
                    seen += offsets
                    if offsets:
                        await ws.send(json.dumps({"type": "ack", "offsets": offsets}))
    _write(
        plan.out / f"subscriber-{kind}-{number}.json",
        {"kind": kind, "name": name, "topic": topic, "start": start, "seen": seen},
    )


async def _take_frames(ws: Any) -> list[int]:
    """Message offsets arriving within 0.5 s, then whatever else is already here (≤ 100)."""
    offsets: list[int] = []
    timeout = 0.5
    while len(offsets) < 100:
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        except TimeoutError:
            break
        if frame["type"] == "message":
            offsets.append(frame["offset"])
        timeout = 0.01
    return offsets


# -- checker ------------------------------------------------------------------------------


def check(out: Path, seconds: float) -> int:
    committed: dict[str, set[int]] = {}
    last_reset: dict[str, tuple[float, int]] = {}
    for path in out.glob("publisher-*.json"):
        data = json.loads(path.read_text())
        for topic, offset in data["committed"]:
            committed.setdefault(topic, set()).add(offset)
        for r in data["resets"]:
            if r["topic"] not in last_reset or r["at"] > last_reset[r["topic"]][0]:
                last_reset[r["topic"]] = (r["at"], r["point"])
    lost = duplicates = delivered = 0
    for path in sorted(out.glob("subscriber-*.json")):
        data = json.loads(path.read_text())
        topic, seen = data["topic"], Counter(data["seen"])
        threshold = max(data["start"] + 1, last_reset.get(topic, (0.0, 1))[1])
        missing = {o for o in committed.get(topic, set()) if o >= threshold} - set(seen)
        lost += len(missing)
        duplicates += sum(n - 1 for n in seen.values() if n > 1)
        delivered += sum(seen.values())
        if missing:
            print(f"{data['name']} on {topic} missed {sorted(missing)[:20]}", file=sys.stderr)
    total = sum(len(v) for v in committed.values())
    resets = sum(
        1 for p in out.glob("publisher-*.json") for _ in json.loads(p.read_text())["resets"]
    )
    print(f"committed {total} messages, {resets} resets, {delivered} deliveries")
    print(
        f"throughput {total / seconds:.0f} msg/s published, {delivered / seconds:.0f} deliveries/s"
    )
    print(f"duplicates {duplicates}")
    print(f"lost {lost}")
    return 1 if lost else 0


# -- orchestration ------------------------------------------------------------------------


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("error: the server exited during start-up")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("error: the server did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("STRESS_SECONDS", 60))
    )
    parser.add_argument("--topics", type=int, default=3)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument(
        "--subscribers-per-kind", type=int, default=1, help="per topic and per kind (v1, pull, ws)"
    )
    parser.add_argument("--seed", type=int, default=int(os.environ.get("STRESS_SEED", 1)))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pgqueue-stress-") as tmp:
        out = Path(tmp)
        env = dict(os.environ)
        port = _free_port()
        env["PGQUEUE_PORT"] = str(port)
        if not env.get("PGQUEUE_DATABASE_URL"):
            env["PGQUEUE_EMBEDDED_PGDATA"] = str(out / "pgdata")
        env["PGQUEUE_POLL_INTERVAL"] = "1"
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "pgqueue.cli", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(out / "server.log", "wb"),
        )
        try:
            _wait_healthy(url, server)
            topics = [f"stress-{os.getpid()}-{i}" for i in range(args.topics)]
            for topic in topics:
                httpx.post(f"{url}/topics", json={"name": topic}, timeout=30).raise_for_status()
            plan = Plan(url, topics, args.seconds, out, args.seed)
            ctx = multiprocessing.get_context("spawn")
            kinds = [
                (kind, n * 100 + t, topic)
                for t, topic in enumerate(topics)
                for kind in ("v1", "pull", "ws")
                for n in range(args.subscribers_per_kind)
            ]
            # Every subscriber has subscribed before the first publish.
            ready = ctx.Barrier(len(kinds) + 1)
            done = ctx.Event()
            subscribers = [
                ctx.Process(target=subscriber, args=(plan, kind, n, topic, ready, done))
                for kind, n, topic in kinds
            ]
            for p in subscribers:
                p.start()
            ready.wait(timeout=120)
            publishers = [
                ctx.Process(target=publisher, args=(plan, n)) for n in range(args.publishers)
            ]
            for p in publishers:
                p.start()
            for p in publishers:
                p.join()
            done.set()  # subscribers now drain until caught up
            for p in subscribers:
                p.join()
            if any(p.exitcode for p in publishers + subscribers):
                print("error: a publisher or subscriber process failed", file=sys.stderr)
                return 2
            return check(out, args.seconds)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    sys.exit(main())
