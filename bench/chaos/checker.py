"""The checker: what publishers were told, against the log and what consumers received.

Failures (the run's exit status is 1 when any is non-zero):
- lost: acknowledged but not in the log, or in the log but never delivered to a durable
  subscriber whose filter matches it (a dead letter counts as delivered, and is reported);
- reused offsets: an acknowledged offset that holds another payload in the log, or a consumer
  shown a payload at an offset that holds another one (or two payloads for one offset);
- rolled back delivered: a publish whose transaction rolled back, seen in the log or by a
  consumer;
- duplicated publishes: one payload stored at two offsets although every retry carried its
  idempotency key (promise 4);
- vanished deliveries: a consumer was shown an offset the log no longer has, i.e. a message
  whose commit was not flushed before it was shown (promise 1).
Reported without failing the run: redeliveries (at-least-once at work), dead letters,
deliveries beyond max_attempts, stalls (an acknowledged message that waited more than
STALL_SECONDS for its first delivery: a consumer stopped receiving, and only a later fault such
as a server restart, or nothing, set it going again), and what the server logged.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.model import MAX_ATTEMPTS, SUBSCRIBERS, Delivery
from bench.chaos.publishers import Acked, Ledger

EXAMPLES = 10
# Longer than any one fault keeps a healthy subscriber waiting (an outage of at most 6 s, a
# server restart, a lease of 4 s, a poll): a message waiting this long met a stuck consumer.
STALL_SECONDS = 15.0
FAILURES = ("lost", "reused_offsets", "rolled_back_delivered", "duplicated_publishes", "vanished")


@dataclass(frozen=True)
class Stored:
    pid: str | None
    headers: dict[str, str]


@dataclass
class Evidence:
    ledger: Ledger
    log: dict[str, dict[int, Stored]]  # topic -> offset -> what the log holds
    tx_offsets: dict[tuple[str, int], int | None]  # (topic, message id) -> offset
    deliveries: list[Delivery]
    dead: dict[tuple[str, str], set[int]]  # (topic, subscriber) -> dead-lettered offsets
    subscriber_stats: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    consumer_stats: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = 0.0  # time.time() when publishing and faults began
    ended_at: float = 0.0  # time.time() when the drain ended
    faults: list[dict[str, Any]] = field(default_factory=list)  # kind, at (since started_at)


@dataclass
class Tally:
    """Problems of one kind: how many, and a few examples."""

    count: int = 0
    examples: list[Any] = field(default_factory=list)

    def add(self, example: Any, n: int = 1) -> None:
        self.count += n
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "examples": self.examples}


def _where(log: dict[str, dict[int, Stored]]) -> dict[str, dict[str, list[int]]]:
    """topic -> payload id -> the offsets holding it."""
    where: dict[str, dict[str, list[int]]] = {}
    for topic, entries in log.items():
        by_pid: dict[str, list[int]] = defaultdict(list)
        for offset, stored in sorted(entries.items()):
            if stored.pid is not None:
                by_pid[stored.pid].append(offset)
        where[topic] = by_pid
    return where


def _offset(ev: Evidence, acked: Acked) -> int | None:
    """The offset a publisher was told, or found for its message id after the run."""
    if acked.offset is None and acked.message_id is not None:
        return ev.tx_offsets.get((acked.topic, acked.message_id))
    return acked.offset


def _acknowledged(ev: Evidence, where: dict[str, dict[str, list[int]]]) -> tuple[Tally, Tally]:
    """(lost, reused) among acknowledged publishes."""
    lost, reused = Tally(), Tally()
    for acked in ev.ledger.acked:
        offset = _offset(ev, acked)
        stored = ev.log[acked.topic].get(offset) if offset is not None else None
        if stored is not None and stored.pid == acked.pid:
            continue
        example = {"topic": acked.topic, "id": acked.pid, "via": acked.via, "offset": offset}
        if stored is not None:
            reused.add({**example, "log_holds": stored.pid})
        elif acked.pid in where[acked.topic]:
            # Stored, but not where the publisher was told: its offset was not kept.
            reused.add({**example, "log_offsets": where[acked.topic][acked.pid]})
        else:
            lost.add({**example, "reason": "acknowledged, not in the log"})
    return lost, reused


def _rolled_back(ev: Evidence, where: dict[str, dict[str, list[int]]]) -> Tally:
    seen = {(d.topic, d.pid) for d in ev.deliveries}
    found = Tally()
    for topic, pid in ev.ledger.rolled_back:
        in_log = pid in where[topic]
        delivered = (topic, pid) in seen
        if in_log or delivered:
            found.add({"topic": topic, "id": pid, "in_log": in_log, "delivered": delivered})
    return found


def _shown(ev: Evidence) -> tuple[Tally, Tally]:
    """(reused, vanished) among what consumers were shown."""
    shown: dict[tuple[str, int], set[str | None]] = defaultdict(set)
    for d in ev.deliveries:
        shown[(d.topic, d.offset)].add(d.pid)
    reused, vanished = Tally(), Tally()
    for (topic, offset), pids in sorted(shown.items()):
        stored = ev.log[topic].get(offset)
        if stored is None:
            vanished.add({"topic": topic, "offset": offset, "shown": sorted(map(str, pids))})
        elif pids != {stored.pid}:
            example = {"topic": topic, "offset": offset, "shown": sorted(map(str, pids))}
            reused.add({**example, "log_holds": stored.pid})
    return reused, vanished


@dataclass
class Received:
    """What one subscriber's consumers received."""

    count: Counter[int] = field(default_factory=Counter)  # offset -> deliveries
    first: dict[int, float] = field(default_factory=dict)  # offset -> time of the first
    max_attempt: int = 0

    def add(self, d: Delivery) -> None:
        self.count[d.offset] += 1
        self.first[d.offset] = min(self.first.get(d.offset, d.at), d.at)
        self.max_attempt = max(self.max_attempt, d.attempt)


