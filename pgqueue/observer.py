"""What a Queue did, told to whoever watches it (the servers count it for Prometheus).

The Queue calls its observer once a publish, claim, ack or nack has gone through, on the event
loop and synchronously: an observer only counts, it never waits or does I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgqueue.models import Subscriber


class Observer:
    """Ignores everything. Subclass it and set `Queue.observer` to watch a Queue."""

    def published(self, topic: str, count: int) -> None:
        """`count` messages were published and committed (a deduplicated retry too)."""

    def claimed(self, topic: str, subscriber: str, count: int) -> None:
        """`count` messages were leased to a consumer: each delivery attempt counts."""

    def acked(self, topic: str, subscriber: str, count: int) -> None:
        """`count` messages were acked (acks sent with a claim count as sent)."""

    def nacked(self, topic: str, subscriber: str, state: str) -> None:
        """A message was nacked: state "retry", or "dead" when it went to the dead letters."""

    def subscribed(self, subscriber: Subscriber) -> None:
        """A subscriber was created through this Queue."""

    def unsubscribed(self, topic: str, name: str) -> None:
        """A subscriber was removed through this Queue."""
