"""Queue: a pool plus one listener connection, with a method per stored function."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import asyncpg

from pgqueue import consumer, delivery, schema
from pgqueue.availability import Outage, keep_trying
from pgqueue.batcher import Batcher
from pgqueue.codec import encode, join_array
from pgqueue.errors import (
    DatabaseUnavailable,
    InvalidArgument,
    InvalidFilter,
    LeaseLost,
    LimitReached,
    PgQueueError,
    SchemaMismatch,
    SubscriberExists,
    TopicExists,
    translated,
)
from pgqueue.limits import MAX_DEPTH, FieldLimits, depth_over
from pgqueue.listener import Listener, ResetHandler
from pgqueue.models import (
    DeadLetter,
    Lease,
    Message,
    ResetResult,
    RetentionResult,
    StoredMessage,
    Subscriber,
    SubscriberStats,
    Topic,
    TopicStats,
)
from pgqueue.observer import Observer
from pgqueue.publish import batch_args, batch_params, message_args, seconds
from pgqueue.queries import QUERIES
from pgqueue.settings import Settings
from pgqueue.targets import parse_target
from pgqueue.watch import IdleWatch

Acked = Message | int
POOL_NAME = "pgqueue-pool"  # application_name in pg_stat_activity
LISTENER_NAME = "pgqueue-listener"
# Who holds a lease when the claimer gives no name: enough to find the process.
DEFAULT_CONSUMER = f"{socket.gethostname()}:{os.getpid()}"


class Queue:
    """The library's entry point. Open it with `pgqueue.connect(dsn)`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        listener: Listener,
        settings: Settings,
        *,
        owns_pool: bool,
    ) -> None:
        self.pool = pool
        self.listener = listener
        self.settings = settings
        self.limits = FieldLimits.of(settings)
        self._owns_pool = owns_pool
        self._reset_epochs: dict[tuple[str, str], int] = {}
        self.outage = Outage()
        listener.on_reset(self._note_reset, listen=False)
        self._batcher = Batcher(self._send_batch)
        self.idle_watch = IdleWatch(self)
        self.observer = Observer()  # the servers set theirs, which counts for /metrics

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        dsn: str | None = None,
        *,
        settings: Settings | None = None,
        pool: asyncpg.Pool | None = None,
    ) -> Queue:
        settings = settings or Settings()
        dsn = dsn or settings.dsn()
        if dsn is None:
            # Also with a pool of the caller's: LISTEN needs a connection of its own.
            raise InvalidArgument(
                "no database: pass a DSN, set PGQUEUE_DATABASE_URL, or run `pgqueue serve` "
                "in this directory for an embedded one"
            )
        owns_pool = pool is None
        if pool is None:
            pool = await keep_trying(
                lambda: asyncpg.create_pool(
                    dsn,
                    min_size=settings.pool_min_size,
                    max_size=settings.pool_max_size,
                    reset=_keep_session,
                    server_settings=_named(dsn, POOL_NAME),
                ),
                give_up_after=settings.connect_timeout,
            )
        await _check_schema(pool)
        # Listens from the first consumer on (see pgqueue.listener). Always named: an operator
        # looking at pg_stat_activity tells the LISTEN connection from the pool's.
        listener = Listener(
            lambda: asyncpg.connect(dsn, server_settings={"application_name": LISTENER_NAME}),
            reconnect_delay=settings.listener_reconnect_delay,
            owner=secrets.randbits(31),
        )
        return cls(pool, listener, settings, owns_pool=owns_pool)

    async def close(self) -> None:
        await self.idle_watch.close()
        await self.listener.close()
        if self._owns_pool:
            await self.pool.close()

    # -- topics ---------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        *,
        description: str = "",
        retention_max_age: timedelta | None = None,
        retention_max_count: int | None = None,
        max_payload_bytes: int | None = None,
        dedup_window: timedelta | None = None,
        segment_size: int | None = None,
        exist_ok: bool = False,
    ) -> Topic:
        """segment_size: offsets per log partition, the unit retention removes (default
        1,000,000; fixed for the topic's life). With exist_ok, an existing topic of that
        name is returned as it is (its settings unchanged) instead of raising TopicExists.

        Raises LimitReached when the database holds settings.max_topics topics already."""
        self.limits.check_text("description", description)
        try:
            row = await self._fetchrow(
                "create_topic",
                name,
                description,
                retention_max_age,
                retention_max_count,
                max_payload_bytes or self.settings.max_payload_bytes,
                dedup_window or timedelta(days=1),
                segment_size,
                self.settings.max_topics or None,
            )
        except (TopicExists, LimitReached):
            existing = await self.list_topics(name) if exist_ok else []
            if not existing:  # not asked for, or deleted again in between
                raise
            return existing[0]
        return Topic.from_row(row)

    async def alter_topic(
        self,
        name: str,
        *,
        description: str | None = None,
        retention_max_age: timedelta | None = None,
        retention_max_count: int | None = None,
        max_payload_bytes: int | None = None,
        dedup_window: timedelta | None = None,
        clear_retention: bool = False,
    ) -> Topic:
        self.limits.check_text("description", description)
        row = await self._fetchrow(
            "alter_topic",
            name,
            description,
            retention_max_age,
            retention_max_count,
            max_payload_bytes,
            dedup_window,
            clear_retention,
        )
        return Topic.from_row(row)

    async def delete_topic(self, name: str) -> None:
        await self._fetchval("delete_topic", name)

    async def list_topics(self, name: str | None = None) -> list[Topic]:
        return [Topic.from_row(r) for r in await self._fetch("list_topics", name)]

    # -- publishing -----------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
        idempotency_key: str | None = None,
        delay: timedelta | float | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
    ) -> int:
        """Publishes and commits one message; returns its offset once it is durable."""
        args = message_args(
            topic,
            payload,
            headers=headers,
            key=key,
            idempotency_key=idempotency_key,
            delay=delay,
            correlation_id=correlation_id,
            reply_to=reply_to,
            limit=self.settings.max_payload_bytes,
            limits=self.limits,
        )
        # A keyed publish waits while another open transaction holds the same key; batched,
        # it would hold up every message that happened to share its round trip.
        if self.settings.publish_batching and idempotency_key is None:
            offset = await self._batcher.publish(args)
        else:
            offset = await self._fetchval("publish_and_commit", *args)
        self.observer.published(topic, 1)
        return offset

    async def publish_many(self, topic: str, messages: Sequence[Any]) -> list[int]:
        """Publishes and commits a batch (payloads, or mappings with "payload" and options)."""
        args = batch_args(
            topic, messages, limit=self.settings.max_payload_bytes, limits=self.limits
        )
        offsets: list[int] = await self._fetchval("publish_batch_and_commit", *args)
        self.observer.published(topic, len(offsets))
        return offsets

    async def _send_batch(self, topic: str, rows: list[tuple[Any, ...]]) -> list[int]:
        if len(rows) == 1:
            return [await self._fetchval("publish_and_commit", *rows[0])]
        # Each row is message_args: topic, encoded payload, options.
        params = batch_params(topic, join_array([r[1] for r in rows]), [r[2:] for r in rows])
        offsets: list[int] = await self._fetchval("publish_batch_and_commit", *params)
        return offsets

    async def message_offsets(self, topic: str, message_ids: Sequence[int]) -> list[int | None]:
        """Offsets of messages published inside transactions (None until assigned)."""
        offsets: list[int | None] = await self._fetchval(
            "message_offsets", topic, list(message_ids)
        )
        return offsets

    async def assign(self, topic: str) -> int:
        """Gives committed in-transaction publishes their offsets now; returns how many."""
        count: int = await self._fetchval("assign", topic)
        return count

    # -- subscribers ----------------------------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        name: str,
        *,
        start: int | str | datetime = "latest",
        filter: Mapping[str, Any] | None = None,
        max_attempts: int = 5,
        backoff: timedelta | float = 1.0,
        max_backoff: timedelta | float = 300.0,
        ephemeral: bool = False,
        exist_ok: bool = False,
    ) -> Subscriber:
        """Creates a subscriber that starts at `start` (earliest, latest, offset or time).

        An ephemeral one belongs to this Queue: if the process dies without removing it,
        remove_orphans() takes it away once this Queue's listener connection is gone.
        With exist_ok, an existing subscriber of that name is returned as it is (position
        and settings unchanged) instead of raising SubscriberExists.
        A durable one raises LimitReached when the topic has settings.max_subscribers_per_topic
        durable subscribers already."""
        target = parse_target(start)
        filter_json = self._filter_json(filter)
        owner = None
        if ephemeral:
            await self.listener.listen()  # the owner lock is held from here on
            owner = self.listener.owner
        if target.shift is not None or target.ago is not None:
            raise InvalidArgument("a subscriber starts at earliest, latest, an offset or a time")
        try:
            row = await self._fetchrow(
                "create_subscriber",
                topic,
                name,
                target.edge,
                target.offset,
                target.time,
                filter_json,
                max_attempts,
                seconds(backoff),
                seconds(max_backoff),
                ephemeral,
                owner,
                self.settings.max_subscribers_per_topic or None,
            )
        except (SubscriberExists, LimitReached):
            existing = [s for s in await self.list_subscribers(topic) if s.name == name]
            if not exist_ok or not existing:
                raise
            return existing[0]
        created = Subscriber.from_row(row)
        self.observer.subscribed(created)
        return created

    async def alter_subscriber(
        self,
        topic: str,
        name: str,
        *,
        filter: Mapping[str, Any] | None = None,
        clear_filter: bool = False,
        max_attempts: int | None = None,
        backoff: timedelta | float | None = None,
        max_backoff: timedelta | float | None = None,
    ) -> Subscriber:
        row = await self._fetchrow(
            "alter_subscriber",
            topic,
            name,
            self._filter_json(filter),
            max_attempts,
            seconds(backoff),
            seconds(max_backoff),
            clear_filter,
        )
        return Subscriber.from_row(row)

    def _filter_json(self, filter: Mapping[str, Any] | None) -> str | None:
        if filter is None:
            return None
        if not isinstance(filter, Mapping):
            raise InvalidFilter("a filter is an object with payload, headers and/or match")
        if not filter:
            return None
        text = encode(dict(filter), what="filter")
        self.limits.check_text("filter", text)
        if depth_over(filter):
            raise InvalidFilter(f"a filter is nested at most {MAX_DEPTH} levels deep")
        return text

    async def unsubscribe(self, topic: str, name: str) -> None:
        await self._fetchval("delete_subscriber", topic, name)
        self.observer.unsubscribed(topic, name)

    async def list_subscribers(self, topic: str | None = None) -> list[Subscriber]:
        return [Subscriber.from_row(r) for r in await self._fetch("list_subscribers", topic)]

    async def subscriber_by_id(self, subscriber_id: int) -> Subscriber:
        return Subscriber.from_row(await self._fetchrow("subscriber_by_id", subscriber_id))

    # -- claiming -------------------------------------------------------------------------

    async def claim(
        self,
        topic: str,
        subscriber: str,
        max_messages: int = 1,
        *,
        lease: timedelta | float | None = None,
        ack: Sequence[Message] = (),
        consumer: str | None = None,
    ) -> list[Message]:
        """Claims up to max_messages for a lease, in offset order.

        `ack` acks earlier messages in the same transaction (one commit for both). `consumer`
        names the lease holder for operators (list_leases); default: host and process id.
        """
        if not self.listener.connected:
            # A consumer: from here on it hears resets and wake-ups (see pgqueue.listener).
            await self.listener.listen()
        rows = await self._fetch(
            "claim",
            topic,
            subscriber,
            max_messages,
            seconds(lease if lease is not None else self.settings.default_lease),
            [m.offset for m in ack] if ack else None,
            [m.lease_token for m in ack] if ack else None,
            consumer or DEFAULT_CONSUMER,
        )
        if ack:
            self.observer.acked(topic, subscriber, len(ack))
        self.observer.claimed(topic, subscriber, len(rows))
        messages = []
        for row in rows:
            try:
                messages.append(Message.from_row(subscriber, row, self))
            except (ValueError, RecursionError) as error:
                # A payload PostgreSQL stores but Python cannot decode (nested deeper than
                # its recursion limit): it alone is nacked, not the whole claim failed.
                await delivery.reject_offset(
                    self,
                    topic,
                    subscriber,
                    row["offset"],
                    row["lease_token"],
                    row["attempt"],
                    error,
                )
        return messages

    async def ack(
        self,
        topic: str,
        subscriber: str,
        messages: Sequence[Acked],
        lease_tokens: Sequence[int] | None = None,
        *,
        strict: bool = False,
    ) -> list[int]:
        """Acks messages (or offsets with lease_tokens); returns the offsets acked.

        With strict=True, raises LeaseLost when any of them was no longer this consumer's.
        """
        offsets, tokens = _offsets_and_tokens(messages, lease_tokens)
        if not offsets:
            return []
        done: list[int] = await self._fetchval("ack", topic, subscriber, offsets, tokens)
        self.observer.acked(topic, subscriber, len(done))
        if strict and len(done) < len(set(offsets)):
            lost = sorted(set(offsets) - set(done))
            raise LeaseLost(f"{topic}/{subscriber}: offsets {lost} are no longer leased to you")
        return done

    async def nack(
        self,
        message: Message,
        *,
        delay: timedelta | float | None = None,
        error: str | None = None,
    ) -> str:
        """Returns the message for a retry; "retry", or "dead" after its last attempt."""
        return await self.nack_offset(
            message.topic,
            message.subscriber,
            message.offset,
            message.lease_token,
            delay=delay,
            error=error,
        )

    async def nack_offset(
        self,
        topic: str,
        subscriber: str,
        offset: int,
        lease_token: int,
        *,
        delay: timedelta | float | None = None,
        error: str | None = None,
    ) -> str:
        """nack() by offset and lease token (for consumers that keep no Message objects)."""
        state: str = await self._fetchval(
            "nack", topic, subscriber, offset, lease_token, seconds(delay), error
        )
        if state == "lost":
            raise LeaseLost(f"{topic}/{subscriber}: offset {offset} is no longer leased to you")
        self.observer.nacked(topic, subscriber, state)
        return state

    async def extend_lease(
        self,
        topic: str,
        subscriber: str,
        messages: Sequence[Acked],
        lease: timedelta | float,
        lease_tokens: Sequence[int] | None = None,
    ) -> list[int]:
        offsets, tokens = _offsets_and_tokens(messages, lease_tokens)
        if not offsets:
            return []
        done: list[int] = await self._fetchval(
            "extend_lease", topic, subscriber, offsets, tokens, seconds(lease)
        )
        return done

    async def release(
        self,
        topic: str,
        subscriber: str,
        messages: Sequence[Acked],
        lease_tokens: Sequence[int] | None = None,
    ) -> list[int]:
        """Gives leases back at once (a consumer going away); they are claimable now."""
        offsets, tokens = _offsets_and_tokens(messages, lease_tokens)
        if not offsets:
            return []
        done: list[int] = await self._fetchval("release", topic, subscriber, offsets, tokens)
        return done

    async def remove_orphans(self, grace: timedelta | float = 60.0) -> int:
        """Removes ephemeral subscribers whose owner (a Queue's process) has been gone for
        `grace`; returns how many. The servers run it beside retention."""
        removed: int = await self._fetchval("remove_orphans", seconds(grace))
        return removed

    async def give_back(
        self,
        topic: str,
        subscriber: str,
        messages: Sequence[Acked],
        lease_tokens: Sequence[int] | None = None,
    ) -> list[int]:
        """Gives back claims the consumer never received: claimable now, and the claim does
        not count as a delivery attempt."""
        offsets, tokens = _offsets_and_tokens(messages, lease_tokens)
        if not offsets:
            return []
        done: list[int] = await self._fetchval("give_back", topic, subscriber, offsets, tokens)
        return done

    def consume(
        self,
        topic: str,
        subscriber: str,
        *,
        batch: int = 100,
        lease: timedelta | float | None = None,
        poll_interval: float | None = None,
    ) -> AsyncIterator[Message]:
        """Claimed messages, forever: woken by NOTIFY, polling every poll_interval."""
        return consumer.consume(
            self,
            topic,
            subscriber,
            batch=batch,
            lease=lease,
            poll_interval=poll_interval or self.settings.poll_interval,
        )

    async def work(
        self,
        topic: str,
        subscriber: str,
        handler: Callable[[Message], Awaitable[Any]],
        *,
        concurrency: int = 1,
        batch: int = 10,
        lease: timedelta | float | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Runs handler on each message: ack on return, nack with backoff on an exception."""
        await consumer.work(
            self,
            topic,
            subscriber,
            handler,
            concurrency=concurrency,
            batch=batch,
            lease=lease,
            stop=stop,
        )

    # -- reset, dead letters, stats, browsing ---------------------------------------------

    async def reset(
        self,
        topic: str,
        *,
        to: Any,
        subscriber: str | None = None,
        dry_run: bool = False,
        if_epoch: int | None = None,
        quiet: bool = False,
    ) -> list[ResetResult]:
        """Moves one subscriber (or all of the topic's) to `to`; see pgqueue.targets.

        With if_epoch (a Subscriber.epoch read earlier), nothing happens if the subscriber
        was reset since: results then say applied=False. quiet is for a consumer moving its
        own position: no new epoch and no notification.
        """
        target = parse_target(to)
        rows = await self._fetch(
            "reset", topic, subscriber, *target.args(), dry_run, if_epoch, quiet
        )
        return [ResetResult.from_row(r) for r in rows]

    async def dead_letters(
        self, topic: str, subscriber: str, *, after: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        rows = await self._fetch("list_dead_letters", topic, subscriber, after, limit)
        return [DeadLetter.from_row(r) for r in rows]

    async def replay_dead_letters(
        self, topic: str, subscriber: str, *, first: int | None = None, last: int | None = None
    ) -> int:
        """Delivers dead letters again (one, a range, or all); returns how many."""
        count: int = await self._fetchval("replay_dead_letters", topic, subscriber, first, last)
        return count

    async def purge_dead_letters(
        self, topic: str, subscriber: str, *, first: int | None = None, last: int | None = None
    ) -> int:
        count: int = await self._fetchval("purge_dead_letters", topic, subscriber, first, last)
        return count

    async def enforce_retention(self, topic: str | None = None) -> list[RetentionResult]:
        """Removes the segments past retention of one topic or of every topic that has a
        retention policy (the server does this every retention_interval seconds)."""
        rows = await self._fetch("enforce_retention", topic)
        return [RetentionResult.from_row(r) for r in rows]

    async def topic_stats(self, topic: str | None = None) -> list[TopicStats]:
        return [TopicStats.from_row(r) for r in await self._fetch("topic_stats", topic)]

    async def subscriber_stats(
        self, topic: str | None = None, subscriber: str | None = None
    ) -> list[SubscriberStats]:
        rows = await self._fetch("subscriber_stats", topic, subscriber)
        return [SubscriberStats.from_row(r) for r in rows]

    async def subscribers_due(self, topic: str) -> dict[str, float | None]:
        """Per subscriber of the topic: 0 when it has work now, else the seconds until a retry,
        delayed message or lease falls due, or None; numbers in-transaction publishes first."""
        rows = await self._fetch("subscribers_due", topic)
        return {r["subscriber"]: r["seconds_until_due"] for r in rows}

    async def leases(self, topic: str, subscriber: str, *, limit: int = 1000) -> list[Lease]:
        """The subscriber's leases, live and run out, in offset order (who, since when)."""
        rows = await self._fetch("list_leases", topic, subscriber, limit)
        return [Lease.from_row(r) for r in rows]

    async def read(
        self, topic: str, *, from_offset: int = 1, limit: int = 100
    ) -> list[StoredMessage]:
        rows = await self._fetch("read_messages", topic, from_offset, limit)
        return [StoredMessage.from_row(topic, r) for r in rows]

    async def idle_wait(self, topic: str, subscriber: str, poll_interval: float) -> float:
        """How long an idle consumer may sleep: until the next retry, delayed message or lease
        expiry of the subscriber falls due, and never longer than poll_interval."""
        due = await self.seconds_until_due(topic, subscriber)
        return poll_interval if due is None else min(poll_interval, due)

    async def seconds_until_due(self, topic: str, subscriber: str) -> float | None:
        """Seconds until the subscriber's next retry, delayed message or lease expiry falls
        due (0: now, or a claim has more of the log to look at); None when nothing is
        pending."""
        due: float | None = await self._fetchval("seconds_until_due", topic, subscriber)
        # A little late rather than early: a claim a moment before the due time finds nothing.
        return None if due is None else due + 0.005

    async def ping(self, within: float = 2.0) -> None:
        """Raises DatabaseUnavailable unless the database answers within that many seconds."""
        try:
            await asyncio.wait_for(self._fetchval("ping"), within)
        except TimeoutError as error:
            raise DatabaseUnavailable(f"no answer within {within} s") from error

    def on_reset(self, handler: ResetHandler) -> Callable[[], None]:
        """Calls handler(event) on every reset (event: topic, subscriber, position)."""
        return self.listener.on_reset(handler)

    def reset_epoch(self, topic: str, subscriber: str) -> int:
        """The newest reset epoch heard of for a subscriber. Messages claimed with an older
        epoch were claimed before that reset, which cleared their leases."""
        return self._reset_epochs.get((topic, subscriber), 0)

    def _note_reset(self, event: dict[str, Any]) -> None:
        key = (str(event.get("topic")), str(event.get("subscriber")))
        epoch = event.get("epoch")
        if isinstance(epoch, int) and epoch > self._reset_epochs.get(key, 0):
            self._reset_epochs[key] = epoch

    # -- plumbing -------------------------------------------------------------------------

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._call(self.pool.fetch, query, args)
        return rows

    async def _fetchrow(self, query: str, *args: Any) -> asyncpg.Record:
        row: asyncpg.Record = await self._call(self.pool.fetchrow, query, args)
        return row

    async def _fetchval(self, query: str, *args: Any) -> Any:
        return await self._call(self.pool.fetchval, query, args)

    async def _call(
        self, method: Callable[..., Awaitable[Any]], query: str, args: tuple[Any, ...]
    ) -> Any:
        try:
            with translated():
                result = await method(QUERIES[query], *args)
        except DatabaseUnavailable as error:
            self.outage.failed(error)  # logged once per outage, not once per call
            raise
        except PgQueueError:
            self.outage.answered()  # a refusal is an answer: the database is there
            raise
        if self.outage.down:
            self.outage.answered()
        return result


def _named(dsn: str, name: str) -> dict[str, str] | None:
    """The pool's application_name, unless the DSN sets its own (which asyncpg would
    otherwise override: its server_settings argument wins over the DSN's)."""
    return None if "application_name" in dsn else {"application_name": name}


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Pool reset hook for our own pool: nothing to undo, so no round trip on release.

    The library never LISTENs, takes session locks or sets session settings on pool
    connections (only SET LOCAL), so asyncpg's default reset query is pure overhead.
    """


def _offsets_and_tokens(
    messages: Sequence[Acked], lease_tokens: Sequence[int] | None
) -> tuple[list[int], list[int]]:
    if lease_tokens is not None:
        offsets = [m.offset if isinstance(m, Message) else m for m in messages]
        return offsets, list(lease_tokens)
    if not all(isinstance(m, Message) for m in messages):
        raise InvalidArgument("pass Message objects, or offsets together with lease_tokens")
    return [m.offset for m in messages], [m.lease_token for m in messages]  # type: ignore[union-attr]


class connect:
    """Opens a Queue; use as `async with connect(dsn) as q` or `q = await connect(dsn)`."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        settings: Settings | None = None,
        pool: asyncpg.Pool | None = None,
    ) -> None:
        self._args = (dsn, settings, pool)
        self._queue: Queue | None = None

    def __await__(self) -> Generator[Any, None, Queue]:
        dsn, settings, pool = self._args
        return Queue.open(dsn, settings=settings, pool=pool).__await__()

    async def __aenter__(self) -> Queue:
        self._queue = await self
        return self._queue

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._queue is not None:
            await self._queue.close()


async def _check_schema(pool: asyncpg.Pool) -> None:
    """Fails at once, with what to do, when the database is not at this code's revision
    (rather than with a missing function at the first call)."""
    async with pool.acquire() as conn:
        found = await schema.schema_revision(conn)
    if found != schema.SCHEMA_REVISION:
        at = f"at revision {found}" if found else "without the pgqueue schema"
        raise SchemaMismatch(
            f"database {at}, this pgqueue needs {schema.SCHEMA_REVISION}: run `pgqueue migrate`"
        )
