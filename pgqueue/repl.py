"""QPublisher and QSubscriber: synchronous clients for a REPL or a script.

They keep the queue-sample project's method names, which speak the v1 API under /v1, and add
methods for the v2 API. Point them at a server with `url=`, PGQUEUE_URL, or (as the seed's
scripts do) PUBLISHER_URL; the default is http://127.0.0.1:8888.

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
from typing import Any

import httpx

from pgqueue import errors

DEFAULT_URL = "http://127.0.0.1:8888"
_BY_CODE = {cls.code: cls for cls in errors.PgQueueError.__subclasses__()}


def server_url(url: str | None = None) -> str:
    """The server's root URL: the argument, PGQUEUE_URL, PUBLISHER_URL without /v1, or the
    default."""
    found = url or os.environ.get("PGQUEUE_URL") or os.environ.get("PUBLISHER_URL")
    found = (found or DEFAULT_URL).rstrip("/")
    return found.removesuffix("/v1")


class _Client:
    def __init__(
        self, url: str | None = None, *, token: str | None = None, timeout: float = 10.0
    ) -> None:
        self.url = server_url(url)
        token = token or os.environ.get("PGQUEUE_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._token = token

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
        except httpx.HTTPError as error:
            raise errors.DatabaseUnavailable(f"{self.url} did not answer: {error}") from error
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
        return body


class QPublisher(_Client):
    """Publishing and administration."""

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
        return list(body["messages"])

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
        return list(self._call("POST", path, json_body={"to": to, "dry_run": dry_run})["results"])

    def stats(self) -> Any:
        return self._call("GET", "/stats")


class QSubscriber(_Client):
    """Receiving: the seed's v1 cursor (subscribe, get_message, ack_message, consume) and the
    v2 ways (HTTP pull by subscriber id, and a WebSocket stream)."""

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
        return list(body["messages"])

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
    ) -> Iterator[dict[str, Any]]:
        """Frames from the WebSocket endpoint (welcome, message, reset, error), forever."""
        from urllib.parse import urlencode

        from websockets.sync.client import connect

        query = {"start": start, "ack": ack, "prefetch": prefetch}
        if subscriber:
            query["subscriber"] = subscriber
        ws_url = self.url.replace("http", "ws", 1) + f"/ws/topics/{topic}?{urlencode(query)}"
        # In a header, not the URL: URLs end up in logs.
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        with connect(ws_url, additional_headers=headers) as ws:
            for text in ws:
                yield json.loads(text)

    def _id(self, subscriber_id: int | None = None) -> int:
        found = subscriber_id if subscriber_id is not None else self.subscriber_id
        if found is None:
            raise errors.InvalidArgument("subscribe first, or pass subscriber_id")
        return found
