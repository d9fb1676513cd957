"""`pgqueue shell`: an interactive prompt for trying the queue out.

topics                          list the topics
create TOPIC [DESCRIPTION...]   create a topic
pub TOPIC MESSAGE...            publish one message: the rest of the line, as JSON if it
                                parses ({"x": 1}, 42, "text"), else as text
batch TOPIC COUNT [TEXT...]     publish COUNT messages "TEXT 1" .. "TEXT COUNT" at once
periodic TOPIC SECONDS MESSAGE  publish MESSAGE every SECONDS (at least 0.1) in the background
sub TOPIC [NAME] [START]        create a subscriber (default name: a new one; start: latest)
unsub TOPIC NAME                delete a subscriber
listen TOPIC NAME               print (and ack) what the subscriber receives, in the background
stop                            stop every background publisher and listener
stats                           topic and subscriber figures
help, exit

At a terminal the line can be edited (arrows, Ctrl-R searches) and the history is kept in
$XDG_STATE_HOME/pgqueue/shell_history (default ~/.local/state/pgqueue/shell_history).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shlex
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

import pgqueue

MIN_PERIOD = 0.1  # seconds: a faster periodic publisher floods the topic from a typo
MAX_BATCH = 10_000  # what one publish_many round trip is made for


class ShellError(Exception):
    """A line the shell cannot run; its message is shown as it is."""


@dataclass(frozen=True)
class Line:
    """A parsed command line: the words, and the raw rest of the line for a message."""

    command: str
    words: list[str]
    rest: str | None = None


@dataclass(frozen=True)
class Usage:
    required: int  # words that must be there
    optional: int = 0  # words that may follow
    rest: str | None = None  # "required" or "optional": the rest of the line, raw
    text: str = ""


USAGE = {
    "topics": Usage(0, text="topics"),
    "create": Usage(1, rest="optional", text="create TOPIC [DESCRIPTION...]"),
    "pub": Usage(1, rest="required", text="pub TOPIC MESSAGE..."),
    "batch": Usage(2, rest="optional", text="batch TOPIC COUNT [TEXT...]"),
    "periodic": Usage(2, rest="required", text="periodic TOPIC SECONDS MESSAGE..."),
    "sub": Usage(1, optional=2, text="sub TOPIC [NAME] [START]"),
    "unsub": Usage(2, text="unsub TOPIC NAME"),
    "listen": Usage(2, text="listen TOPIC NAME"),
    "stop": Usage(0, text="stop"),
    "stats": Usage(0, text="stats"),
    "help": Usage(0, text="help"),
}


def parse(text: str) -> Line | None:
    """A command line, checked against its usage; None for an empty line."""
    command, _, rest = text.strip().partition(" ")
    if not command:
        return None
    usage = USAGE.get(command)
    if usage is None:
        raise ShellError(f"unknown command {command!r} (try 'help')")
    if usage.rest is None:
        try:
            words = shlex.split(rest)
        except ValueError as error:
            raise ShellError(f"{error} (usage: {usage.text})") from None
        if not usage.required <= len(words) <= usage.required + usage.optional:
            raise ShellError(f"usage: {usage.text}")
        return Line(command, words)
    parts = rest.split(maxsplit=usage.required)
    words, tail = parts[: usage.required], " ".join(parts[usage.required :]) or None
    if len(words) < usage.required or (usage.rest == "required" and tail is None):
        raise ShellError(f"usage: {usage.text}")
    return Line(command, words, tail)


def payload(text: str) -> Any:
    """The message a line holds: JSON when it parses, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_BATCH:
        raise ShellError(f"COUNT is a whole number from 1 to {MAX_BATCH}, got {text!r}")
    return value


def period(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= MIN_PERIOD):
        raise ShellError(f"SECONDS is a number of at least {MIN_PERIOD}, got {text!r}")
    return value


def history_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "pgqueue" / "shell_history"