def _per_subscriber(ev: Evidence) -> tuple[dict[str, dict[str, Any]], Tally, Tally]:
    """Per durable subscriber: deliveries, redeliveries, dead letters, the longest wait of an
    acknowledged message, and what never came; plus (undelivered, stalls) over all of them."""
    received: dict[tuple[str, str], Received] = defaultdict(Received)
    for d in ev.deliveries:
        received[(d.topic, d.subscriber)].add(d)
    acked_at = {(a.topic, _offset(ev, a)): a.at for a in ev.ledger.acked}
    rows: dict[str, dict[str, Any]] = {}
    undelivered, stalls = Tally(), Tally()
    for topic, entries in sorted(ev.log.items()):
        for spec in SUBSCRIBERS:
            key = (topic, spec.name)
            got = received[key]
            owed = {o for o, s in entries.items() if spec.matches(s.headers)}
            dead = ev.dead.get(key, set())
            missing = sorted(owed - set(got.count) - dead)
            name = f"{topic}/{spec.name}"
            wait = _longest_wait(ev, topic, owed - dead, got, acked_at)
            rows[name] = {
                "owed": len(owed),
                "delivered": len(set(got.count) & owed),
                "duplicates": sum(n - 1 for n in got.count.values()),
                "dead_lettered": len(dead),
                "filtered_but_delivered": len(set(got.count) - owed),
                "max_attempt": got.max_attempt,
                "max_wait_s": wait["wait_s"] if wait else None,
                "missing": len(missing),
            }
            if wait and wait["wait_s"] > STALL_SECONDS:
                stalls.add({"subscriber": name, **wait})
            if missing:
                undelivered.add({"subscriber": name, "missing": missing[:20]}, len(missing))
                rows[name]["stuck"] = _stuck_note(ev, key, missing)
    return rows, undelivered, stalls


