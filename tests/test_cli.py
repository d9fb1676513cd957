"""Every `pgqueue` command, run as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

import pgqueue
from tests.services.conftest import free_port
from tests.support import within

PGQUEUE = [sys.executable, "-m", "pgqueue.cli"]


async def cli(*args: str, dsn: str | None, ok: bool = True, stdin: str | None = None) -> str:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("PGQUEUE_DATABASE_URL", None)
    if dsn:
        env["PGQUEUE_DATABASE_URL"] = dsn
    proc = await asyncio.create_subprocess_exec(
        *PGQUEUE,
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await within(proc.communicate(stdin.encode() if stdin else None), 60)
    text = stdout.decode() + stderr.decode()
    assert (proc.returncode == 0) == ok, text
    assert "Traceback" not in text
    return text


async def test_migrate_topics_publish_tail_consume(empty_database_dsn: str, tmp_path: Path) -> None:
    dsn = empty_database_dsn
    assert "migrated to head" in await cli("migrate", dsn=dsn)
    assert "created topic orders" in await cli(
        "topics", "create", "orders", "--description", "demo", dsn=dsn
    )
    assert "created subscriber billing" in await cli(
        "subscribers", "create", "orders", "billing", "--start", "earliest", dsn=dsn
    )
    assert "offset 1" in await cli("publish", "orders", '{"id": 1}', "-H", "type=x", dsn=dsn)
    assert "published 3 messages" in await cli("publish", "orders", "hi", "--count", "3", dsn=dsn)
    lines = tmp_path / "messages.jsonl"
    lines.write_text('{"n": 1}\n{"n": 2}\n')
    assert "offsets 5-6" in await cli("publish", "orders", "--file", str(lines), dsn=dsn)

    listed = await cli("topics", "list", dsn=dsn)
    assert "orders" in listed and "6" in listed
    tailed = await cli("tail", "orders", "--from", "5", dsn=dsn)
    assert tailed.splitlines() == ['5\t{"n": 1}', '6\t{"n": 2}']

    consumed = await cli("consume", "orders", "billing", "--max", "4", dsn=dsn)
    assert '1\t{"id": 1}' in consumed and "consumed 4 message(s)" in consumed
    subscribers = await cli("subscribers", "list", "orders", dsn=dsn)
    assert "billing" in subscribers
    stats = await cli("stats", dsn=dsn)
    assert "orders" in stats and "billing" in stats

    dry = await cli("reset", "orders", "--to", "earliest", "--dry-run", dsn=dsn)
    assert "False" in dry
    async with pgqueue.connect(dsn) as q:
        [s] = await q.subscriber_stats("orders", "billing")
        assert s.position == 4
    assert "True" in await cli("reset", "orders", "--subscriber", "billing", "--to", "2", dsn=dsn)
    async with pgqueue.connect(dsn) as q:
        [s] = await q.subscriber_stats("orders", "billing")
        assert s.position == 1

    assert "deleted subscriber billing" in await cli(
        "subscribers", "delete", "orders", "billing", dsn=dsn
    )
    assert "deleted topic orders" in await cli("topics", "delete", "orders", dsn=dsn)


async def test_dead_letter_commands(database_dsn: str) -> None:
    async with pgqueue.connect(database_dsn) as q:
        await q.create_topic("jobs")
        await q.subscribe("jobs", "w", start="earliest", max_attempts=1)
        await q.publish_many("jobs", ["a", "b"])
        for message in await q.claim("jobs", "w", 2):
            await message.nack(error="boom")
    listed = await cli("dlq", "list", "jobs", "w", dsn=database_dsn)
    assert "boom" in listed and '"a"' in listed
    assert "replayed 1" in await cli(
        "dlq", "replay", "jobs", "w", "--first", "1", "--last", "1", dsn=database_dsn
    )
    assert "purged 1" in await cli("dlq", "purge", "jobs", "w", dsn=database_dsn)


async def test_errors_are_one_line(database_dsn: str) -> None:
    text = await cli("publish", "nope", "1", dsn=database_dsn, ok=False)
    assert text.strip() == "error: topic 'nope' does not exist"
    assert "no database" in await cli("stats", dsn=None, ok=False)
    assert "not JSON" in await cli(
        "subscribers", "create", "t", "s", "--filter", "{", dsn=database_dsn, ok=False
    )
    assert "error:" in await cli("reset", "nope", "--to", "whenever", dsn=database_dsn, ok=False)


async def test_shell(database_dsn: str) -> None:
    async with pgqueue.connect(database_dsn) as q:
        await q.create_topic("chat")
    env = {**os.environ, "PGQUEUE_DATABASE_URL": database_dsn}
    proc = await asyncio.create_subprocess_exec(
        *PGQUEUE,
        "shell",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdin is not None and proc.stdout is not None

    async def send(line: str) -> None:
        proc.stdin.write(f"{line}\n".encode())  # type: ignore[union-attr]
        await proc.stdin.drain()  # type: ignore[union-attr]

    async def expect(fragment: str) -> str:
        while True:
            line = (await within(proc.stdout.readline(), 20)).decode()  # type: ignore[union-attr]
            assert line, f"shell ended before printing {fragment!r}"
            assert "Traceback" not in line
            if fragment in line:
                return line

    await send("sub chat alice earliest")
    await expect("subscribed alice to chat")
    await send("pub chat hello")
    await expect("published chat offset 1")
    await send("batch chat 3 note")
    await expect("published 3 to chat, offsets 2-4")
    await send("listen chat alice")
    await expect('[chat/alice #4] "note 3"')
    await send("periodic chat 0.05 tick")
    await expect('"tick"')
    await send("stop")
    await expect("stopped 2 background task(s)")
    await send("stats")
    await expect("chat/alice")
    await send("frobnicate")
    await expect("unknown command")
    await send("pub nope x")
    await expect("does not exist")
    await send("unsub chat alice")
    await expect("unsubscribed alice from chat")
    await send("exit")
    assert await within(proc.wait(), 20) == 0


async def test_serve_runs_the_combined_server(database_dsn: str) -> None:
    port = free_port()
    env = {**os.environ, "PGQUEUE_DATABASE_URL": database_dsn}
    proc = await asyncio.create_subprocess_exec(
        *PGQUEUE,
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(300):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("pgqueue serve did not answer")
            assert (await http.get("/docs")).status_code == 200
            assert (await http.get("/v1/topics")).json() == []
            assert (await http.post("/topics", json={"name": "t"})).status_code == 201
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM as a conventional exit status.
        assert await within(proc.wait(), 20) in (0, -signal.SIGTERM)


async def test_the_services_run_separately_and_talk_through_postgres(database_dsn: str) -> None:
    import json as jsonlib

    import websockets

    ports = {"service_publish": free_port(), "service_subscribe": free_port()}
    procs = []
    for module, port in ports.items():
        env = {**os.environ, "PGQUEUE_DATABASE_URL": database_dsn, "PGQUEUE_PORT": str(port)}
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
    publish_url = f"http://127.0.0.1:{ports['service_publish']}"
    subscribe_url = f"127.0.0.1:{ports['service_subscribe']}"
    try:
        async with httpx.AsyncClient() as http:
            for url in (publish_url, f"http://{subscribe_url}"):
                for _ in range(300):
                    try:
                        if (await http.get(f"{url}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
                else:
                    pytest.fail(f"{url} did not answer")
            await http.post(f"{publish_url}/topics", json={"name": "split"})
            ws_url = f"ws://{subscribe_url}/ws/topics/split?subscriber=s&start=earliest"
            async with websockets.connect(ws_url) as ws:
                assert jsonlib.loads(await within(ws.recv()))["type"] == "welcome"
                await http.post(f"{publish_url}/topics/split/messages", json={"payload": "x"})
                message = jsonlib.loads(await within(ws.recv()))
                assert (message["type"], message["payload"]) == ("message", "x")
    finally:
        for proc in procs:
            proc.terminate()
            await within(proc.wait(), 20)


async def test_topic_retention_from_the_command_line(database_dsn: str) -> None:
    dsn = database_dsn
    created = await cli(
        "topics", "create", "logs", "--retention-count", "10", "--segment-size", "10", dsn=dsn
    )
    assert "created topic logs" in created
    assert "published 35 messages" in await cli("publish", "logs", "x", "--count", "35", dsn=dsn)
    out = await cli("topics", "retention", "logs", dsn=dsn)
    # Segments 0 and 1 (offsets 1-19) have 10 newer messages; segment 2 ends at 29 > 35 - 10.
    assert "logs" in out and "19" in out and "20" in out, out
    async with pgqueue.connect(dsn) as q:
        [topic] = await q.list_topics("logs")
        assert (topic.retention_max_count, topic.segment_size) == (10, 10)
        assert [m.offset for m in await q.read("logs", limit=1)] == [20]
    assert "logs" in await cli("topics", "retention", dsn=dsn)
    await cli("topics", "retention", "nope", dsn=dsn, ok=False)


async def test_bench_forwards_to_the_benchmarks() -> None:
    listed = await cli("bench", "--help", dsn=None)
    assert "r1c" in listed and "r7" in listed and "report" in listed
    assert "No such command" in await cli("bench", "r99", dsn=None, ok=False)


async def test_reset_reads_offsets_from_ascii_digits_only(
    queue: pgqueue.Queue, database_dsn: str
) -> None:
    """Finding 9 (issue 9): Arabic-Indic digits were read as an offset ("١" as 1)."""
    await queue.create_topic("orders")
    await queue.subscribe("orders", "billing")
    await queue.publish_many("orders", [1, 2, 3])
    refused = await cli("reset", "orders", "--to", "\u0661", dsn=database_dsn, ok=False)
    assert "not a position" in refused
    refused = await cli(
        "subscribers", "create", "orders", "s", "--start", "\u0661", dsn=database_dsn, ok=False
    )
    assert "not a position" in refused
    assert [s.position for s in await queue.list_subscribers("orders")] == [0]
    assert "billing" in await cli("reset", "orders", "--to", "2", dsn=database_dsn)
    assert [s.position for s in await queue.list_subscribers("orders")] == [1]
