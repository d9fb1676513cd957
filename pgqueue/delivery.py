"""One consumer's claims on a subscriber: the loop consume() and the WebSocket session share.

Between two batches every consumer does the same things, so they live here once:

- the wake-up: a NOTIFY on the topic (through the Queue's listener), or a poke;
- the claim, and the idle wait after an empty one: until the subscriber's next retry, delayed
  message or lease expiry falls due, or until the process's shared check of the topic
  (pgqueue.watch) sees work for the subscriber, which it looks for every poll interval;
- the reset epoch: messages claimed before a reset are dropped, since the reset cleared their
  leases, and the owner hears of each reset once, from the listener or from a claim;
- a database outage: the claim is retried with back-off (a reconnecting listener wakes it
  early) and the Queue logs the outage once;
- poison isolation: a message that cannot be handed over (undecodable, unencodable) is nacked
  alone with the error, so it is retried and dead-lettered by itself while its neighbours flow.

The owner (consume(), a WebSocket session) keeps only what is its own: framing, prefetch
accounting and acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pgqueue.availability import Backoff
from pgqueue.errors import DatabaseUnavailable, LeaseLost, PgQueueError

if TYPE_CHECKING:
    from pgqueue.client import Queue
    from pgqueue.models import Message

log = logging.getLogger(__name__)

# Called with (epoch, position) once per reset of the subscriber, however it was heard.
ResetHook = Callable[[int, "int | None"], None]


class Claims:
    """Claims for one consumer of a subscriber; use as a context manager around the loop."""

    def __init__(
        self,
        queue: Queue,
        topic: str,
        subscriber: str,
        *,
        lease: timedelta | float | None = None,
        poll_interval: float | None = None,
        epoch: int | None = None,
        on_reset: ResetHook | None = None,
        consumer: str | None = None,
    ) -> None:
        """epoch: the subscriber's reset epoch the owner starts from (a WebSocket's welcome
        read it); a newer one seen later is a reset to announce. Default: the newest the
        Queue has heard of. consumer: the lease holder's name (see Queue.claim)."""
        self.queue = queue
        self.topic = topic
        self.subscriber = subscriber
        self.lease = lease
        self.consumer = consumer
        self.poll_interval = poll_interval or queue.settings.poll_interval
        self.epoch = queue.reset_epoch(topic, subscriber) if epoch is None else epoch
        self._on_reset = on_reset
        self._waiter: contextlib.AbstractContextManager[asyncio.Event] | None = None
        self._watching: contextlib.AbstractContextManager[None] | None = None
        self._wake = asyncio.Event()
        self._unregister: Callable[[], None] | None = None

    def __enter__(self) -> Claims:
        self._waiter = self.queue.listener.waiter(self.topic)
        self._wake = self._waiter.__enter__()
        self._watching = self.queue.idle_watch.watching(
            self.topic, self.subscriber, self.poll_interval, self._wake
        )
        self._watching.__enter__()
        self._unregister = self.queue.on_reset(self._heard)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._unregister is not None:
            self._unregister()
        if self._watching is not None:
            self._watching.__exit__(None, None, None)
        if self._waiter is not None:
            self._waiter.__exit__(None, None, None)  # only unregisters: nothing to suppress

    def poke(self) -> None:
        """Look again now (the owner nacked something, so work may fall due sooner)."""
        self._wake.set()

    def is_current(self, message: Message) -> bool:
        """False once a reset has cleared the message's lease (check before handing it over:
        a reset may arrive while a batch goes out)."""
        return message.epoch >= max(self.epoch, self.queue.reset_epoch(self.topic, self.subscriber))

    async def next_batch(
        self,
        max_messages: int,
        *,
        ack: Sequence[Message] = (),
        acked: Callable[[], None] | None = None,
    ) -> list[Message]:
        """Claims until something is there; returns it in offset order (never empty).

        `ack` are acked by the first claim that goes through, in its transaction (one commit
        for both), and acked() is called as soon as it has.
        """
        outage = Backoff(0.1, 5.0)
        while True:
            self._wake.clear()  # before the claim: a NOTIFY arriving during it is not lost
            try:
                messages = await self.queue.claim(
                    self.topic,
                    self.subscriber,
                    max_messages,
                    lease=self.lease,
                    ack=ack,
                    consumer=self.consumer,
                )
                if ack:
                    ack = ()
                    if acked is not None:
                        acked()
                if not messages:
                    # Until something falls due or a wake-up comes (a NOTIFY, a reset, the
                    # shared check of pgqueue.watch): an idle consumer claims nothing per poll.
                    await self._wait(
                        await self.queue.seconds_until_due(self.topic, self.subscriber)
                    )
                    continue
            except DatabaseUnavailable as error:
                # The Queue logs the outage once; this only retries. The listener wakes us
                # when it reconnects, which is usually when the database is back.
                log.debug("claim failed, retrying: %s", error)
                await self._wait(outage.next())
                continue
            outage.reset()
            if messages[0].epoch > self.epoch:  # a reset committed before its NOTIFY came
                self._enter(messages[0].epoch, messages[0].reset_position)
            current = [m for m in messages if self.is_current(m)]
            if current:
                return current
            # Claimed before a reset heard meanwhile, which cleared these leases: claim again.

    async def reject(self, message: Message, error: BaseException) -> None:
        """Poison isolation: nacks one message that cannot be handed over (see reject())."""
        await reject(self.queue, message, error)

    async def give_back(self, messages: Sequence[Message]) -> None:
        """Returns claimed messages that were never handed over; their claim does not count
        as a delivery attempt. Best effort: if it fails, their leases run out instead."""
        current = [m for m in messages if self.is_current(m)]  # a reset cleared the others
        if not current or self.queue.pool.is_closing():
            return  # (a consumer dropped after its Queue closed: the leases run out)
        try:
            await self.queue.give_back(self.topic, self.subscriber, current)
        except (PgQueueError, OSError) as error:
            log.warning(
                "could not give back %d claims of %s/%s (their leases will run out): %s",
                len(current),
                self.topic,
                self.subscriber,
                error,
            )

    def _heard(self, event: dict[str, Any]) -> None:
        if event.get("topic") != self.topic or event.get("subscriber") != self.subscriber:
            return
        epoch = event.get("epoch")
        if isinstance(epoch, int) and epoch > self.epoch:
            position = event.get("position")
            self._enter(epoch, position if isinstance(position, int) else None)

    def _enter(self, epoch: int, position: int | None) -> None:
        self.epoch = epoch
        self._wake.set()  # claim from the new position now
        if self._on_reset is not None:
            self._on_reset(epoch, position)

    async def _wait(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)