class Shell:
    def __init__(self, dsn: str, console: Console) -> None:
        self.dsn = dsn
        self.console = console
        self.background: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        async with pgqueue.connect(self.dsn) as queue:
            self.queue = queue
            if sys.stdin.isatty():
                await self._interactive()
            else:
                while (text := await asyncio.to_thread(_read_line)) is not None:
                    if not await self.execute(text):
                        break
            await self.stop()

    async def _interactive(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.patch_stdout import patch_stdout

        path = history_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        session: PromptSession[str] = PromptSession(history=FileHistory(str(path)))
        self.say("pgqueue shell; 'help' lists the commands, Ctrl-D leaves")
        # Background listeners print above the prompt instead of through it.
        with patch_stdout(raw=True):
            while True:
                try:
                    text = await session.prompt_async("pgqueue> ")
                except KeyboardInterrupt:
                    continue  # Ctrl-C drops the line being typed, as in a shell
                except EOFError:
                    return
                if not await self.execute(text):
                    return

    async def execute(self, text: str) -> bool:
        """Runs one line; False when it asks to leave."""
        if text.strip() in ("exit", "quit"):
            return False
        try:
            line = parse(text)
            if line is not None:
                await self.dispatch(line)
        except (ShellError, pgqueue.PgQueueError) as error:
            self.say(f"error: {error}")
        return True

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    async def dispatch(self, line: Line) -> None:
        handler: Callable[..., Awaitable[None]] = getattr(self, f"do_{line.command}")
        await handler(*line.words, *([] if line.rest is None else [line.rest]))

    async def do_help(self) -> None:
        self.say(__doc__ or "")

    async def do_topics(self) -> None:
        stats = {s.topic: s for s in await self.queue.topic_stats()}
        for t in await self.queue.list_topics():
            figures = stats.get(t.name)
            messages = f"{figures.messages} messages" if figures else "deleted"
            self.say(f"{t.name}: {messages}  {t.description}".rstrip())

    async def do_create(self, topic: str, description: str = "") -> None:
        created = await self.queue.create_topic(topic, description=description)
        self.say(f"created topic {created.name}")

    async def do_pub(self, topic: str, message: str) -> None:
        offset = await self.queue.publish(topic, payload(message))
        self.say(f"published {topic} offset {offset}")

    async def do_batch(self, topic: str, how_many: str, text: str = "message") -> None:
        n = count(how_many)
        offsets = await self.queue.publish_many(topic, [f"{text} {i + 1}" for i in range(n)])
        self.say(f"published {len(offsets)} to {topic}, offsets {offsets[0]}-{offsets[-1]}")

    async def do_periodic(self, topic: str, seconds: str, message: str) -> None:
        interval, value = period(seconds), payload(message)
        await self.queue.list_topics(topic) or self._missing(f"topic {topic!r}")

        async def loop() -> None:
            try:
                while True:
                    offset = await self.queue.publish(topic, value)
                    self.say(f"[periodic] {topic} offset {offset}")
                    await asyncio.sleep(interval)
            except pgqueue.PgQueueError as error:
                self.say(f"[periodic] {topic} stopped: {error}")

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
            try:
                async for message in self.queue.consume(topic, name, batch=50):
                    self.say(f"[{topic}/{name} #{message.offset}] {json.dumps(message.payload)}")
                    await message.ack()
            except pgqueue.PgQueueError as error:
                self.say(f"[{topic}/{name}] stopped: {error}")

        self.background.append(asyncio.create_task(loop()))
        self.say(f"listening to {topic} as {name} ('stop' ends it)")

    async def do_stop(self) -> None:
        stopped = await self.stop()
        self.say(f"stopped {stopped} background task(s)")

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
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return len(tasks)

    @staticmethod
    def _missing(what: str) -> Any:
        raise pgqueue.TopicNotFound(f"{what} does not exist")


def _read_line() -> str | None:
    try:
        return input()
    except EOFError:
        return None
