"""uvicorn's httptools protocol with the limits an exposed server needs.

uvicorn bounds neither the request head (httptools buffers a header of any size, and any
number of them) nor the time a client takes to send it or its body, and its connection limit
(`limit_concurrency`) skips WebSocket upgrades. This subclass adds, per connection:

- a head limit: URL and headers together at most http_max_header_bytes, at most
  http_max_headers lines (431);
- a head deadline: http_header_timeout from the connection (or from the first byte of a later
  request) to the end of the head (408). Before the first byte of a later request uvicorn's
  keep-alive timeout applies;
- a body deadline: http_body_timeout from the end of the head to the end of the body (408, or
  a plain disconnect once the application has answered): a deadline, not an idle timeout,
  since a client sending a byte a second is never idle;
- a connection cap: beyond max_connections open connections (HTTP and WebSocket alike) a
  request or WebSocket handshake is answered 503.

Refusals are JSON like every other error, with `connection: close`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pgqueue.settings import Settings


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    max_connections: int

    @classmethod
    def of(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout,
            max_connections=settings.max_connections,
        )


class Refused(Exception):
    """Raised inside a parser callback to stop parsing and answer with an error."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


LINGER = 1.0  # seconds a refused connection is still read (and dropped) before it is closed
_PHRASES = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def protocol_for(limits: HttpLimits) -> type[GuardedHttpProtocol]:
    """The protocol class to pass to uvicorn.Config(http=...)."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})


class GuardedHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        self._in_head = False  # between the first byte of a request and the end of its head
        self._head_bytes = 0
        self._head_lines = 0
        self._unparsed_head_bytes = 0
        self._refused = False

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # From the connection on: a client that connects and sends nothing is cut off too.
        self._start_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        self._stop_body_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # a lingering close: read and dropped (see _refuse)
        self._unset_keepalive_if_required()
        in_head_before = self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, Refused):
                self._refuse(error.__context__)
                return
            self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if in_head_before and self._in_head:
            # httptools holds a header line until it is complete, so the count in on_header
            # comes too late for one huge line: this bounds what it may hold. A read in which
            # a head begins is not counted (it may end an earlier body), so the bound is the
            # limit plus one read.
            self._unparsed_head_bytes += len(data)
            if self._unparsed_head_bytes > self.limits.max_header_bytes:
                self._refuse(_head_too_large(self.limits))

    # -- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._head_lines = self._unparsed_head_bytes = 0
        self._start_head_deadline()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_lines += 1
        if self._head_lines > self.limits.max_headers:
            raise Refused(
                431,
                "too_many_headers",
                f"a request has at most {self.limits.max_headers} header lines",
            )
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_deadline()
        # self.connections holds this connection too, and every open WebSocket.
        if len(self.connections) > self.limits.max_connections:
            raise Refused(
                503,
                "too_many_connections",
                "the server has as many connections as it takes; try again later",
            )
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._body_deadline = self.loop.call_later(
                self.limits.body_timeout, self._body_too_slow
            )

    def on_message_complete(self) -> None:
        self._stop_body_deadline()
        super().on_message_complete()

    # -- limits ---------------------------------------------------------------------------

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_header_bytes:
            raise _head_too_large(self.limits)

    def _start_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(
                self.limits.header_timeout, self._head_too_slow
            )

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _stop_body_deadline(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            # The head of a pipelined request is late while an answer is still going out:
            # the connection ends after that answer.
            self.cycle.keep_alive = False
            return
        self._refuse(
            Refused(
                408,
                "request_timeout",
                f"the request head did not arrive within {self.limits.header_timeout} s",
            )
        )

    def _body_too_slow(self) -> None:
        self._body_deadline = None
        cycle = self.cycle
        answered = cycle.response_started
        # The application's receive() returns http.disconnect, and what it sends is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        if answered:
            self.transport.close()
            return
        self._refuse(
            Refused(
                408,
                "request_timeout",
                f"the request body did not arrive within {self.limits.body_timeout} s",
            )
        )

    def _refuse(self, refusal: Refused) -> None:
        self._stop_head_deadline()
        self._stop_body_deadline()
        if self._refused or self.transport.is_closing():
            return
        body = json.dumps({"error": refusal.code, "detail": refusal.detail}).encode()
        head = [
            b"HTTP/1.1 %d %s\r\n" % (refusal.status, _PHRASES[refusal.status]),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        ]
        if refusal.status == 503:
            head.append(b"retry-after: 1\r\n")
        self.transport.write(b"".join([*head, b"\r\n", body]))
        # A lingering close: closing with unread data makes the kernel send a reset, which
        # can destroy the answer before the client reads it (a client still sending a big
        # head, say). So our side ends, and what still comes is read and dropped until the
        # client closes (uvicorn closes on EOF), for LINGER seconds at most.
        self._refused = True
        self.transport.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)


def _head_too_large(limits: HttpLimits) -> Refused:
    return Refused(
        431,
        "headers_too_large",
        f"a request's URL and headers are at most {limits.max_header_bytes} bytes",
    )