async def reject(queue: Queue, message: Message, error: BaseException) -> None:
    """Nacks a message that cannot be handed over (its payload cannot be encoded, say), with
    the error: it is retried after the subscriber's backoff and dead-lettered after its last
    attempt, on its own, while the messages claimed beside it go on. Never raises: if the nack
    fails, the lease runs out, which counts the attempt as well."""
    await reject_offset(
        queue,
        message.topic,
        message.subscriber,
        message.offset,
        message.lease_token,
        message.attempt,
        error,
    )


async def reject_offset(
    queue: Queue,
    topic: str,
    subscriber: str,
    offset: int,
    lease_token: int,
    attempt: int,
    error: BaseException,
) -> None:
    """reject() for a claimed row that did not even become a Message (undecodable)."""
    reason = f"undeliverable: {type(error).__name__}: {error}"[:2000]
    try:
        state = await queue.nack_offset(topic, subscriber, offset, lease_token, error=reason)
    except LeaseLost:
        state = "lease lost"
    except (PgQueueError, OSError) as failure:
        state = f"not nacked ({failure})"
    outcome = {"retry": "to be retried", "dead": "dead-lettered"}.get(state, state)
    log.warning(
        "%s/%s offset %d (attempt %d) cannot be delivered, %s: %s",
        topic,
        subscriber,
        offset,
        attempt,
        outcome,
        reason,
    )
