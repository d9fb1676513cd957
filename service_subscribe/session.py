"""One WebSocket connection working for a subscriber.

Claiming, waking up, resets and database outages are pgqueue.delivery.Claims' (the loop
consume() uses too); the session frames what Claims hands it, keeps at most `prefetch` unacked
messages, and carries out the client's acks, nacks, seeks and publishes (a seek takes admin on
the topic, a publish the publish scope on the topic it names). The only things it
shares with other connections are the pool and the process's listener. A client that does not
take a frame within ws_send_timeout is closed and its claims go back to the group at once, so
it never holds up anyone else. A reset (from anywhere) drops what was claimed before it, sends
a `reset` frame, and delivery goes on from the new position. A message that cannot be framed
costs only itself: it is nacked with the error and an `error` frame names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

import pgqueue
from pgqueue.delivery import Claims
from pgqueue.settings import Settings
from pgqueue.web.auth import ADMIN, PUBLISH, Caller
from pgqueue.web.bodies import loads
from pgqueue.web.errors import told
from pgqueue.web.incidents import CLOSE_INTERNAL, DETAIL, incident
from pgqueue.web.rates import frame_refusal
from pgqueue.web.state import consumer_name
from service_subscribe.frames import (
    CLIENT_FRAME,
    Ack,
    ErrorFrame,
    Frame,
    MessageFrame,
    Nack,
    Publish,
    Published,
    ResetFrame,
    Seek,
)
from service_subscribe.holdings import Holdings

log = logging.getLogger(__name__)

CLOSE_TOO_BIG = 1009
CLOSE_TOO_SLOW = 1013
CLOSE_GONE = 1001


class SlowClient(Exception):
    """The client did not take a frame within ws_send_timeout."""


@dataclass
class Session:
    websocket: WebSocket
    queue: pgqueue.Queue
    settings: Settings
    topic: str
    subscriber: str
    ephemeral: bool
    auto_ack: bool
    prefetch: int
    lease: timedelta
    caller: Caller
    epoch: int = 0  # the subscriber's reset epoch when the connection opened
    holdings: Holdings = field(init=False)
    claims: Claims = field(init=False)
    # auto-ack: sent, to be acked by the next claim
    sent_unacked: list[pgqueue.Message] = field(default_factory=list)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    resets: list[ResetFrame] = field(default_factory=list)
    reset_heard: asyncio.Event = field(default_factory=asyncio.Event)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The client frame being carried out; it finishes even when the connection ends meanwhile.
    handling: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.holdings = Holdings(self.prefetch, self.lease.total_seconds())
        self.claims = Claims(
            self.queue,
            self.topic,
            self.subscriber,
            lease=self.lease,
            poll_interval=self.settings.poll_interval,
            epoch=self.epoch,
            on_reset=self._enter_epoch,
            consumer=consumer_name("websocket", self.websocket.client),
        )

    async def run(self) -> None:
        with self.claims:
            await self._run()

    async def _run(self) -> None:
        unregister = self.queue.on_reset(self._on_topic_event)
        tasks = [
            asyncio.create_task(self._deliver()),
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._announce()),
        ]
        too_slow = False
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if isinstance(error, SlowClient):
                    too_slow = True
                elif error is not None and not isinstance(error, WebSocketDisconnect):
                    await self._fail(error)
        finally:
            unregister()
            await self._stop(tasks)
        if too_slow:
            # After the give-back: closing goes through the same stalled transport.
            await self._close(CLOSE_TOO_SLOW, "too slow: frames were not taken in time")

    async def _stop(self, tasks: list[asyncio.Task[None]]) -> None:
        """Stops the session's tasks, lets the frame in hand finish, then gives back what is
        still held."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.handling is not None:
            # An ack sent just before the close counts: it lands before the give-back below
            # would release the same offsets to the group.
            [outcome] = await asyncio.gather(self.handling, return_exceptions=True)
            if isinstance(outcome, Exception):
                # Usually a reply to a client that is gone; logged in case it is not.
                log.info("frame handling ended with an error", exc_info=outcome)
        await self._give_back()

    # -- outgoing -------------------------------------------------------------------------

    async def send(self, frame: Frame) -> None:
        await self._send_text(frame.model_dump_json())

    async def _send_text(self, text: str) -> None:
        async with self.send_lock:
            try:
                await asyncio.wait_for(
                    self.websocket.send_text(text), self.settings.ws_send_timeout
                )
            except TimeoutError as error:
                raise SlowClient from error

    async def _deliver(self) -> None:
        while True:
            await self._flush_resets()
            room = self.holdings.room(settling=len(self.sent_unacked))
            if room <= 0:
                # Room opens with an ack, a nack or a reset, or when a held lease runs out.
                self.room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.room.wait(), self.holdings.until_a_lease_expires())
                continue
            batch = await self._claim(min(room, 100))
            # Ours from the claim on: given back if the connection ends before an ack (even
            # while the reset frames below are going out).
            # (Messages a reset already cleared are not: their leases are gone.)
            self.holdings.claimed([m for m in batch if self.claims.is_current(m)])
            # A reset heard while the claim ran goes out before the messages claimed after it.
            await self._flush_resets()
            for message in batch:
                if not self.claims.is_current(message):
                    break  # a reset arrived while we were sending; it cleared the rest
                await self._send_message(message)

    async def _claim(self, max_messages: int) -> list[pgqueue.Message]:
        # In auto-ack mode the batch sent last time is acked by this claim, in one commit.
        acking, self.sent_unacked = self.sent_unacked, []
        done = False

        def acked() -> None:
            nonlocal done
            done = True
            self.holdings.drop([m.offset for m in acking])

        try:
            return await self.claims.next_batch(max_messages, ack=acking, acked=acked)
        finally:
            if not done:
                self.sent_unacked = acking + self.sent_unacked

    async def _send_message(self, message: pgqueue.Message) -> None:
        try:
            text = _message_frame(message).model_dump_json()
        except Exception as error:  # its payload cannot be framed (nested too deep, say)
            # Poison isolation: this message alone is nacked, so it is retried and
            # dead-lettered by itself; the connection and the rest of the batch go on.
            self.holdings.drop([message.offset])
            await self.claims.reject(message, error)
            detail = f"{type(error).__name__}: {error}"[:500]
            await self._error("undeliverable", {"offsets": [message.offset], "message": detail})
            return
        # Marked before the send: a frame in hand when the client stalls may have reached it.
        self.holdings.sent(message.offset)
        await self._send_text(text)
        if self.auto_ack:
            self.sent_unacked.append(message)

    async def _flush_resets(self) -> None:
        # Popped before the (FIFO) send lock is awaited, so frames keep their order whichever
        # task sends them.
        while self.resets:
            await self.send(self.resets.pop(0))

    async def _announce(self) -> None:
        """Sends a reset frame as soon as the reset is heard, even while a claim is waiting."""
        while True:
            await self.reset_heard.wait()
            self.reset_heard.clear()
            await self._flush_resets()

    def _on_topic_event(self, event: dict[str, Any]) -> None:
        if event.get("topic") == self.topic and event.get("deleted"):
            asyncio.get_running_loop().create_task(
                self._close(CLOSE_GONE, f"topic {self.topic} was deleted")
            )

    def _enter_epoch(self, epoch: int, position: int | None) -> None:
        """After a reset (Claims hears of each once): forget the leases it cleared, and
        announce the new position."""
        self.holdings.reset_to(epoch)
        self.sent_unacked = [m for m in self.sent_unacked if m.epoch >= epoch]
        self.resets.append(
            ResetFrame(topic=self.topic, subscriber=self.subscriber, position=position)
        )
        self.reset_heard.set()
        self.room.set()

    # -- incoming -------------------------------------------------------------------------

    async def _receive(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            text = message.get("text")
            if text is None:
                await self._error("invalid_frame", "frames are JSON text, not binary")
                continue
            if len(text.encode()) > self.settings.ws_max_frame_bytes:
                await self._close(CLOSE_TOO_BIG, "frame too large")
                return
            try:
                # Parsed by loads(), not pydantic's parser, which reads NaN and Infinity.
                frame = CLIENT_FRAME.validate_python(loads(text))
            except ValueError as error:
                await self._error("invalid_frame", _problems(error))
                continue
            self.handling = asyncio.create_task(self._handle_reporting(frame))
            # Shielded: the session ending cancels this loop, not the frame in hand.
            await asyncio.shield(self.handling)

    async def _handle_reporting(self, frame: Ack | Nack | Seek | Publish) -> None:
        try:
            await self._handle(frame)
        except pgqueue.PgQueueError as error:
            await self._refusal(error)

    async def _handle(self, frame: Ack | Nack | Seek | Publish) -> None:
        if isinstance(frame, Ack):
            await self._ack(frame.offsets)
        elif isinstance(frame, Nack):
            await self._nack(frame)
        elif isinstance(frame, Seek):
            await self._seek(frame)
        else:
            await self._publish(frame)

    async def _ack(self, offsets: list[int]) -> None:
        known, tokens, unknown = self.holdings.tokens(offsets)
        if known:
            try:
                done = await self.queue.ack(self.topic, self.subscriber, known, tokens)
            except pgqueue.PgQueueError as error:
                # Still held, so the client can send the ack again; they stop counting
                # against prefetch when their leases run out.
                await self._refusal(error, offsets=known)
            else:
                self.holdings.drop(known)
                self.room.set()
                lost = sorted(set(known) - set(done))
                if lost:
                    await self._error("lease_lost", {"offsets": lost})
        if unknown:
            await self._error("unknown_offset", {"offsets": unknown})

    async def _nack(self, frame: Nack) -> None:
        held = self.holdings.pop(frame.offset)
        if held is None:
            await self._error("unknown_offset", {"offsets": [frame.offset]})
            return
        delay = timedelta(milliseconds=frame.delay_ms) if frame.delay_ms is not None else None
        try:
            await self.queue.nack_offset(
                self.topic,
                self.subscriber,
                frame.offset,
                held.token,
                delay=delay,
                error=frame.error,
            )
        except pgqueue.LeaseLost:
            await self._error("lease_lost", {"offsets": [frame.offset]})
        except pgqueue.PgQueueError as error:
            self.holdings.restore(frame.offset, held)  # the client may send the nack again
            await self._refusal(error, offsets=[frame.offset])
            return
        self.room.set()
        self.claims.poke()  # its retry may fall due before the delivery loop would look

    async def _seek(self, frame: Seek) -> None:
        if not self.caller.may(ADMIN, self.topic):
            await self._error("forbidden", f"seeking takes the 'admin' scope on {self.topic!r}")
            return
        if refusal := frame_refusal(self.websocket, "admin"):
            await self._error("rate_limited", refusal)
            return
        # The reset's notification comes back to every connection of the subscriber, this
        # one included, and brings the `reset` frame.
        await self.queue.reset(self.topic, subscriber=self.subscriber, to=frame.to)

    async def _publish(self, frame: Publish) -> None:
        topic = frame.topic or self.topic
        if not self.caller.may(PUBLISH, topic):
            await self._error("forbidden", f"this token lacks the 'publish' scope on {topic!r}")
            return
        if refusal := frame_refusal(self.websocket, "publish"):
            await self._error("rate_limited", {**refusal, "ref": frame.ref})
            return
        offset = await self.queue.publish(
            topic, frame.payload, headers=frame.headers, key=frame.key
        )
        await self.send(Published(topic=topic, offset=offset, ref=frame.ref))

    # -- ending ---------------------------------------------------------------------------

    async def _error(self, code: str, detail: Any) -> None:
        await self.send(ErrorFrame(code=code, detail=detail))

    async def _refusal(self, error: pgqueue.PgQueueError, offsets: list[int] | None = None) -> None:
        """An error frame for a failed frame; with offsets, naming them."""
        said = told(error, f"websocket {self.topic}/{self.subscriber}: a frame failed")
        detail = said.detail if offsets is None else {"offsets": offsets, "message": said.detail}
        await self.send(ErrorFrame(code=said.code, detail=detail, id=said.incident_id))

    async def _fail(self, error: BaseException) -> None:
        """An unexpected error: logged with an id, which the client gets before the close."""
        incident_id = incident(f"websocket session {self.topic}/{self.subscriber} failed", error)
        with contextlib.suppress(Exception):
            await self.send(ErrorFrame(code="internal", detail=DETAIL, id=incident_id))
        await self._close(CLOSE_INTERNAL, "internal error")

    async def _close(self, code: int, reason: str) -> None:
        # Bounded: a client that stopped reading may never take the close frame either; when
        # the handler returns, the server drops the connection.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.websocket.close(code=code, reason=reason), self.settings.ws_send_timeout
            )

    async def _give_back(self) -> None:
        """Releases what this connection holds, and removes an ephemeral subscriber."""
        try:
            if self.sent_unacked and not self.ephemeral:
                sent, self.sent_unacked = self.sent_unacked, []
                await self.queue.ack(self.topic, self.subscriber, sent)
                self.holdings.drop([m.offset for m in sent])
            if self.ephemeral:
                await self.queue.unsubscribe(self.topic, self.subscriber)
            else:
                # Sent: the client may have started on them, so the attempt counts (a
                # message that kills its clients still reaches the dead letters).
                offsets, tokens = self.holdings.take(sent=True)
                if offsets:
                    await self.queue.release(self.topic, self.subscriber, offsets, tokens)
                # Never sent: back to the group as if never claimed.
                offsets, tokens = self.holdings.take(sent=False)
                if offsets:
                    await self.queue.give_back(self.topic, self.subscriber, offsets, tokens)
        except pgqueue.PgQueueError as error:
            log.warning(
                "could not give back the claims of %s/%s: %s", self.topic, self.subscriber, error
            )
        self.holdings = Holdings(self.prefetch, self.lease.total_seconds())


def _problems(error: ValueError) -> Any:
    if isinstance(error, ValidationError):
        return [{"loc": list(e["loc"]), "msg": e["msg"]} for e in error.errors()]
    return [{"loc": [], "msg": f"Invalid JSON: {error}"}]


def _message_frame(message: pgqueue.Message) -> MessageFrame:
    return MessageFrame(
        topic=message.topic,
        offset=message.offset,
        key=message.key,
        headers=message.headers,
        payload=message.payload,
        published_at=message.published_at,
        attempt=message.attempt,
    )
