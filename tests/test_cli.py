"""Every `pgqueue` command, run as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import pgqueue
from tests.services.conftest import free_port
from tests.support import within

PGQUEUE = [sys.executable, "-m", "pgqueue.cli"]


async def cli_json(*args: str, dsn: str) -> Any:
    """A command's standard output, parsed (its notes on stderr stay out of it)."""
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        *PGQUEUE,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await within(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    return json.loads(stdout)


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
    assert "dry run: nothing changed" in dry
    async with pgqueue.connect(dsn) as q:
        [s] = await q.subscriber_stats("orders", "billing")
        assert s.position == 4
    assert "reset 1 subscriber(s)" in await cli(
        "reset", "orders", "--subscriber", "billing", "--to", "2", "--execute", dsn=dsn
    )
    async with pgqueue.connect(dsn) as q:
        [s] = await q.subscriber_stats("orders", "billing")
        assert s.position == 1

    assert "deleted subscriber billing" in await cli(
        "subscribers", "delete", "orders", "billing", dsn=dsn
    )
    assert "deleted topic orders" in await cli("topics", "delete", "orders", "--yes", dsn=dsn)


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
    assert "purged 1" in await cli("dlq", "purge", "jobs", "w", "--yes", dsn=database_dsn)


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
    await send("periodic chat 0.1 tick")
    await expect('"tick"')
    await send("stop")
    await expect("stopped 2 background task(s)")
    await send("stats")
    await expect("chat/alice")
    await send("frobnicate")
    await expect("unknown command")
    await send("pub nope x")
    await expect("does not exist")
    await send("periodic chat -1 tick")
    await expect("error: SECONDS is a number of at least 0.1, got '-1'")
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


# -- a CLI that is safe and scriptable (issue 10) --------------------------------------------


async def _orders_with_billing(dsn: str, *, consumed: int = 3) -> None:
    async with pgqueue.connect(dsn) as q:
        await q.create_topic("orders")
        await q.subscribe("orders", "billing", start="earliest")
        await q.subscribe("orders", "audit", start="earliest")
        await q.publish_many("orders", [{"n": n} for n in range(5)])
        if consumed:
            await q.ack("orders", "billing", await q.claim("orders", "billing", consumed))


async def _positions(dsn: str) -> dict[str, int]:
    async with pgqueue.connect(dsn) as q:
        return {s.subscriber: s.position for s in await q.subscriber_stats("orders")}


async def test_reset_previews_unless_execute(database_dsn: str) -> None:
    dsn = database_dsn
    await _orders_with_billing(dsn)
    preview = await cli("reset", "orders", "--to", "earliest", dsn=dsn)
    assert "old position" in preview and "new position" in preview
    assert "dry run: nothing changed; add --execute to apply" in preview
    assert await _positions(dsn) == {"audit": 0, "billing": 3}

    applied = await cli("reset", "orders", "--to", "latest", "--execute", dsn=dsn)
    assert "reset 2 subscriber(s)" in applied
    assert await _positions(dsn) == {"audit": 5, "billing": 5}


async def _run_at_terminal(*args: str, dsn: str, answer: str) -> tuple[int, str]:
    """Runs the CLI with a pseudo-terminal as stdin and types `answer` at its prompt."""
    import pty

    leader, follower = pty.openpty()
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        *PGQUEUE,
        *args,
        env=env,
        stdin=follower,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(follower)
    try:
        assert proc.stderr is not None
        prompt = b""
        while b"[y/N]" not in prompt:
            chunk = await within(proc.stderr.read(200), 30)
            assert chunk, f"no prompt, got {prompt!r}"
            prompt += chunk
        os.write(leader, f"{answer}\n".encode())
        stdout, stderr = await within(proc.communicate(), 30)
    finally:
        os.close(leader)
    text = prompt.decode() + stderr.decode() + stdout.decode()
    assert "Traceback" not in text
    assert proc.returncode is not None
    return proc.returncode, text


async def test_destructive_commands_ask_first_or_take_yes(database_dsn: str) -> None:
    dsn = database_dsn
    await _orders_with_billing(dsn)
    async with pgqueue.connect(dsn) as q:
        await q.subscribe("orders", "w", start="earliest", max_attempts=1)
        for message in await q.claim("orders", "w", 2):
            await message.nack(error="boom")

    # No terminal to ask at and no --yes: refused in one line, nothing changed.
    refused = await cli("topics", "delete", "orders", dsn=dsn, ok=False)
    assert refused.strip().startswith("error:") and len(refused.strip().splitlines()) == 1
    assert "--yes" in refused
    refused = await cli("dlq", "purge", "orders", "w", dsn=dsn, ok=False)
    assert "--yes" in refused and len(refused.strip().splitlines()) == 1
    async with pgqueue.connect(dsn) as q:
        assert len(await q.dead_letters("orders", "w")) == 2
        assert await q.list_topics("orders")

    # At a terminal: the question says what would go; "n" keeps it, "y" goes on.
    code, text = await _run_at_terminal("topics", "delete", "orders", dsn=dsn, answer="n")
    assert code == 1 and "5 message(s) and 3 subscriber(s)" in text and "cancelled" in text
    code, text = await _run_at_terminal("dlq", "purge", "orders", "w", dsn=dsn, answer="y")
    assert code == 0 and "purged 2 dead letter(s)" in text
    async with pgqueue.connect(dsn) as q:
        assert await q.dead_letters("orders", "w") == []
        assert await q.list_topics("orders")

    assert "deleted topic orders" in await cli("topics", "delete", "orders", "-y", dsn=dsn)
    async with pgqueue.connect(dsn) as q:
        assert await q.list_topics("orders") == []


async def test_read_commands_print_json(database_dsn: str) -> None:
    dsn = database_dsn
    await _orders_with_billing(dsn)
    async with pgqueue.connect(dsn) as q:
        await q.subscribe("orders", "w", start="earliest", max_attempts=1)
        [message] = await q.claim("orders", "w", 1)
        await message.nack(error="boom")

    topics = await cli_json("topics", "list", "--json", dsn=dsn)
    assert [(t["topic"], t["messages"], t["subscribers"]) for t in topics] == [("orders", 5, 3)]
    subscribers = await cli_json("subscribers", "list", "orders", "--json", dsn=dsn)
    assert {s["subscriber"]: s["position"] for s in subscribers} == {
        "audit": 0,
        "billing": 3,
        "w": 1,  # past its dead letter
    }
    assert {"lag_seconds", "in_flight", "expired"} <= set(subscribers[0])
    stats = await cli_json("stats", "--json", dsn=dsn)
    assert stats["topics"][0]["last_offset"] == 5 and len(stats["subscribers"]) == 3
    [letter] = await cli_json("dlq", "list", "orders", "w", "--json", dsn=dsn)
    assert (letter["offset"], letter["last_error"], letter["payload"]) == (1, "boom", {"n": 0})
    described = await cli_json("subscribers", "describe", "orders", "billing", "--json", dsn=dsn)
    assert described["subscriber"]["name"] == "billing" and described["stats"]["position"] == 3
    preview = await cli_json("reset", "orders", "--to", "earliest", "--json", dsn=dsn)
    assert {(r["subscriber"], r["new_position"], r["applied"]) for r in preview} == {
        ("audit", 0, False),
        ("billing", 0, False),
        ("w", 0, False),
    }
    tailed = await cli("tail", "orders", "--from", "4", "--json", dsn=dsn)
    assert [json.loads(line)["payload"] for line in tailed.splitlines()] == [{"n": 3}, {"n": 4}]
    retention = await cli_json("topics", "retention", "--json", dsn=dsn)
    assert retention == []


async def test_top_once_shows_topics_and_subscribers(database_dsn: str) -> None:
    dsn = database_dsn
    await _orders_with_billing(dsn)
    async with pgqueue.connect(dsn) as q:
        await q.claim("orders", "audit", 2)
    view = await cli("top", "--once", "--interval", "0.1", dsn=dsn)
    for fragment in ("topics", "publish/s", "subscribers", "lag age", "in flight", "ack/s"):
        assert fragment in view, view
    rows = {line.split()[1]: line.split() for line in view.splitlines() if "orders" in line}
    assert rows["billing"][2:4] == ["3", "2"]  # position, lag
    assert rows["audit"][2:4] == ["0", "5"] and rows["audit"][5] == "2"  # 2 in flight
    assert "error:" in await cli("top", "--interval", "0", dsn=dsn, ok=False)


async def test_top_ends_quietly_on_ctrl_c(database_dsn: str) -> None:
    await _orders_with_billing(database_dsn)
    env = {**os.environ, "PGQUEUE_DATABASE_URL": database_dsn, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        *PGQUEUE,
        "top",
        "--interval",
        "0.2",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    assert "Ctrl-C to quit" in (await within(proc.stderr.readline(), 30)).decode()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = await within(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert "billing" in stdout.decode()  # the last view stays on the screen


async def test_subscribers_describe_groups_leases_per_consumer(database_dsn: str) -> None:
    dsn = database_dsn
    await _orders_with_billing(dsn, consumed=0)
    async with pgqueue.connect(dsn) as q:
        await q.claim("orders", "billing", 2, consumer="worker-a")
        await q.claim("orders", "billing", 1, consumer="worker-b", lease=0.001)
        for _ in range(1000):  # the 1 ms lease has to run out
            if (await q.subscriber_stats("orders", "billing"))[0].expired:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the lease never expired")
    text = await cli("subscribers", "describe", "orders", "billing", dsn=dsn)
    assert "max_attempts" in text and "lag_seconds" in text
    assert "consumer worker-a: 2 lease(s), 0 expired" in text
    assert "consumer worker-b: 1 lease(s), 1 expired" in text
    assert "leased since" in text and "lease ends" in text
    described = await cli_json("subscribers", "describe", "orders", "billing", "--json", dsn=dsn)
    assert [
        (c["consumer"], [(lease["offset"], lease["expired"]) for lease in c["leases"]])
        for c in described["consumers"]
    ] == [("worker-a", [(1, False), (2, False)]), ("worker-b", [(3, True)])]
    assert (described["stats"]["in_flight"], described["stats"]["expired"]) == (2, 1)
    missing = await cli("subscribers", "describe", "orders", "nobody", dsn=dsn, ok=False)
    assert missing.strip() == "error: subscriber 'nobody' of 'orders' does not exist"


async def test_topics_create_exist_ok(database_dsn: str) -> None:
    dsn = database_dsn
    assert "created topic t" in await cli("topics", "create", "t", dsn=dsn)
    assert "already exists" in await cli("topics", "create", "t", dsn=dsn, ok=False)
    assert "topic t already exists" in await cli("topics", "create", "t", "--exist-ok", dsn=dsn)


async def test_bad_command_lines_are_one_line_errors(database_dsn: str) -> None:
    for args in (
        ("consume", "t", "s", "--batch", "0"),
        ("reset",),
        ("nonsense",),
        ("top", "--interval", "x"),
        ("publish",),
        ("publish", "t", "--file", "/nonexistent/messages.jsonl"),
        ("tail", "t", "--from", "0"),
        ("consume", "t", "s", "--max", "-1"),
    ):
        proc = await asyncio.create_subprocess_exec(
            *PGQUEUE,
            *args,
            env={**os.environ, "PGQUEUE_DATABASE_URL": database_dsn, "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await within(proc.communicate(), 30)
        assert proc.returncode == 2, (args, stderr.decode())
        lines = stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, lines)
        assert stdout == b""


async def test_refusals_are_one_line_errors(database_dsn: str) -> None:
    dsn = database_dsn
    await cli("topics", "create", "t", dsn=dsn)
    for args, message in (
        (("tail", "nope"), "error: topic 'nope' does not exist"),
        (("top", "nope", "--once"), "error: topic 'nope' does not exist"),
        (
            ("topics", "create", "bad!name"),
            "error: invalid topic name 'bad!name' (names are 1-100 characters",
        ),
        (
            ("reset", "t", "--to", "99999999999999999999"),
            "error: offset 99999999999999999999 is out of range",
        ),
        (("stats", "--dsn", "not-a-url"), "error: bad database URL: invalid DSN"),
    ):
        text = await cli(*args, dsn=dsn, ok=False)
        assert len(text.strip().splitlines()) == 1 and text.startswith(message), (args, text)


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
    assert "billing" in await cli("reset", "orders", "--to", "2", "--execute", dsn=database_dsn)
    assert [s.position for s in await queue.list_subscribers("orders")] == [1]
