"""`pgqueue shell`: an interactive prompt for trying the queue out.

pub TOPIC MESSAGE...        publish one message (JSON, or text)
batch TOPIC COUNT [MESSAGE] publish COUNT messages at once
periodic TOPIC SECONDS MSG  publish MSG every SECONDS in the background
sub TOPIC [NAME] [START]    create a subscriber (default name: a new one; start: latest)
unsub TOPIC NAME            delete a subscriber
listen TOPIC NAME           print (and ack) what the subscriber receives, in the background
stop                        stop every background publisher and listener
stats                       topic and subscriber figures
help, exit
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
import uuid
from typing import Any

from rich.console import Console

import pgqueue


class Shell:
    def __init__(self, dsn: str, console: Console) -> None:
        self.dsn = dsn
        self.console = console
        self.background: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        async with pgqueue.connect(self.dsn) as queue:
            self.queue = queue
            interactive = sys.stdin.isatty()
            if interactive:
                self.console.print("pgqueue shell; 'help' lists the commands")
            while True:
                line = await asyncio.to_thread(_read_line, "pgqueue> " if interactive else "")
                if line is None:
                    break
                try:
                    words = shlex.split(line)
                except ValueError as error:
                    self.say(f"error: {error}")
                    continue
                if not words:
                    continue
                if words[0] in ("exit", "quit"):
                    break
                try:
                    await self.dispatch(words[0], words[1:])
                except pgqueue.PgQueueError as error:
                    self.say(f"error: {error}")
                except (TypeError, ValueError) as error:
                    self.say(f"error: {error} (try 'help')")
            await self.stop()

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    async def dispatch(self, command: str, args: list[str]) -> None:
        handler = getattr(self, f"do_{command}", None)
        if handler is None:
            self.say(f"error: unknown command {command!r} (try 'help')")
            return
        await handler(*args)

    async def do_help(self) -> None:
        self.say(__doc__ or "")

    async def do_pub(self, topic: str, *words: str) -> None:
        offset = await self.queue.publish(topic, _payload(" ".join(words)))
        self.say(f"published {topic} offset {offset}")

    async def do_batch(self, topic: str, count: str, *words: str) -> None:
        n = int(count)
        text = " ".join(words) or "message"
        offsets = await self.queue.publish_many(topic, [f"{text} {i + 1}" for i in range(n)])
        self.say(f"published {len(offsets)} to {topic}, offsets {offsets[0]}-{offsets[-1]}")

    async def do_periodic(self, topic: str, seconds: str, *words: str) -> None:
        interval, payload = float(seconds), _payload(" ".join(words))
        await self.queue.list_topics(topic) or self._missing(topic)

        async def loop() -> None:
            while True:
                offset = await self.queue.publish(topic, payload)
                self.say(f"[periodic] {topic} offset {offset}")
                await asyncio.sleep(interval)

        self.background.append(asyncio.create_task(loop()))
        self.say(f"publishing to {topic} every {interval} s ('stop' ends it)")

    async def do_sub(self, topic: str, name: str | None = None, start: str = "latest") -> None:
        created = await self.queue.subscribe(
            topic,
            name or f"shell-{uuid.uuid4().hex[:8]}",
            start=start,
        )
        self.say(f"subscribed {created.name} to {topic} at position {created.position}")

    async def do_unsub(self, topic: str, name: str) -> None:
        await self.queue.unsubscribe(topic, name)
        self.say(f"unsubscribed {name} from {topic}")

    async def do_listen(self, topic: str, name: str) -> None:
        await self.queue.subscriber_stats(topic, name) or self._missing(f"{topic}/{name}")

        async def loop() -> None:
            async for message in self.queue.consume(topic, name, batch=50):
                self.say(f"[{topic}/{name} #{message.offset}] {json.dumps(message.payload)}")
                await message.ack()

        self.background.append(asyncio.create_task(loop()))
        self.say(f"listening to {topic} as {name} ('stop' ends it)")

    async def do_stop(self) -> None:
        count = await self.stop()
        self.say(f"stopped {count} background task(s)")

    async def do_stats(self) -> None:
        for t in await self.queue.topic_stats():
            self.say(f"topic {t.topic}: {t.messages} messages, last offset {t.last_offset}")
        for s in await self.queue.subscriber_stats():
            self.say(
                f"  {s.topic}/{s.subscriber}: position {s.position}, lag {s.lag}, "
                f"in flight {s.in_flight}, dead {s.dead}"
            )

    async def stop(self) -> int:
        tasks, self.background = self.background, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, pgqueue.PgQueueError):
                await task
        return len(tasks)

    @staticmethod
    def _missing(what: str) -> Any:
        raise pgqueue.TopicNotFound(f"{what} does not exist")


def _payload(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _read_line(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None
