"""QPublisher and QSubscriber: synchronous clients for a REPL or a script.

They keep the queue-sample project's method names, which speak the v1 API under /v1, and add
methods for the v2 API. Point them at a server with `url=`, PGQUEUE_URL, or (as the seed's
scripts do) PUBLISHER_URL; without these they read the server's own settings, PGQUEUE_HOST and
PGQUEUE_PORT (default http://127.0.0.1:8888). The token is `token=`, PGQUEUE_TOKEN, or one of
the server's PGQUEUE_API_TOKENS with the scopes the client needs.

Results are the server's JSON as dicts and lists that print compactly (and as tables with
rich); a server that cannot be reached raises ServerUnavailable.

    >>> from pgqueue import QPublisher, QSubscriber
    >>> pub = QPublisher()
    >>> pub.create_topic("orders", "order events")
    >>> pub.publish_message("orders", "hello")
    >>> sub = QSubscriber()
    >>> sub.subscribe("orders")
    >>> sub.consume(stop_when_empty=True)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import httpx
from pydantic import ValidationError
from rich.table import Table

from pgqueue import errors
from pgqueue.settings import Settings

_BY_CODE = {cls.code: cls for cls in errors.PgQueueError.__subclasses__()}
_ANY_ADDRESS = {"", "0.0.0.0", "::"}  # a server bound to all addresses answers on loopback


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise errors.InvalidArgument(f"PGQUEUE_ settings: {error}") from None


def server_url(url: str | None = None) -> str:
    """The server's root URL: the argument, PGQUEUE_URL, PUBLISHER_URL (without /v1), or
    where the server's settings (PGQUEUE_HOST, PGQUEUE_PORT) make it listen."""
    found = url or os.environ.get("PGQUEUE_URL") or os.environ.get("PUBLISHER_URL")
    if not found:
        settings = _settings()
        host = "127.0.0.1" if settings.host in _ANY_ADDRESS else settings.host
        found = f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"
    return found.rstrip("/").removesuffix("/v1")


def server_token(token: str | None, scopes: frozenset[str]) -> str | None:
    """The token to send: the argument, PGQUEUE_TOKEN, or a token of the server's settings
    (PGQUEUE_API_TOKENS) that has `scopes` or admin."""
    found = token or os.environ.get("PGQUEUE_TOKEN")
    if found:
        return found
    for candidate, granted in _settings().api_tokens.items():
        if candidate.startswith("sha256:"):
            continue  # only its digest is known
        # Every topic's scopes, or those of its patterns together.
        held = set(granted) if isinstance(granted, list) else set().union(*granted.values())
        if scopes <= held or "admin" in held:
            return candidate
    return None


def readable(body: Any) -> Any:
    """JSON from the server as Reply/Replies: still dicts and lists, printed compactly.
    Payloads and headers stay plain, as they were published."""
    if isinstance(body, dict):
        return Reply(
            {k: v if k in ("payload", "headers") else readable(v) for k, v in body.items()}
        )
    if isinstance(body, list):
        return Replies(readable(item) for item in body)
    return body


def _short(value: Any, width: int = 40, *, quote: bool = True) -> str:
    if isinstance(value, str):
        text = repr(value) if quote else value
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _cell(value: Any) -> Any:
    """What a rich table shows for a value: nested replies as tables, the rest as text."""
    return value if isinstance(value, Reply | Replies) else _short(value, 80, quote=False)