def _longest_wait(
    ev: Evidence,
    topic: str,
    owed: set[int],
    got: Received,
    acked_at: dict[tuple[str, int | None], float],
) -> dict[str, Any] | None:
    """The acknowledged message that waited longest for its first delivery (until the end of
    the drain if it never came), with the faults that began while it waited."""
    longest: tuple[float, int] | None = None
    for offset in owed:
        published = acked_at.get((topic, offset))
        if published is None:
            continue  # unconfirmed: no time to measure from
        wait = got.first.get(offset, ev.ended_at) - published
        if longest is None or wait > longest[0]:
            longest = (wait, offset)
    if longest is None:
        return None
    wait, offset = longest
    since = acked_at[(topic, offset)] - ev.started_at
    return {
        "wait_s": round(wait, 1),
        "offset": offset,
        "acked_at_s": round(since, 1),
        "delivered": offset in got.first,
        "faults_meanwhile": [
            f"{f['kind']}@{f['at']}" for f in ev.faults if since - 1 <= f["at"] <= since + wait
        ],
    }


def _stuck_note(ev: Evidence, key: tuple[str, str], missing: list[int]) -> dict[str, Any]:
    """What a subscriber that did not get everything looked like at the end."""
    topic, subscriber = key
    suffix = f":{topic}/{subscriber}"
    consumers = {}
    for stats in ev.consumer_stats:
        if stats["name"].endswith(suffix):
            last = stats.get("last_received")
            consumers[stats["name"]] = {
                "connects": stats["connects"],
                "received": stats["received"],
                "idle_s": round(ev.ended_at - last, 1) if last else None,
                "errors": stats["errors"],
            }
    return {
        "first_missing": missing[:10],
        "database": ev.subscriber_stats.get(key),
        "consumers": consumers,
    }


def check(ev: Evidence) -> dict[str, Any]:
    where = _where(ev.log)
    lost, reused = _acknowledged(ev, where)
    shown_reused, vanished = _shown(ev)
    reused.count += shown_reused.count
    reused.examples += shown_reused.examples[: EXAMPLES - len(reused.examples)]
    subscribers, undelivered, stalls = _per_subscriber(ev)
    duplicated = Tally()
    for topic, by_pid in where.items():
        for pid, offsets in by_pid.items():
            if len(offsets) > 1:
                duplicated.add({"topic": topic, "id": pid, "offsets": offsets})
    known = {pid for _, pid in ev.ledger.rolled_back + ev.ledger.unconfirmed}
    known |= {a.pid for a in ev.ledger.acked}
    findings = {
        "lost": {
            "count": lost.count + undelivered.count,
            "acknowledged_not_in_log": lost.as_dict(),
            "undelivered": undelivered.as_dict(),
        },
        "reused_offsets": reused.as_dict(),
        "rolled_back_delivered": _rolled_back(ev, where).as_dict(),
        "duplicated_publishes": duplicated.as_dict(),
        "vanished": vanished.as_dict(),
    }
    failures = [name for name in FAILURES if findings[name]["count"]]
    unconfirmed = ev.ledger.unconfirmed
    return {
        "published": {
            "acknowledged": len(ev.ledger.acked),
            "by_way": dict(Counter(a.via for a in ev.ledger.acked)),
            "rolled_back": len(ev.ledger.rolled_back),
            "unconfirmed": len(unconfirmed),
            "unconfirmed_in_log": sum(1 for t, pid in unconfirmed if pid in where[t]),
            "retried_errors": dict(ev.ledger.errors.most_common()),
        },
        "log": {topic: len(entries) for topic, entries in sorted(ev.log.items())},
        "unknown_in_log": sum(1 for by in where.values() for pid in by if pid not in known),
        "deliveries": len(ev.deliveries),
        "over_max_attempts": sum(1 for d in ev.deliveries if d.attempt > MAX_ATTEMPTS),
        "stalls": stalls.as_dict(),
        **findings,
        "subscribers": subscribers,
        "verdict": "fail" if failures else "ok",
        "failures": failures,
    }
