"""Every route and WebSocket frame × every scope × a topic inside or outside the token's ACL.

Allowed calls must not answer 401/403; refused ones answer 401 (no token) or 403 with a JSON
error and change nothing (a snapshot of topics, subscribers and figures, taken with a root
token, is the same before and after). The route list comes from the app itself, so a route
added without an entry here fails the test.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import websockets
from fastapi.routing import APIWebSocketRoute, iter_route_contexts

from pgqueue.settings import Settings
from pgqueue.web.combined import create_app
from tests.services.conftest import RunningServer, serving
from tests.services.test_websocket import frame

IN, OUT = "in.a", "out.b"
TOKENS: dict[str, Any] = {
    "t-publish": {"in.*": ["publish"]},
    "t-consume": {"in.*": ["consume"]},
    "t-admin": {"in.*": ["admin"]},
    "t-consume-publish": {"in.*": ["consume", "publish"]},
    "t-root": {"*": ["admin"]},
}
# The callers of the matrix, by the scope their token holds on in.*.
CALLERS = ("none", "publish", "consume", "admin")
TOKEN_OF = {
    "publish": "t-publish",
    "consume": "t-consume",
    "admin": "t-admin",
    "consume+publish": "t-consume-publish",
}
HOLDS = {
    "none": set(),
    "publish": {"publish"},
    "consume": {"consume"},
    "admin": {"admin", "publish", "consume"},
    "consume+publish": {"consume", "publish"},
}
ROOT = {"Authorization": "Bearer t-root"}

PUBLIC = "public"  # no token needed
SEE = "see"  # any scope on the topic
LISTING = "listing"  # any valid token; the answer holds only what the token may see
EVERYWHERE = "everywhere"  # admin on every topic: none of the matrix's callers holds it
DASHBOARD = "dashboard"  # the same, through the dashboard's login (a redirect or a page)


@dataclass
class Fixture:
    """What a case acts on: subscriber "s" of each topic, with at least one message."""

    ids: dict[str, int]


Build = Callable[[str, Fixture], dict[str, Any]]  # → httpx request arguments


@dataclass
class Route:
    scope: str
    build: Build = field(default=lambda t, f: {})


def _body(**fields: Any) -> Build:
    return lambda t, f: {"json": fields}


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/openapi.json"): Route(PUBLIC),
    ("GET", "/docs"): Route(PUBLIC),
    ("GET", "/docs/oauth2-redirect"): Route(PUBLIC),
    ("GET", "/redoc"): Route(PUBLIC),
    ("GET", "/healthz"): Route(PUBLIC),
    ("GET", "/readyz"): Route(PUBLIC),
    ("GET", "/topics"): Route(LISTING),
    ("POST", "/topics"): Route("admin", lambda t, f: {"json": {"name": f"{t}x"}}),
    ("GET", "/topics/{topic}"): Route(SEE),
    ("PATCH", "/topics/{topic}"): Route("admin", _body(description="changed")),
    ("DELETE", "/topics/{topic}"): Route("admin"),
    ("POST", "/topics/{topic}/messages"): Route("publish", _body(payload=1)),
    ("POST", "/topics/{topic}/messages/batch"): Route("publish", _body(messages=[{"payload": 2}])),
    ("GET", "/topics/{topic}/messages"): Route("consume"),
    ("GET", "/topics/{topic}/subscribers"): Route("consume"),
    ("POST", "/topics/{topic}/subscribers"): Route("admin", _body(name="new", start="earliest")),
    ("GET", "/topics/{topic}/subscribers/{name}"): Route("consume"),
    ("PATCH", "/topics/{topic}/subscribers/{name}"): Route("admin", _body(max_attempts=3)),
    ("DELETE", "/topics/{topic}/subscribers/{name}"): Route("admin"),
    ("POST", "/topics/{topic}/reset"): Route("admin", _body(to="latest")),
    ("POST", "/topics/{topic}/subscribers/{name}/reset"): Route("admin", _body(to="latest")),
    ("GET", "/topics/{topic}/subscribers/{name}/dead-letters"): Route("admin"),
    ("POST", "/topics/{topic}/subscribers/{name}/dead-letters/replay"): Route("admin", _body()),
    ("DELETE", "/topics/{topic}/subscribers/{name}/dead-letters"): Route("admin"),
    ("GET", "/stats"): Route(LISTING),
    ("POST", "/v1/topic"): Route(
        "admin", lambda t, f: {"json": {"topic": f"{t}x", "description": "d"}}
    ),
    ("POST", "/v1/topic_delete"): Route("admin", lambda t, f: {"json": {"topic": t}}),
    ("GET", "/v1/topics"): Route(SEE, lambda t, f: {"params": {"topic": t}}),
    ("POST", "/v1/publish"): Route("publish", lambda t, f: {"json": {"topic": t, "message": "m"}}),
    ("GET", "/v1/topic_messages"): Route("consume", lambda t, f: {"params": {"topic": t}}),
    ("GET", "/v1/topic_subscribers"): Route("consume", lambda t, f: {"params": {"topic": t}}),
    ("GET", "/v1/subscribe"): Route("admin", lambda t, f: {"params": {"topic": t}}),
    ("POST", "/v1/unsubscribe"): Route("admin", lambda t, f: {"json": {"subscriber_id": f.ids[t]}}),
    ("GET", "/v1/get_message"): Route(
        "consume", lambda t, f: {"params": {"subscriber_id": f.ids[t]}}
    ),
    ("POST", "/v1/ack_message"): Route(
        "consume", lambda t, f: {"json": {"subscriber_id": f.ids[t], "offset": 1}}
    ),
    ("GET", "/v1/topic_reset"): Route("admin", lambda t, f: {"params": {"topic": t}}),
    ("POST", "/subscribers/{subscriber_id}/claim"): Route("consume", _body(max_messages=1)),
    ("POST", "/subscribers/{subscriber_id}/ack"): Route(
        "consume", _body(offsets=[1], lease_tokens=[1])
    ),
    ("POST", "/subscribers/{subscriber_id}/nack"): Route("consume", _body(offset=1, lease_token=1)),
    # The WebSocket route's cases are WS_CONNECTS and WS_FRAMES below.
    ("WS", "/ws/topics/{topic}"): Route("consume"),
    ("GET", "/metrics"): Route(EVERYWHERE),
    ("GET", "/ui/login"): Route(PUBLIC),
    ("GET", "/ui/static/{name}"): Route(PUBLIC),
    ("GET", "/ui"): Route(DASHBOARD),
    ("GET", "/ui/topics/{topic}"): Route(DASHBOARD),
    ("GET", "/ui/topics/{topic}/tail"): Route(DASHBOARD),
    ("GET", "/ui/topics/{topic}/subscribers/{subscriber}"): Route(DASHBOARD),
    ("GET", "/ui/topics/{topic}/subscribers/{subscriber}/reset"): Route(
        DASHBOARD, lambda t, f: {"params": {"to": "earliest"}}
    ),
    ("POST", "/ui/login"): Route(DASHBOARD, lambda t, f: {"data": {"token": "t-admin"}}),
    ("POST", "/ui/logout"): Route(DASHBOARD, lambda t, f: {"data": {}}),
    ("POST", "/ui/topics/{topic}/subscribers/{subscriber}/reset"): Route(
        DASHBOARD, lambda t, f: {"data": {"to": "earliest"}}
    ),
    ("POST", "/ui/topics/{topic}/subscribers/{subscriber}/dead-letters/replay"): Route(
        DASHBOARD, lambda t, f: {"data": {}}
    ),
    ("POST", "/ui/topics/{topic}/subscribers/{subscriber}/dead-letters/purge"): Route(
        DASHBOARD, lambda t, f: {"data": {}}
    ),
}


def app_routes() -> set[tuple[str, str]]:
    found = set()
    for context in iter_route_contexts(create_app(Settings()).routes):
        if isinstance(context.original_route, APIWebSocketRoute):
            found.add(("WS", context.path))
        else:
            found.update((m, context.path) for m in context.methods or () if m != "HEAD")
    return found


def test_every_route_has_an_entry() -> None:
    assert app_routes() == set(ROUTES)


@pytest.fixture
def secured(database_dsn: str) -> Iterator[RunningServer]:
    # No rate limits: the matrix makes hundreds of admin calls a second with one token.
    settings = Settings(
        database_url=database_dsn,
        api_tokens=TOKENS,
        poll_interval=30.0,
        retention_interval=0,
        admin_rate=0,
        publish_rate=0,
    )
    with serving(settings) as running:
        yield running


def headers_of(caller: str) -> dict[str, str]:
    token = TOKEN_OF.get(caller)
    return {"Authorization": f"Bearer {token}"} if token else {}


def allowed(scope: str, caller: str, topic: str) -> bool:
    if scope == PUBLIC:
        return True
    if scope == LISTING:  # names no topic
        return caller != "none"
    if scope in (EVERYWHERE, DASHBOARD):
        return False
    if caller == "none" or topic == OUT:
        return False
    return bool(HOLDS[caller]) if scope == SEE else scope in HOLDS[caller]


def url_of(path: str, topic: str, fixture: Fixture) -> str:
    return path.format(topic=topic, name="s", subscriber="s", subscriber_id=fixture.ids[topic])


async def ensure(http: httpx.AsyncClient) -> Fixture:
    """Puts back what an allowed call removed: both topics, subscriber s, one message."""
    ids = {}
    for topic in (IN, OUT):
        if (await http.post("/topics", json={"name": topic}, headers=ROOT)).status_code == 201:
            await http.post(f"/topics/{topic}/messages", json={"payload": 0}, headers=ROOT)
        await http.post(
            f"/topics/{topic}/subscribers", json={"name": "s", "start": "earliest"}, headers=ROOT
        )
        found = await http.get(f"/topics/{topic}/subscribers/s", headers=ROOT)
        ids[topic] = found.json()["subscriber_id"]
    return Fixture(ids)


async def snapshot(http: httpx.AsyncClient, ignored: Callable[[str], bool]) -> Any:
    """Topics, durable subscribers and figures, as the root token sees them. Subscribers a
    WebSocket case made (`ignored`) and ephemeral ones are left out: a connection that ended
    may still be giving back its claims."""
    topics = (await http.get("/topics", headers=ROOT)).json()
    stats = (await http.get("/stats", headers=ROOT)).json()
    subscribers = {}
    for topic in topics:
        listed = (await http.get(f"/topics/{topic['name']}/subscribers", headers=ROOT)).json()
        subscribers[topic["name"]] = [
            s for s in listed if not s["ephemeral"] and not ignored(s["name"])
        ]
    kept = {(t, s["name"]) for t, listed in subscribers.items() for s in listed}
    return {
        "topics": topics,
        "topic_stats": [
            {k: v for k, v in t.items() if k != "subscribers"} for t in stats["topics"]
        ],
        "subscriber_stats": [
            _timeless(s) for s in stats["subscribers"] if (s["topic"], s["subscriber"]) in kept
        ],
        "subscribers": subscribers,
    }


def _timeless(stats: dict[str, Any]) -> dict[str, Any]:
    """A subscriber's figures without what moves with the clock alone: how long messages have
    waited, and whether a lease has run out yet (leased = in flight + expired)."""
    kept = {k: v for k, v in stats.items() if k not in {"lag_seconds", "in_flight", "expired"}}
    return {**kept, "leased": stats.get("in_flight", 0) + stats.get("expired", 0)}


def from_websocket_case(name: str) -> bool:
    return name[:1] in {"d", "n", "w"} and name[1:].isdigit()


def assert_refused_http(response: httpx.Response, caller: str, what: str) -> None:
    expected = 401 if caller == "none" else 403
    assert response.status_code == expected, (what, response.status_code, response.text)
    assert response.json()["error"] in {"unauthorized", "forbidden"}, what


@pytest.mark.timeout(600)
async def test_http_routes(secured: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=secured.url, timeout=30) as http:
        for (method, path), route in ROUTES.items():
            if method == "WS":
                continue
            for topic, caller in itertools.product((IN, OUT), CALLERS):
                what = f"{caller} {method} {path} on {topic}"
                fixture = await ensure(http)
                before = await snapshot(http, from_websocket_case)
                response = await http.request(
                    method,
                    url_of(path, topic, fixture),
                    headers=headers_of(caller),
                    **route.build(topic, fixture),
                )
                if allowed(route.scope, caller, topic):
                    assert response.status_code not in (401, 403), (what, response.text)
                    if route.scope == LISTING:
                        assert_listing(path, response.json(), caller)
                elif route.scope == DASHBOARD:
                    # A page: to the login without a token, refused with one that is not
                    # admin everywhere, a forged form (no CSRF token) refused either way.
                    assert response.status_code in (303, 401, 403), (what, response.text)
                    assert await snapshot(http, from_websocket_case) == before, what
                else:
                    assert_refused_http(response, caller, what)
                    assert await snapshot(http, from_websocket_case) == before, what


def assert_listing(path: str, body: Any, caller: str) -> None:
    """A listing shows what the caller may see: any scope for topics, admin for stats."""
    if path == "/topics":
        shown = {t["name"] for t in body}
        visible = bool(HOLDS[caller])
    else:
        shown = {t["topic"] for t in body["topics"]} | {s["topic"] for s in body["subscribers"]}
        visible = "admin" in HOLDS[caller]
    assert all(topic.startswith("in.") for topic in shown), (caller, shown)
    assert (IN in shown) == visible, (caller, shown)


@pytest.mark.parametrize("listing", ["/v1/topics", "/v1/topic_messages", "/v1/topic_subscribers"])
async def test_v1_listings_without_a_topic_show_only_what_the_token_may_see(
    secured: RunningServer, listing: str
) -> None:
    async with httpx.AsyncClient(base_url=secured.url, timeout=30) as http:
        await ensure(http)
        for caller in ("publish", "consume", "admin"):
            rows = (await http.get(listing, headers=headers_of(caller))).json()
            shown = {row["topic"] for row in rows}
            needs = "see" if listing == "/v1/topics" else "consume"
            visible = bool(HOLDS[caller]) if needs == "see" else "consume" in HOLDS[caller]
            assert shown == ({IN} if visible else set()), (caller, listing, shown)


# -- WebSocket ------------------------------------------------------------------------------

# How a connection names its subscriber, and the scope that takes.
WS_CONNECTS = {"ephemeral": "consume", "existing durable": "consume", "new durable": "admin"}


async def refused_handshake(url: str, headers: dict[str, str]) -> tuple[int, Any] | None:
    """(status, JSON body) of a refused handshake; None when the connection opened (then the
    first frame decides)."""
    try:
        async with websockets.connect(url, additional_headers=headers) as ws:
            first = await frame(ws)
            if first["type"] == "error" and first["code"] == "forbidden":
                return 403, first
            return None
    except websockets.InvalidStatus as refused:
        return refused.response.status_code, json.loads(refused.response.body)


@pytest.mark.timeout(300)
async def test_websocket_connections(secured: RunningServer) -> None:
    counter = itertools.count()
    async with httpx.AsyncClient(base_url=secured.url, timeout=30) as http:
        for kind, scope in WS_CONNECTS.items():
            for topic, caller in itertools.product((IN, OUT), CALLERS):
                what = f"{caller} connects to {topic} with an {kind} subscriber"
                await ensure(http)
                n = next(counter)
                url = f"{secured.ws_url}/ws/topics/{topic}"
                if kind == "existing durable":
                    created = await http.post(
                        f"/topics/{topic}/subscribers",
                        json={"name": f"d{n}", "start": "latest"},
                        headers=ROOT,
                    )
                    assert created.status_code == 201
                    url += f"?subscriber=d{n}"
                elif kind == "new durable":
                    url += f"?subscriber=n{n}&start=latest"
                before = await snapshot(http, from_websocket_case)
                refusal = await refused_handshake(url, headers_of(caller))
                if allowed(scope, caller, topic):
                    assert refusal is None, (what, refusal)
                    continue
                expected = 401 if caller == "none" else 403
                assert refusal is not None, what
                assert refusal[0] == expected, (what, refusal)
                assert refusal[1]["error" if "error" in refusal[1] else "code"] in {
                    "unauthorized",
                    "forbidden",
                }, (what, refusal)
                assert await snapshot(http, from_websocket_case) == before, what
                subscribers = (await http.get(f"/topics/{topic}/subscribers", headers=ROOT)).json()
                assert f"n{n}" not in {s["name"] for s in subscribers}, what


# Frame kind → (frame for a topic, the scope it takes on that topic). A connection on in.a
# sends them; publish names the topic it publishes to.
WS_FRAMES: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "ack": (lambda t: {"type": "ack", "offsets": [999]}, "consume"),
    "nack": (lambda t: {"type": "nack", "offset": 999}, "consume"),
    "seek": (lambda t: {"type": "seek", "to": "earliest"}, "admin"),
    "publish": (lambda t: {"type": "publish", "topic": t, "payload": "p"}, "publish"),
}


@pytest.mark.timeout(300)
async def test_websocket_frames(secured: RunningServer) -> None:
    """Callers that may connect (consume on in.a) send each frame; a publish frame also
    names a topic outside the ACL. (Callers without consume are refused at the handshake.)"""
    counter = itertools.count()
    async with httpx.AsyncClient(base_url=secured.url, timeout=30) as http:
        for kind, (make, scope) in WS_FRAMES.items():
            targets = (IN, OUT) if kind == "publish" else (IN,)
            for target, caller in itertools.product(
                targets, ("consume", "consume+publish", "admin")
            ):
                what = f"{caller} sends {kind} for {target}"
                await ensure(http)
                name = f"w{next(counter)}"
                await http.post(
                    f"/topics/{IN}/subscribers",
                    json={"name": name, "start": "latest"},
                    headers=ROOT,
                )
                url = f"{secured.ws_url}/ws/topics/{IN}?subscriber={name}"
                async with websockets.connect(url, additional_headers=headers_of(caller)) as ws:
                    assert (await frame(ws))["type"] == "welcome"
                    before = await snapshot(http, from_websocket_case)
                    await ws.send(json.dumps(make(target)))
                    reply = await frame(ws)
                    while reply["type"] == "message":  # its own publish, delivered
                        reply = await frame(ws)
                    refused = reply["type"] == "error" and reply["code"] == "forbidden"
                    if allowed(scope, caller, target):
                        assert not refused, (what, reply)
                    else:
                        assert refused, (what, reply)
                        assert await snapshot(http, from_websocket_case) == before, what