class Reply(dict[str, Any]):
    """A JSON object from the server: a dict whose repr is one short line."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in self.items()) + "}"

    def __rich__(self) -> Table:
        grid = Table(box=None, show_header=False)
        for key, value in self.items():
            grid.add_row(key, _cell(value))
        return grid


class Replies(list[Any]):
    """A JSON array from the server: a list shown one item per line (a table with rich)."""

    def __repr__(self) -> str:
        if not self:
            return "[]"
        return "[\n" + "".join(f"  {item!r},\n" for item in self) + "]"

    def __rich__(self) -> Table | str:
        if not all(isinstance(item, dict) for item in self):
            return repr(self)
        columns = list(dict.fromkeys(key for item in self for key in item))
        grid = Table(*columns, box=None, header_style="bold")
        for item in self:
            grid.add_row(*("" if k not in item else _cell(item[k]) for k in columns))
        return grid


class _Client:
    scopes: ClassVar[frozenset[str]] = frozenset()  # what its calls need, to pick a token

    def __init__(
        self, url: str | None = None, *, token: str | None = None, timeout: float = 10.0
    ) -> None:
        self.url = server_url(url)
        token = server_token(token, self.scopes)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._token = token
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
    ) -> Any:
        try:
            response = self._http.request(method, path, params=params, json=json_body)
        except httpx.TransportError as error:
            raise self._unavailable(error) from None
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = {"error": "http_error", "detail": response.text}
        if response.is_error:
            code = body.get("error", "http_error") if isinstance(body, dict) else "http_error"
            detail = body.get("detail", body) if isinstance(body, dict) else body
            raise _BY_CODE.get(code, errors.PgQueueError)(f"{response.status_code}: {detail}")
        return readable(body)

    def _unavailable(self, error: Exception) -> errors.ServerUnavailable:
        reason = str(error) or type(error).__name__
        return errors.ServerUnavailable(
            f"no pgqueue server answers at {self.url} ({reason}): start one with "
            "`pgqueue serve`, or point the client at it (url=, PGQUEUE_URL, PGQUEUE_PORT)"
        )


class QPublisher(_Client):
    """Publishing and administration."""

    scopes = frozenset({"publish", "admin"})

    # -- the seed's methods (v1) ----------------------------------------------------------

    def create_topic(self, topic: str, description: str = "") -> Any:
        return self._call(
            "POST", "/v1/topic", json_body={"topic": topic, "description": description or topic}
        )

    def delete_topic(self, topic: str) -> Any:
        return self._call("POST", "/v1/topic_delete", json_body={"topic": topic})

    def reset_topic(self, topic: str, offset: int = 1) -> Any:
        return self._call("GET", "/v1/topic_reset", params={"topic": topic, "offset": offset})

    def list_topics(self, topic: str | None = None) -> Any:
        return self._call("GET", "/v1/topics", params={"topic": topic} if topic else None)

    def publish_message(self, topic: str, message: str) -> Any:
        return self._call("POST", "/v1/publish", json_body={"topic": topic, "message": message})

    def list_messages(self, topic: str | None = None) -> Any:
        return self._call("GET", "/v1/topic_messages", params={"topic": topic} if topic else None)

    def list_subscribers(self, topic: str | None = None) -> Any:
        return self._call(
            "GET", "/v1/topic_subscribers", params={"topic": topic} if topic else None
        )

    # -- v2 -------------------------------------------------------------------------------

    def publish(self, topic: str, payload: Any, **options: Any) -> int:
        """Publishes any JSON value; options: headers, key, idempotency_key, delay_ms."""
        body = self._call(
            "POST", f"/topics/{topic}/messages", json_body={"payload": payload, **options}
        )
        return int(body["offset"])

    def publish_batch(self, topic: str, payloads: list[Any]) -> list[int]:
        messages = [
            p if isinstance(p, dict) and "payload" in p else {"payload": p} for p in payloads
        ]
        body = self._call(
            "POST", f"/topics/{topic}/messages/batch", json_body={"messages": messages}
        )
        return list(body["offsets"])

    def messages(self, topic: str, from_offset: int = 1, limit: int = 100) -> list[Any]:
        body = self._call(
            "GET", f"/topics/{topic}/messages", params={"from": from_offset, "limit": limit}
        )
        messages: list[Any] = body["messages"]  # Replies: a list that prints compactly
        return messages

    def create_subscriber(self, topic: str, name: str, **options: Any) -> Any:
        """options: start, filter, max_attempts, backoff {base_ms, max_ms}."""
        return self._call(
            "POST", f"/topics/{topic}/subscribers", json_body={"name": name, **options}
        )

    def reset(
        self, topic: str, to: int | str, *, subscriber: str | None = None, dry_run: bool = False
    ) -> list[Any]:
        path = (
            f"/topics/{topic}/subscribers/{subscriber}/reset"
            if subscriber
            else f"/topics/{topic}/reset"
        )
        results: list[Any] = self._call("POST", path, json_body={"to": to, "dry_run": dry_run})[
            "results"
        ]
        return results

    def stats(self) -> Any:
        return self._call("GET", "/stats")


class QSubscriber(_Client):
    """Receiving: the seed's v1 cursor (subscribe, get_message, ack_message, consume) and the
    v2 ways (HTTP pull by subscriber id, and a WebSocket stream)."""

    scopes = frozenset({"subscribe"})

    def __init__(
        self,
        url: str | None = None,
        *,
        subscriber_id: int | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(url, token=token, timeout=timeout)
        self.subscriber_id = subscriber_id
        self.topic: str | None = None

    # -- the seed's methods (v1) ----------------------------------------------------------

    def subscribe(self, topic: str) -> int:
        """Subscribes from the topic's next message on; returns the subscriber id."""
        body = self._call("GET", "/v1/subscribe", params={"topic": topic})
        self.subscriber_id, self.topic = int(body["subscriber_id"]), topic
        return self.subscriber_id

    def unsubscribe(self, subscriber_id: int | None = None) -> Any:
        return self._call(
            "POST", "/v1/unsubscribe", json_body={"subscriber_id": self._id(subscriber_id)}
        )

    def get_message(self, num_messages: int = 1) -> Any:
        """The next messages without moving the position: one → a dict, else a list."""
        return self._call(
            "GET",
            "/v1/get_message",
            params={"subscriber_id": self._id(), "num_messages": num_messages},
        )

    def ack_message(self, offset: int, epoch: int | None = None) -> Any:
        """Moves the position to offset; with epoch (a message's `_epoch`), not if the
        subscriber was reset after that message was read."""
        body: dict[str, Any] = {"subscriber_id": self._id(), "offset": offset}
        if epoch is not None:
            body["epoch"] = epoch
        return self._call("POST", "/v1/ack_message", json_body=body)

    def process_message(self, message: Mapping[str, Any]) -> None:
        """Called by consume() for each message; override it. Prints by default."""
        print(f"[{message['topic']} #{message['_offset']}] {message['message']}")

    def consume(
        self,
        num_messages: int = 10,
        *,
        poll_interval: float = 1.0,
        max_messages: int | None = None,
        stop_when_empty: bool = False,
    ) -> int:
        """get_message → process_message → ack_message, in a loop; returns how many."""
        done = 0
        while max_messages is None or done < max_messages:
            batch = self.get_message(num_messages)
            batch = [batch] if isinstance(batch, dict) else batch
            if not batch:
                if stop_when_empty:
                    break
                time.sleep(poll_interval)
                continue
            for message in batch:
                self.process_message(message)
                self.ack_message(int(message["_offset"]), message.get("_epoch"))
                done += 1
                if max_messages is not None and done >= max_messages:
                    break
        return done

    # -- v2 -------------------------------------------------------------------------------

    def claim(self, max_messages: int = 1, lease_ms: int | None = None) -> list[Any]:
        body = self._call(
            "POST",
            f"/subscribers/{self._id()}/claim",
            json_body={"max_messages": max_messages, "lease_ms": lease_ms},
        )
        messages: list[Any] = body["messages"]  # Replies: a list that prints compactly
        return messages

    def ack(self, messages: list[Mapping[str, Any]]) -> Any:
        return self._call(
            "POST",
            f"/subscribers/{self._id()}/ack",
            json_body={
                "offsets": [m["offset"] for m in messages],
                "lease_tokens": [m["lease_token"] for m in messages],
            },
        )

    def nack(
        self, message: Mapping[str, Any], delay_ms: int | None = None, error: str | None = None
    ) -> Any:
        return self._call(
            "POST",
            f"/subscribers/{self._id()}/nack",
            json_body={
                "offset": message["offset"],
                "lease_token": message["lease_token"],
                "delay_ms": delay_ms,
                "error": error,
            },
        )

    def stream(
        self,
        topic: str,
        *,
        subscriber: str | None = None,
        start: str = "latest",
        ack: str = "auto",
        prefetch: int = 10,
        timeout: float | None = None,
    ) -> Iterator[Reply]:
        """Frames from the WebSocket endpoint (welcome, message, reset, error).

        It ends when the server closes the stream, when no frame came for `timeout` seconds
        (None: wait forever), or on Ctrl-C, which closes the socket without a traceback.
        Raises ServerUnavailable when the server cannot be reached or the connection drops.
        """
        from urllib.parse import urlencode

        from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
        from websockets.sync.client import connect

        query: dict[str, Any] = {"start": start, "ack": ack, "prefetch": prefetch}
        if subscriber:
            query["subscriber"] = subscriber
        ws_url = self.url.replace("http", "ws", 1) + f"/ws/topics/{topic}?{urlencode(query)}"
        try:
            # The token in a header, not the URL: URLs end up in logs.
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
            with connect(ws_url, open_timeout=self._timeout, additional_headers=headers) as ws:
                while True:
                    try:
                        text = ws.recv(timeout=timeout)
                    except TimeoutError:
                        return
                    yield readable(json.loads(text))
        except KeyboardInterrupt:
            return  # leaving the `with` above closed the socket
        except ConnectionClosedOK:
            return
        except (OSError, TimeoutError, ConnectionClosedError) as error:
            raise self._unavailable(error) from None

    def _id(self, subscriber_id: int | None = None) -> int:
        found = subscriber_id if subscriber_id is not None else self.subscriber_id
        if found is None:
            raise errors.InvalidArgument("subscribe first, or pass subscriber_id")
        return found
