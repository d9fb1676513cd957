"""The plan of a chaos run: topics, durable subscribers and their consumers, and the messages
and deliveries the checker reasons about."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import SecretStr

import pgqueue

Place = Literal["main", "worker"]  # the orchestrator's process, or the one the nemesis freezes
Kind = Literal["ws", "lib"]

# Short, so a consumer frozen for a few seconds loses its claims while the run goes on.
LEASE_SECONDS = 4.0
# Keys make some messages mutually exclusive per subscriber (per-key order), so the nemesis
# also meets the key-lock path; a few keys, so they collide often.
KEYS = tuple(f"k{i}" for i in range(6))
KEYED_SHARE = 0.25
EVEN = {"headers": {"parity": "even"}}
MAX_ATTEMPTS = 5  # every subscriber's; a delivery with a higher attempt breaks promise 3


@dataclass(frozen=True)
class ConsumerSpec:
    kind: Kind
    place: Place
    # WebSocket prefetch: small ones run out of room first when acks fail during an outage.
    prefetch: int = 20


@dataclass(frozen=True)
class SubscriberSpec:
    """A durable subscriber created at `earliest` on every topic before the first publish, so
    it owes a delivery of every message of the log that its filter matches."""

    name: str
    consumers: tuple[ConsumerSpec, ...]
    filter: dict[str, Any] | None = None

    def matches(self, headers: Mapping[str, str]) -> bool:
        """The filter, evaluated as the database does: containment on headers."""
        wanted: Mapping[str, str] = (self.filter or {}).get("headers", {})
        return all(headers.get(k) == v for k, v in wanted.items())


SUBSCRIBERS: tuple[SubscriberSpec, ...] = (
    SubscriberSpec(
        "pair-ws", (ConsumerSpec("ws", "main"), ConsumerSpec("ws", "worker", prefetch=2))
    ),
    SubscriberSpec("pair-lib", (ConsumerSpec("lib", "main"), ConsumerSpec("lib", "worker"))),
    SubscriberSpec("mixed", (ConsumerSpec("lib", "main"), ConsumerSpec("ws", "worker"))),
    # One consumer only: nobody covers for it if its connection stops delivering.
    SubscriberSpec("even-ws", (ConsumerSpec("ws", "main", prefetch=1),), filter=EVEN),
)


def with_application_name(dsn: str, name: str) -> str:
    """The DSN, naming its connections in pg_stat_activity (asyncpg passes unknown DSN query
    parameters on as server settings)."""
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}"


def client_settings(dsn: str, application_name: str) -> pgqueue.Settings:
    """Settings of the run's own Queues: quick to notice an outage and to come back."""
    return pgqueue.Settings(
        database_url=SecretStr(with_application_name(dsn, application_name)),
        poll_interval=1.0,
        listener_reconnect_delay=0.2,
        pool_max_size=4,
    )


def topic_names(count: int) -> list[str]:
    return [f"chaos-{i}" for i in range(count)]


def consumer_name(spec: ConsumerSpec, topic: str, subscriber: str, number: int = 0) -> str:
    return f"{spec.kind}@{spec.place}#{number}:{topic}/{subscriber}"


@dataclass(frozen=True)
class Draft:
    """A message a publisher is about to publish. Its payload id is unique in the run and is
    also its idempotency key, so a retried publish of the same draft stores nothing new."""

    pid: str
    headers: dict[str, str]
    key: str | None

    @property
    def payload(self) -> dict[str, Any]:
        return {"id": self.pid}

    def spec(self) -> dict[str, Any]:
        """As Queue.publish_many and the REST API take it."""
        spec: dict[str, Any] = {
            "payload": self.payload,
            "headers": self.headers,
            "idempotency_key": self.pid,
        }
        if self.key is not None:
            spec["key"] = self.key
        return spec


@dataclass
class Drafts:
    """Payload ids for one publisher: `<prefix>-<n>`."""

    prefix: str
    rng: random.Random
    count: int = 0

    def next(self) -> Draft:
        self.count += 1
        parity = "even" if self.rng.random() < 0.5 else "odd"
        key = self.rng.choice(KEYS) if self.rng.random() < KEYED_SHARE else None
        return Draft(f"{self.prefix}-{self.count}", {"parity": parity}, key)


def payload_id(payload: Any) -> str | None:
    return payload.get("id") if isinstance(payload, dict) else None


@dataclass(frozen=True)
class Delivery:
    """A message a consumer received (recorded before it acks)."""

    topic: str
    subscriber: str
    offset: int
    pid: str | None
    consumer: str
    attempt: int
    at: float = field(compare=False)

    def line(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    @classmethod
    def parse(cls, line: str) -> Delivery:
        return cls(**json.loads(line))
