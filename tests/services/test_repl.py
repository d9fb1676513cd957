"""QPublisher and QSubscriber: settings, readable results, a server that is down, stream()."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

import pgqueue
from tests.services.conftest import RunningServer, free_port
from tests.support import within


def test_the_clients_read_the_servers_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUBLISHER_URL", raising=False)
    monkeypatch.setenv("PGQUEUE_PORT", "9123")
    assert pgqueue.QPublisher().url == "http://127.0.0.1:9123"
    monkeypatch.setenv("PGQUEUE_HOST", "0.0.0.0")  # bound everywhere: reach it on loopback
    assert pgqueue.QSubscriber().url == "http://127.0.0.1:9123"
    monkeypatch.setenv("PGQUEUE_HOST", "queue.internal")
    assert pgqueue.QSubscriber().url == "http://queue.internal:9123"
    monkeypatch.setenv("PGQUEUE_URL", "http://elsewhere:1/v1")  # an explicit URL wins
    assert pgqueue.QPublisher().url == "http://elsewhere:1"

    monkeypatch.setenv(
        "PGQUEUE_API_TOKENS", '{"sub-only": ["subscribe"], "pub-admin": ["publish", "admin"]}'
    )
    assert pgqueue.QSubscriber()._token == "sub-only"
    assert pgqueue.QPublisher()._token == "pub-admin"
    assert pgqueue.QPublisher(token="mine")._token == "mine"


def test_a_closed_port_raises_server_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pgqueue.QPublisher(url) as pub, pytest.raises(pgqueue.ServerUnavailable) as caught:
        pub.list_topics()
    assert f"no pgqueue server answers at {url}" in str(caught.value)
    assert "pgqueue serve" in str(caught.value)
    with pytest.raises(pgqueue.ServerUnavailable):
        next(pgqueue.QSubscriber(url).stream("t"))


def test_results_print_compactly(server: RunningServer) -> None:
    with pgqueue.QPublisher(server.url) as pub:
        created = pub.create_topic("news")
        assert created == {"topic": "news", "message": "topic news created"}  # still a dict
        assert repr(created) == "{topic: 'news', message: 'topic news created'}"
        pub.publish("news", {"deep": {"x": "y" * 100}})
        [message] = messages = pub.messages("news")
        assert message["payload"] == {"deep": {"x": "y" * 100}}  # as published
        lines = repr(messages).splitlines()
        assert lines[0] == "[" and lines[1].startswith("  {offset: 1, ") and lines[-1] == "]"
        assert 'payload: {"deep": {"x": "yyyyy' in lines[1] and "…" in lines[1]


def test_stream_ends_after_its_timeout(server: RunningServer) -> None:
    with pgqueue.QPublisher(server.url) as pub:
        pub.create_topic("quiet")
        pub.publish("quiet", "only one")
    with pgqueue.QSubscriber(server.url) as sub:
        frames = list(sub.stream("quiet", start="earliest", timeout=1.0))
    assert [f["type"] for f in frames] == ["welcome", "message"]
    assert frames[1]["payload"] == "only one"


STREAM_SCRIPT = """
import sys
import pgqueue

for frame in pgqueue.QSubscriber(sys.argv[1]).stream("live"):
    print(frame["type"], flush=True)
print("after the loop", flush=True)
sys.stdin.read()  # alive until the test has seen the server notice the closed socket
"""


async def test_ctrl_c_ends_a_stream_quietly_and_closes_the_socket(
    server: RunningServer, database_dsn: str
) -> None:
    async with pgqueue.connect(database_dsn) as q:
        await q.create_topic("live")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        STREAM_SCRIPT,
        server.url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert (await within(proc.stdout.readline(), 30)).strip() == b"welcome"
        async with pgqueue.connect(database_dsn) as q:
            [subscriber] = await q.list_subscribers("live")
            assert subscriber.ephemeral  # removed by the server when the socket closes
            proc.send_signal(signal.SIGINT)
            assert (await within(proc.stdout.readline(), 30)).strip() == b"after the loop"
            for _ in range(500):
                if not await q.list_subscribers("live"):
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the stream's socket stayed open after Ctrl-C")
        proc.stdin.close()
        _, stderr = await within(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode()
