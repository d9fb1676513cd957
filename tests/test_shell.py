"""`pgqueue shell`: its line parser, and the prompt at a real terminal (a pseudo-terminal)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path

import pytest

import pgqueue
from pgqueue.shell import Line, ShellError, parse, payload
from tests.support import within


def test_the_rest_of_a_pub_line_is_json() -> None:
    line = parse('pub t {"x": 1, "y": [1, 2]}')
    assert line == Line("pub", ["t"], '{"x": 1, "y": [1, 2]}')
    assert line.rest is not None and payload(line.rest) == {"x": 1, "y": [1, 2]}
    assert payload("42") == 42 and payload('"quoted"') == "quoted"
    assert payload("hello world") == "hello world"  # not JSON: the text itself
    assert payload("{x: 1}") == "{x: 1}"
    periodic = parse('periodic t 2 {"tick": true}')
    assert periodic == Line("periodic", ["t", "2"], '{"tick": true}')


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("pub t", "usage: pub TOPIC MESSAGE..."),
        ("pub", "usage: pub TOPIC MESSAGE..."),
        ("unsub t", "usage: unsub TOPIC NAME"),
        ("stats now", "usage: stats"),
        ("sub 't", "No closing quotation"),
        ("frobnicate", "unknown command 'frobnicate'"),
    ],
)
def test_bad_lines_say_the_usage(text: str, error: str) -> None:
    with pytest.raises(ShellError, match=error):
        parse(text)


async def _shell(dsn: str, *lines: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgqueue.cli",
        "shell",
        env={**os.environ, "PGQUEUE_DATABASE_URL": dsn, "COLUMNS": "200"},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    script = "\n".join([*lines, "exit"]) + "\n"
    out, _ = await within(proc.communicate(script.encode()), 60)
    assert proc.returncode == 0, out.decode()
    text = out.decode()
    assert "Traceback" not in text
    return text


async def test_pub_publishes_the_json_it_is_given(database_dsn: str) -> None:
    text = await _shell(
        database_dsn,
        "create t demo topic",
        "topics",
        'pub t {"x": 1}',
        "pub t [1, 2]",
        "pub t hello world",
    )
    assert "created topic t" in text and "t: 0 messages  demo topic" in text
    async with pgqueue.connect(database_dsn) as q:
        stored = await q.read("t", limit=10)
    assert [m.payload for m in stored] == [{"x": 1}, [1, 2], "hello world"]


async def test_numbers_are_checked_and_errors_are_one_plain_line(database_dsn: str) -> None:
    text = await _shell(
        database_dsn,
        "create t",
        "periodic t -1 x",
        "periodic t 0 x",
        "periodic t nan x",
        "periodic t 0.01 x",
        "batch t 0",
        "batch t many",
        "pub",
        "create t",
        "stats",
    )
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: SECONDS is a number of at least 0.1, got '-1'",
        "error: SECONDS is a number of at least 0.1, got '0'",
        "error: SECONDS is a number of at least 0.1, got 'nan'",
        "error: SECONDS is a number of at least 0.1, got '0.01'",
        "error: COUNT is a whole number from 1 to 10000, got '0'",
        "error: COUNT is a whole number from 1 to 10000, got 'many'",
        "error: usage: pub TOPIC MESSAGE...",
        "error: topic 't' already exists",
    ]
    assert "topic t: 0 messages" in text  # nothing was published by the refused lines
    assert "missing" not in text and "positional" not in text


def _in_order(text: bytes, fragments: tuple[bytes, ...]) -> bool:
    at = 0
    for fragment in fragments:
        at = text.find(fragment, at)
        if at < 0:
            return False
        at += len(fragment)
    return True


class _Terminal:
    """The leader side of a pseudo-terminal, read by a thread into a buffer."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.changed = fd, b"", threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                chunk = b""
            with self.changed:
                self.buffer += chunk
                self.changed.notify_all()
            if not chunk:
                return

    def wait_for(self, *fragments: bytes, timeout: float = 30) -> None:
        """Until the fragments have appeared in this order."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not _in_order(self.buffer, fragments):
                left = deadline - time.monotonic()
                assert left > 0, f"no {fragments!r} in {self.buffer[-500:]!r}"
                self.changed.wait(left)

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())


async def test_at_a_terminal_lines_are_edited_and_kept_in_history(
    database_dsn: str, tmp_path: Path
) -> None:
    import pty

    leader, follower = pty.openpty()
    env = {
        **os.environ,
        "PGQUEUE_DATABASE_URL": database_dsn,
        "XDG_STATE_HOME": str(tmp_path),
        "TERM": "xterm",
        "PROMPT_TOOLKIT_NO_CPR": "1",  # the test does not answer cursor position requests
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgqueue.cli",
        "shell",
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    terminal = _Terminal(leader)
    try:
        await asyncio.to_thread(terminal.wait_for, b"pgqueue>")
        terminal.type("create edited\r")
        # Keys typed before the next prompt would meet a terminal not yet in raw mode.
        await asyncio.to_thread(terminal.wait_for, b"created topic edited", b"pgqueue>")
        # Up arrow recalls "create edited"; backspaces delete the name; type another.
        terminal.type("\x1b[A" + "\x7f" * len("edited") + "again\r")
        await asyncio.to_thread(terminal.wait_for, b"created topic again", b"pgqueue>")
        terminal.type("\x04")  # Ctrl-D leaves
        assert await within(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
        os.close(leader)
    assert b"Traceback" not in terminal.buffer
    history = (tmp_path / "pgqueue" / "shell_history").read_text()
    assert "+create edited" in history and "+create again" in history
    async with pgqueue.connect(database_dsn) as q:
        assert sorted(t.name for t in await q.list_topics()) == ["again", "edited"]
