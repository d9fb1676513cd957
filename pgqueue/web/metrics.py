"""Prometheus metrics at GET /metrics (the names and labels are in docs/operations.md).

What this process did comes from the Queue's observer (messages published, delivered, acked,
nacked, dead-lettered), from an ASGI middleware (request latency per route template, open
WebSocket connections) and from the pool; what the database holds (lag, leases, dead letters,
log size) is read at scrape time by pgqueue.web.database_metrics. Each app has a registry of
its own, so several apps in one process (the tests) never share a series.

Label values stay bounded: routes are labelled by template, never by raw path, and every
ephemeral subscriber (one per anonymous WebSocket, named at random) is counted under one
label value, EPHEMERAL.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import pgqueue
from pgqueue.observer import Observer
from pgqueue.settings import Settings
from pgqueue.web.auth import require
from pgqueue.web.database_metrics import EPHEMERAL, DatabaseStats, PoolUse
from pgqueue.web.state import QueueDep

PATH = "/metrics"
# Seconds; a publish answers in about a millisecond, so the low end needs buckets too.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "(unmatched)"  # a path no route knows: one label value, whatever was asked
Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


class Counters(Observer):
    """Counts what the app's Queue does, by topic and subscriber."""

    def __init__(self, registry: CollectorRegistry) -> None:
        both = ["topic", "subscriber"]
        self._published = Counter(
            "pgqueue_published_messages",
            "Messages this process published and committed.",
            ["topic"],
            registry=registry,
        )
        self._delivered = Counter(
            "pgqueue_delivered_messages",
            "Messages this process leased to its consumers (every attempt counts).",
            both,
            registry=registry,
        )
        self._acked = Counter(
            "pgqueue_acked_messages", "Messages its consumers acked.", both, registry=registry
        )
        self._nacked = Counter(
            "pgqueue_nacked_messages",
            "Messages its consumers nacked (or that could not be framed for them).",
            both,
            registry=registry,
        )
        self._dead_lettered = Counter(
            "pgqueue_dead_lettered_messages",
            "Nacked messages that had used their last attempt and went to the dead letters.",
            both,
            registry=registry,
        )
        self._ephemeral: set[tuple[str, str]] = set()

    def published(self, topic: str, count: int) -> None:
        self._published.labels(topic).inc(count)

    def claimed(self, topic: str, subscriber: str, count: int) -> None:
        if count:
            self._delivered.labels(topic, self._label(topic, subscriber)).inc(count)

    def acked(self, topic: str, subscriber: str, count: int) -> None:
        if count:
            self._acked.labels(topic, self._label(topic, subscriber)).inc(count)

    def nacked(self, topic: str, subscriber: str, state: str) -> None:
        label = self._label(topic, subscriber)
        self._nacked.labels(topic, label).inc()
        if state == "dead":
            self._dead_lettered.labels(topic, label).inc()

    def subscribed(self, subscriber: pgqueue.Subscriber) -> None:
        if subscriber.ephemeral:
            self._ephemeral.add((subscriber.topic, subscriber.name))

    def unsubscribed(self, topic: str, name: str) -> None:
        self._ephemeral.discard((topic, name))

    def _label(self, topic: str, subscriber: str) -> str:
        return EPHEMERAL if (topic, subscriber) in self._ephemeral else subscriber


class Metrics:
    """One app's registry and everything that writes to it."""

    def __init__(self, settings: Settings, queue: Callable[[], pgqueue.Queue | None]) -> None:
        self.registry = CollectorRegistry()
        for standard in (ProcessCollector, PlatformCollector, GCCollector):
            standard(registry=self.registry)
        self.counters = Counters(self.registry)
        self.database = DatabaseStats(settings.metrics_cache)
        self.registry.register(self.database)
        self.registry.register(PoolUse(queue))
        self.latency = Histogram(
            "pgqueue_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.websockets = Gauge(
            "pgqueue_websocket_connections",
            "WebSocket connections open now (accepted and not yet ended).",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: latency of each HTTP request, and the number of open WebSockets."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before it answered

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.latency.labels(method, route_template(scope), str(status)).observe(
                time.perf_counter() - started
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = False

        async def noting_accept(message: Message) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                self.metrics.websockets.inc()
            await send(message)

        try:
            await self.app(scope, receive, noting_accept)
        finally:
            if accepted:
                self.metrics.websockets.dec()


def route_template(scope: Scope) -> str:
    """The matched route's path template with the prefix it was included under ("/v1")."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return UNMATCHED
    if ":path}" in template:  # its parameter spans segments: the prefix cannot be told apart
        return template
    # FastAPI keeps a route's own path; an include_router prefix stays in front of it in the
    # request's path, as many segments as the request has beyond the template's.
    segments = scope["path"].split("/")
    extra = len(segments) - len(template.split("/"))
    return "/".join(segments[:extra]) + template if extra > 0 else template


def install(app: FastAPI) -> None:
    """Serves /metrics on the app and starts counting what it does."""
    metrics = Metrics(app.state.settings, lambda: app.state.queue)
    app.state.metrics = metrics
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.router.lifespan_context = _observing(app.router.lifespan_context, metrics)
    app.include_router(_router())


def _observing(lifespan: Lifespan, metrics: Metrics) -> Lifespan:
    """The app's lifespan, with the Queue it opens counting for the metrics."""

    @asynccontextmanager
    async def observed(app: FastAPI) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            app.state.queue.observer = metrics.counters
            yield state

    return observed


def _router() -> APIRouter:
    router = APIRouter()

    # Admin when tokens are on: the labels name every topic and subscriber.
    @router.get(PATH, include_in_schema=False, dependencies=[Depends(require("admin"))])
    async def scrape(request: Request, queue: QueueDep) -> Response:
        metrics: Metrics = request.app.state.metrics
        await metrics.database.refresh(queue)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
