"""Who is calling and what it may do: bearer tokens with scopes per topic pattern.

PGQUEUE_API_TOKENS maps each token, or "sha256:<hex>" of it, to its scopes: for every topic
(`["publish"]`) or per topic pattern (`{"orders.*": ["publish"], "audit": ["consume"]}`).
Patterns are shell-style (fnmatch, case-sensitive, `*` also crosses dots); the scopes of every
pattern that matches a topic add up. `publish` publishes; `consume` claims, acks and nacks for
existing subscribers and reads the topic; `admin` does everything else on the topic and holds
the other two. With no tokens configured every caller may do everything (the servers then
refuse a non-loopback address unless told --insecure).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from starlette.requests import HTTPConnection

import pgqueue
from pgqueue.settings import ScopeName, Settings

PUBLISH = "publish"
CONSUME = "consume"
ADMIN = "admin"
SEE = "see"  # not a scope one grants: any scope on a topic lets a caller see it exists
_IMPLIED = {
    PUBLISH: {PUBLISH},
    CONSUME: {CONSUME},
    "subscribe": {CONSUME},  # the old name of consume
    ADMIN: {ADMIN, PUBLISH, CONSUME},
}
SHA256_PREFIX = "sha256:"
EVERY_TOPIC = "*"


@dataclass(frozen=True)
class Grant:
    """Scopes on the topics whose names match a pattern."""

    pattern: str
    scopes: frozenset[str]

    def covers(self, topic: str) -> bool:
        return fnmatchcase(topic, self.pattern)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller; grants None means unrestricted (no tokens configured)."""

    name: str  # not secret: for log lines and per-caller limits
    grants: tuple[Grant, ...] | None

    @property
    def restricted(self) -> bool:
        return self.grants is not None

    def scopes(self, topic: str) -> frozenset[str]:
        if self.grants is None:
            return frozenset({ADMIN, PUBLISH, CONSUME})
        return frozenset().union(*(g.scopes for g in self.grants if g.covers(topic)))

    def may(self, scope: str, topic: str) -> bool:
        scopes = self.scopes(topic)
        return bool(scopes) if scope == SEE else scope in scopes

    def may_everywhere(self, scope: str) -> bool:
        """Holds `scope` on every topic, present and future: only a grant whose pattern is
        "*" itself says so (a pattern such as "?" also matches the name "*")."""
        if self.grants is None:
            return True
        return any(g.pattern == EVERY_TOPIC and scope in g.scopes for g in self.grants)

    def sees(self, topic: str) -> bool:
        return self.may(SEE, topic)

    def require(self, scope: str, topic: str) -> None:
        if not self.may(scope, topic):
            wanted = "any scope" if scope == SEE else f"the {scope!r} scope"
            raise forbidden(f"this token lacks {wanted} on topic {topic!r}")


ANYONE = Caller("anyone", None)


class Keyring:
    """The configured tokens, kept as SHA-256 digests and compared in constant time."""

    def __init__(self, settings: Settings) -> None:
        self.entries = [
            (_digest_of_key(key), Caller(f"token {number}", _grants(scopes)))
            for number, (key, scopes) in enumerate(settings.api_tokens.items(), start=1)
        ]

    @property
    def open(self) -> bool:
        return not self.entries

    def caller(self, token: str | None) -> Caller | None:
        """Who presents `token`; None when it is missing or unknown."""
        if self.open:
            return ANYONE
        if not token:
            return None
        presented = hashlib.sha256(token.encode()).digest()
        found = None
        # Every digest is compared, so the time taken does not tell which key matched.
        for digest, caller in self.entries:
            if hmac.compare_digest(digest, presented):
                found = caller
        return found


def _digest_of_key(key: str) -> bytes:
    if key.startswith(SHA256_PREFIX):
        return bytes.fromhex(key.removeprefix(SHA256_PREFIX))
    return hashlib.sha256(key.encode()).digest()


def _grants(scopes: list[ScopeName] | dict[str, list[ScopeName]]) -> tuple[Grant, ...]:
    by_pattern = scopes if isinstance(scopes, dict) else {EVERY_TOPIC: scopes}
    return tuple(
        Grant(pattern, frozenset().union(*(_IMPLIED[s] for s in names)))
        for pattern, names in by_pattern.items()
    )


def unauthorized() -> HTTPException:
    return HTTPException(
        401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(detail: str) -> HTTPException:
    return HTTPException(403, detail)


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


# A browser cannot set headers on a WebSocket: it offers ["pgqueue", "bearer.<token>"].
TOKEN_SUBPROTOCOL_PREFIX = "bearer."


def presented_token(connection: HTTPConnection) -> str | None:
    """The token a request or WebSocket presents: Authorization: Bearer, or for a WebSocket
    the bearer.<token> subprotocol."""
    if connection.scope["type"] == "websocket":
        for protocol in connection.scope.get("subprotocols") or []:
            if protocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
                return str(protocol.removeprefix(TOKEN_SUBPROTOCOL_PREFIX))
    return bearer(connection.headers.get("authorization"))


def keyring_of(connection: HTTPConnection) -> Keyring:
    keyring: Keyring = connection.app.state.keyring
    return keyring


async def current_caller(request: Request) -> Caller:
    """The caller behind the request's bearer token (401 without a valid one)."""
    caller = keyring_of(request).caller(bearer(request.headers.get("authorization")))
    if caller is None:
        raise unauthorized()
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]


async def admin_everywhere(caller: CallerDep) -> None:
    """A dependency: the caller is admin on every topic (/metrics names them all)."""
    if not caller.may_everywhere(ADMIN):
        raise forbidden("this takes the 'admin' scope on every topic (the pattern \"*\")")


def on_topic(scope: str) -> Callable[[Request, Caller], Coroutine[Any, Any, None]]:
    """A dependency: the caller holds `scope` on the route's {topic}."""

    async def dependency(request: Request, caller: CallerDep) -> None:
        caller.require(scope, request.path_params["topic"])

    return dependency


async def subscriber_for(
    queue: pgqueue.Queue, caller: Caller, subscriber_id: int, scope: str
) -> pgqueue.Subscriber:
    """The subscriber with this id, if the caller holds `scope` on its topic.

    With tokens on, an unknown id is refused like a forbidden one (403, same words), so ids
    cannot be probed for the topics behind them."""
    refusal = forbidden(f"this token may not use subscriber {subscriber_id}")
    try:
        subscriber = await queue.subscriber_by_id(subscriber_id)
    except pgqueue.SubscriberNotFound:
        if caller.restricted:
            raise refusal from None
        raise
    if not caller.may(scope, subscriber.topic):
        raise refusal
    return subscriber
