"""Per-caller rate limits on publish and admin calls: a token bucket per caller and kind,
in each server process. Over the limit, HTTP answers 429 with Retry-After and a WebSocket
frame gets an error frame (the connection stays open)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from pgqueue.settings import Settings
from pgqueue.web.callers import caller_key

Kind = Literal["publish", "admin"]
PRUNE_FROM = 10_000  # buckets kept before full ones are forgotten


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """`rate` calls a second per key, `burst` at once; rate 0 is no limit."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._prune_at = PRUNE_FROM

    def take(self, key: str) -> float:
        """0 when the call may go ahead (and counts it), else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._prune_at:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        # A full bucket is the same as none. Callers presenting made-up tokens each leave one
        # behind; the threshold doubles with what stays, so pruning costs O(1) per call.
        self._buckets = {
            key: b
            for key, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * self.rate < self.burst
        }
        self._prune_at = max(PRUNE_FROM, 2 * len(self._buckets))


class Rates:
    def __init__(self, settings: Settings) -> None:
        self.buckets: dict[Kind, TokenBuckets] = {
            "publish": TokenBuckets(settings.publish_rate, settings.publish_burst),
            "admin": TokenBuckets(settings.admin_rate, settings.admin_burst),
        }

    def wait(self, connection: HTTPConnection, kind: Kind) -> float:
        """0 when the caller may make a `kind` call now (and counts it), else the seconds
        until it may."""
        return self.buckets[kind].take(caller_key(connection))


class RateLimited(Exception):
    def __init__(self, kind: Kind, wait: float) -> None:
        super().__init__(f"too many {kind} calls; try again in {wait:.3g} s")
        self.kind = kind
        self.wait = wait


def rate_limit(kind: Kind) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A route dependency counting one `kind` call for the caller; 429 over the limit.
    Place it after the authorization dependency: refused callers cost no bucket."""

    async def dependency(request: Request) -> None:
        wait = rates(request).wait(request, kind)
        if wait:
            raise RateLimited(kind, wait)

    return dependency


def frame_refusal(connection: HTTPConnection, kind: Kind) -> dict[str, Any] | None:
    """For a WebSocket frame: None when it may go ahead, else the error frame's detail."""
    wait = rates(connection).wait(connection, kind)
    if not wait:
        return None
    return {"message": str(RateLimited(kind, wait)), "retry_after": round(wait, 3)}


def rates(connection: HTTPConnection) -> Rates:
    found: Rates = connection.app.state.rates
    return found


def install(app: FastAPI, settings: Settings) -> None:
    app.state.rates = Rates(settings)

    @app.exception_handler(RateLimited)
    async def on_rate_limited(_request: Request, error: RateLimited) -> JSONResponse:
        return JSONResponse(
            {"error": "rate_limited", "detail": str(error)},
            status_code=429,
            headers={"Retry-After": str(max(1, math.ceil(error.wait)))},
        )
