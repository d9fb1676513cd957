"""queue_stress.sh: several topics, publishers that reset topics at random, subscribers over
the v1 API, the v2 HTTP pull API and WebSockets, then a loss checker.

Lost, per subscriber: a committed message (its publish returned an offset) at or above the
subscriber's threshold that the subscriber never received. The threshold is the later of where
the subscriber started and the topic's last reset point; messages below a reset point may be
skipped by design, and a v1 ack racing a reset may legally move the position past messages the
subscriber had already received. Duplicates and throughput are reported; the exit status is 1
when anything is lost.

While it runs, a line every few seconds shows the progress (from the server's /stats). The
results are broken down by client kind, and duplicates are split into redeliveries that the
script's own resets caused and the others (see EXPLANATION).
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
PROGRESS_EVERY = 5.0  # seconds between progress lines

EXPLANATION = """\
what the numbers mean:
  committed       publishes whose call returned an offset (REST one by one, REST batches of
                  10, the v1 /publish); only these count for loss
  deliveries      messages handed to a subscriber, repeats included
  unique          distinct offsets a subscriber received
  after resets    a repeat of an offset the subscriber had already received, after this
                  script reset the topic to a point at or below it: a reset rewinds the
                  subscribers, so these repeats are the reset working, not a fault
  other repeats   a repeat with no reset in between: at-least-once redelivery (a lease ran
                  out, an ack lost a race with a reset, a v1 read came again before its ack)
  lost            committed messages at or above the subscriber's start and the topic's last
                  reset point that it never received: must be 0"""


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
    committed: list[tuple[str, int, str]] = []  # topic, offset, how it was published
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
                    committed += [(topic, o, "rest batch") for o in response.json()["offsets"]]
            elif roll < 0.7:
                response = await http.post(
                    f"/topics/{topic}/messages", json={"payload": f"p{number}-{i}"}
                )
                if response.status_code == 201:
                    committed.append((topic, response.json()["offset"], "rest"))
            else:
                reply = await asyncio.to_thread(v1.publish_message, topic, f"v1-{number}-{i}")
                committed.append((topic, int(reply["offset"]), "v1"))
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
    seen: list[tuple[int, float]] = []  # offset, when it arrived
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
                seen += [(int(m["_offset"]), time.time()) for m in batch]
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
                seen += [(m["offset"], time.time()) for m in claimed]
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
                    seen += [(o, time.time()) for o in offsets]
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


@dataclass
class Tally:
    """One client kind's figures."""

    clients: int = 0
    deliveries: int = 0
    unique: int = 0
    after_resets: int = 0
    other_repeats: int = 0
    lost: int = 0


def _repeats(seen: list[tuple[int, float]], resets: list[tuple[float, int]]) -> tuple[int, int]:
    """Repeats a reset explains (one at or below the offset came between the two
    deliveries), and the others."""
    last_seen: dict[int, float] = {}
    after_resets = other = 0
    for offset, at in seen:
        before = last_seen.get(offset)
        last_seen[offset] = at
        if before is None:
            continue
        if any(before <= when <= at and point <= offset for when, point in resets):
            after_resets += 1
        else:
            other += 1
    return after_resets, other


def check(out: Path, seconds: float) -> int:
    committed: dict[str, set[int]] = {}
    published: Counter[str] = Counter()
    resets: dict[str, list[tuple[float, int]]] = {}
    for path in out.glob("publisher-*.json"):
        data = json.loads(path.read_text())
        for topic, offset, kind in data["committed"]:
            committed.setdefault(topic, set()).add(offset)
            published[kind] += 1
        for r in data["resets"]:
            resets.setdefault(r["topic"], []).append((r["at"], r["point"]))
    kinds: dict[str, Tally] = {}
    for path in sorted(out.glob("subscriber-*.json")):
        data = json.loads(path.read_text())
        topic, seen = data["topic"], [(o, at) for o, at in data["seen"]]
        tally = kinds.setdefault(data["kind"], Tally())
        last_point = max(resets.get(topic, [(0.0, 1)]))[1]
        threshold = max(data["start"] + 1, last_point)
        received = {o for o, _ in seen}
        missing = {o for o in committed.get(topic, set()) if o >= threshold} - received
        after_resets, other = _repeats(seen, resets.get(topic, []))
        tally.clients += 1
        tally.deliveries += len(seen)
        tally.unique += len(received)
        tally.after_resets += after_resets
        tally.other_repeats += other
        tally.lost += len(missing)
        if missing:
            print(f"{data['name']} on {topic} missed {sorted(missing)[:20]}", file=sys.stderr)
    _report(published, sum(len(r) for r in resets.values()), kinds, seconds)
    return 1 if any(t.lost for t in kinds.values()) else 0


def _report(published: Counter[str], resets: int, kinds: dict[str, Tally], seconds: float) -> None:
    total = sum(published.values())
    delivered = sum(t.deliveries for t in kinds.values())
    print(f"committed {total} messages, {resets} resets, {delivered} deliveries")
    print(
        f"throughput {total / seconds:.0f} msg/s published, {delivered / seconds:.0f} deliveries/s"
    )
    print()
    print("publishers (committed messages): " + ", ".join(f"{k} {n}" for k, n in published.items()))
    names = {"v1": "v1 subscriber", "pull": "pull subscriber", "ws": "websocket subscriber"}
    print(
        f"{'subscribers':<22}{'clients':>8}{'deliveries':>12}{'unique':>10}"
        f"{'after resets':>14}{'other repeats':>15}{'lost':>6}"
    )
    for kind, t in kinds.items():
        print(
            f"{names.get(kind, kind):<22}{t.clients:>8}{t.deliveries:>12}{t.unique:>10}"
            f"{t.after_resets:>14}{t.other_repeats:>15}{t.lost:>6}"
        )
    print()
    print(EXPLANATION)
    print()
    after = sum(t.after_resets for t in kinds.values())
    other = sum(t.other_repeats for t in kinds.values())
    print(f"duplicates {after + other} ({after} after resets, {other} other)")
    print(f"lost {sum(t.lost for t in kinds.values())}")


def _progress(url: str, started: float, phase: str) -> None:
    """One line of what the server has: messages published, and how far behind the
    subscribers are."""
    try:
        stats = httpx.get(f"{url}/stats", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return  # a busy server: the next line will do
    published = sum(t["last_offset"] for t in stats["topics"])
    lag = sum(s["lag"] for s in stats["subscribers"])
    print(
        f"[{time.time() - started:4.0f} s] {phase}: {published} published, "
        f"subscribers {lag} behind",
        flush=True,
    )


def _wait(processes: list[Any], url: str, started: float, phase: str) -> None:
    for p in processes:
        while p.is_alive():
            p.join(PROGRESS_EVERY)
            if p.is_alive():
                _progress(url, started, phase)


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
            started = time.time()
            print(
                f"stress: {args.seconds:.0f} s, {len(topics)} topics, {args.publishers} "
                f"publishers, {len(subscribers)} subscribers (v1, pull, websocket)",
                flush=True,
            )
            for p in publishers:
                p.start()
            _wait(publishers, url, started, f"publishing (for {args.seconds:.0f} s)")
            done.set()  # subscribers now drain until caught up
            _wait(subscribers, url, started, "draining")
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
