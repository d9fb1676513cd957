"""The `pgqueue` command: serve, migrate, and the queue from a terminal.

Every command but `serve` talks to PostgreSQL through the library (--dsn or
PGQUEUE_DATABASE_URL). Errors print as one line on stderr with exit status 1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import pgqueue
from pgqueue.settings import Settings

app = typer.Typer(
    help="pgqueue: a durable topic queue in PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="List, create and delete topics.", no_args_is_help=True)
subscribers_app = typer.Typer(help="List, create and delete subscribers.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: list, replay, purge.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(dlq_app, name="dlq")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

Dsn = Annotated[
    str | None,
    typer.Option(
        "--dsn", envvar="PGQUEUE_DATABASE_URL", help="PostgreSQL DSN.", show_default=False
    ),
]


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine, turning our errors into one line and Ctrl-C into a quiet exit."""
    try:
        return asyncio.run(coroutine)
    except pgqueue.PgQueueError as error:
        raise fail(str(error)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def with_queue(dsn: str | None, action: Callable[[pgqueue.Queue], Awaitable[T]]) -> T:
    if not dsn:
        raise fail("no database: pass --dsn or set PGQUEUE_DATABASE_URL")

    async def main() -> T:
        async with pgqueue.connect(dsn) as queue:
            return await action(queue)

    return run(main())


def table(rows: list[dict[str, Any]], *columns: str) -> None:
    grid = Table(*columns, box=None, header_style="bold")
    for row in rows:
        grid.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(grid)


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise fail(f"{what} is not JSON: {error}") from None


# -- serve and migrate ----------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8888).")] = None,
) -> None:
    """Run the combined server: REST and WebSocket at /, v1 under /v1, Swagger at /docs.

    With no PGQUEUE_DATABASE_URL, starts (and migrates) an embedded PostgreSQL whose data
    lives in PGQUEUE_EMBEDDED_PGDATA (default .pgqueue/pgdata), so it survives restarts.
    """
    import os
    import signal
    import sys

    from pgqueue import migrate as migrations
    from pgqueue.availability import wait_for_database
    from pgqueue.web.serve import log_to_stderr
    from pgqueue.web.serve import run as run_server

    log_to_stderr()
    settings = Settings()
    if settings.dsn() is None:
        from pgqueue import embedded

        pgdata = Path(settings.embedded_pgdata)
        err.print(f"starting embedded PostgreSQL in {pgdata}", highlight=False)
        superuser_dsn = embedded.start(pgdata)
        # Migrated by the superuser, served by the runtime role: the server never has
        # more rights than calling the API gives.
        os.environ["PGQUEUE_DATABASE_URL"] = migrations.as_role(
            superuser_dsn, migrations.RUNTIME_ROLE
        )
        migrate_dsn: str | None = superuser_dsn
        # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through Python
        # (not the default action) lets atexit stop the embedded server too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    else:
        migrate_dsn = settings.dsn()
    assert migrate_dsn is not None
    try:
        # Started beside its database (compose, a reboot): wait for it rather than exit.
        asyncio.run(wait_for_database(migrate_dsn, give_up_after=settings.connect_timeout))
    except pgqueue.PgQueueError as error:
        raise fail(str(error)) from None
    try:
        migrations.upgrade(migrate_dsn)
    except Exception as error:  # alembic raises many kinds; any of them stops us here
        raise fail(f"migration failed: {error}") from None
    run_server("pgqueue.web.combined:create_app", default_port=port or settings.port, host=host)


@app.command()
def migrate(
    dsn: Dsn = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply the schema migrations (alembic upgrade)."""
    from pgqueue import migrate as migrations

    if not dsn:
        raise fail("no database: pass --dsn or set PGQUEUE_DATABASE_URL")
    try:
        migrations.upgrade(dsn, revision)
    except Exception as error:  # alembic raises many kinds; any of them is one line here
        raise fail(f"migration failed: {error}") from None
    out.print(f"migrated to {revision}")
    password = Settings().runtime_password
    if password is not None:
        asyncio.run(migrations.set_runtime_password(dsn, password.get_secret_value()))
        out.print(f"{migrations.RUNTIME_ROLE} may log in with PGQUEUE_RUNTIME_PASSWORD")


# -- topics ---------------------------------------------------------------------------------


@topics_app.command("list")
def topics_list(dsn: Dsn = None) -> None:
    """Topics with their message counts."""

    async def action(q: pgqueue.Queue) -> None:
        stats = {s.topic: s for s in await q.topic_stats()}
        rows = [
            {
                "topic": t.name,
                "messages": stats[t.name].messages,
                "last offset": stats[t.name].last_offset,
                "description": t.description,
            }
            for t in await q.list_topics()
        ]
        table(rows, "topic", "messages", "last offset", "description")

    with_queue(dsn, action)


@topics_app.command("create")
def topics_create(
    name: str,
    dsn: Dsn = None,
    description: Annotated[str, typer.Option()] = "",
    retention_count: Annotated[
        int | None, typer.Option(min=1, help="Keep about this many newest messages.")
    ] = None,
    retention_age: Annotated[
        float | None, typer.Option(min=0.001, help="Keep messages for this many seconds.")
    ] = None,
    segment_size: Annotated[
        int | None,
        typer.Option(min=10, help="Offsets per log segment, the unit retention removes."),
    ] = None,
) -> None:
    """Create a topic."""
    topic = with_queue(
        dsn,
        lambda q: q.create_topic(
            name,
            description=description,
            retention_max_count=retention_count,
            retention_max_age=timedelta(seconds=retention_age) if retention_age else None,
            segment_size=segment_size,
        ),
    )
    out.print(f"created topic {topic.name}")


@topics_app.command("retention")
def topics_retention(
    name: Annotated[str | None, typer.Argument(help="One topic (default: all).")] = None,
    dsn: Dsn = None,
) -> None:
    """Run a retention pass now: remove the log segments past each topic's retention."""
    results = with_queue(dsn, lambda q: q.enforce_retention(name))
    table(
        [vars(r) for r in results],
        "topic",
        "segments_removed",
        "messages_removed",
        "first_offset",
        "subscribers_moved",
    )


@topics_app.command("delete")
def topics_delete(name: str, dsn: Dsn = None) -> None:
    """Delete a topic with its messages and subscribers."""
    with_queue(dsn, lambda q: q.delete_topic(name))
    out.print(f"deleted topic {name}")


# -- publishing and reading -----------------------------------------------------------------


@app.command()
def publish(
    topic: str,
    payload: Annotated[str | None, typer.Argument(help="JSON; plain text if not JSON.")] = None,
    dsn: Dsn = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="k=v")] = None,
    key: Annotated[str | None, typer.Option()] = None,
    file: Annotated[Path | None, typer.Option(help="One JSON payload per line.")] = None,
    count: Annotated[int, typer.Option(min=1, help="Publish the payload this many times.")] = 1,
) -> None:
    """Publish a message, a repeated message, or a file of them (with a progress bar)."""
    headers = {}
    for item in header or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise fail(f"a header is name=value, got {item!r}")
        headers[name] = value
    if file is not None:
        lines = [line for line in file.read_text().splitlines() if line.strip()]
        payloads = [parse_json(line, f"{file} line {i + 1}") for i, line in enumerate(lines)]
    elif payload is not None:
        try:
            value = json.loads(payload)
        except ValueError:
            value = payload
        payloads = [value] * count
    else:
        raise fail("give a payload or --file")

    async def action(q: pgqueue.Queue) -> list[int]:
        if len(payloads) == 1:
            return [await q.publish(topic, payloads[0], headers=headers or None, key=key)]
        offsets: list[int] = []
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task(f"publishing to {topic}", total=len(payloads))
            for start in range(0, len(payloads), 500):
                chunk = [
                    {"payload": p, "headers": headers or None, "key": key}
                    for p in payloads[start : start + 500]
                ]
                offsets += await q.publish_many(topic, chunk)
                progress.advance(task, len(chunk))
        return offsets

    offsets = with_queue(dsn, action)
    if len(offsets) == 1:
        out.print(f"published {topic} offset {offsets[0]}")
    else:
        out.print(
            f"published {len(offsets)} messages to {topic}, offsets {offsets[0]}-{offsets[-1]}"
        )


def _show(message: Any) -> None:
    # offset<TAB>JSON, unstyled, so it pipes into other tools
    typer.echo(f"{message.offset}\t{json.dumps(message.payload, ensure_ascii=False)}")


@app.command()
def tail(
    topic: str,
    dsn: Dsn = None,
    from_offset: Annotated[int | None, typer.Option("--from", help="First offset.")] = None,
    last: Annotated[int, typer.Option(help="Without --from: the last N messages.")] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones.")] = False,
) -> None:
    """Print messages of a topic without consuming them."""

    async def action(q: pgqueue.Queue) -> None:
        [stats] = await q.topic_stats(topic)
        position = from_offset if from_offset is not None else max(1, stats.last_offset - last + 1)
        with q.listener.waiter(topic) as wake:
            while True:
                wake.clear()
                for message in await q.read(topic, from_offset=position, limit=1000):
                    _show(message)
                    position = message.offset + 1
                if not follow:
                    return
                await asyncio.wait(
                    [asyncio.ensure_future(wake.wait())], timeout=q.settings.poll_interval
                )

    with_queue(dsn, action)


@app.command()
def consume(
    topic: str,
    subscriber: str,
    dsn: Dsn = None,
    batch: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    limit: Annotated[int | None, typer.Option("--max", help="Stop after N messages.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Wait for more.")] = False,
) -> None:
    """Claim, print and ack messages for a subscriber."""

    async def action(q: pgqueue.Queue) -> int:
        done = 0
        while limit is None or done < limit:
            want = batch if limit is None else min(batch, limit - done)
            messages = await q.claim(topic, subscriber, want)
            if not messages:
                if not follow:
                    break
                await asyncio.sleep(await q.idle_wait(topic, subscriber, 0.5))
                continue
            for message in messages:
                _show(message)
            await q.ack(topic, subscriber, messages, strict=True)
            done += len(messages)
        return done

    done = with_queue(dsn, action)
    err.print(f"consumed {done} message(s)", highlight=False)


# -- subscribers, reset, dead letters, stats ------------------------------------------------


@subscribers_app.command("list")
def subscribers_list(
    topic: Annotated[str | None, typer.Argument()] = None, dsn: Dsn = None
) -> None:
    """Subscribers with their positions and lag."""
    stats = with_queue(dsn, lambda q: q.subscriber_stats(topic))
    table(
        [vars(s) for s in stats],
        "topic",
        "subscriber",
        "subscriber_id",
        "position",
        "lag",
        "in_flight",
        "retrying",
        "dead",
    )


@subscribers_app.command("create")
def subscribers_create(
    topic: str,
    name: str,
    dsn: Dsn = None,
    start: Annotated[str, typer.Option(help="earliest, latest, an offset or a time.")] = "latest",
    filter: Annotated[str | None, typer.Option(help="JSON filter.")] = None,
    max_attempts: Annotated[int, typer.Option(min=1, max=1000)] = 5,
) -> None:
    """Create a subscriber."""
    parsed = parse_json(filter, "--filter") if filter else None
    created = with_queue(
        dsn,
        lambda q: q.subscribe(
            topic,
            name,
            start=start,
            filter=parsed,
            max_attempts=max_attempts,
        ),
    )
    out.print(f"created subscriber {created.name} of {topic} at position {created.position}")


@subscribers_app.command("delete")
def subscribers_delete(topic: str, name: str, dsn: Dsn = None) -> None:
    """Delete a subscriber."""
    with_queue(dsn, lambda q: q.unsubscribe(topic, name))
    out.print(f"deleted subscriber {name} of {topic}")


@app.command()
def reset(
    topic: str,
    to: Annotated[str, typer.Option(help="offset, earliest, latest, ISO time, 5m, +N or -N.")],
    dsn: Dsn = None,
    subscriber: Annotated[str | None, typer.Option(help="Default: every subscriber.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, change nothing.")] = False,
) -> None:
    """Move subscribers to a new position, online."""
    # Text as given: the library reads offsets from ASCII digits only (not "١٢").
    results = with_queue(
        dsn, lambda q: q.reset(topic, to=to, subscriber=subscriber, dry_run=dry_run)
    )
    table([vars(r) for r in results], "subscriber", "old_position", "new_position", "applied")


@dlq_app.command("list")
def dlq_list(topic: str, subscriber: str, dsn: Dsn = None) -> None:
    """Dead letters of a subscriber."""
    letters = with_queue(dsn, lambda q: q.dead_letters(topic, subscriber, limit=10_000))
    table(
        [{**vars(d), "payload": json.dumps(d.payload)} for d in letters],
        "offset",
        "attempts",
        "last_error",
        "dead_at",
        "payload",
    )


@dlq_app.command("replay")
def dlq_replay(
    topic: str,
    subscriber: str,
    dsn: Dsn = None,
    first: Annotated[int | None, typer.Option()] = None,
    last: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Deliver dead letters again (all, or the offsets first..last)."""
    count = with_queue(
        dsn, lambda q: q.replay_dead_letters(topic, subscriber, first=first, last=last)
    )
    out.print(f"replayed {count} dead letter(s)")


@dlq_app.command("purge")
def dlq_purge(
    topic: str,
    subscriber: str,
    dsn: Dsn = None,
    first: Annotated[int | None, typer.Option()] = None,
    last: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Delete dead letters (all, or the offsets first..last)."""
    count = with_queue(
        dsn, lambda q: q.purge_dead_letters(topic, subscriber, first=first, last=last)
    )
    out.print(f"purged {count} dead letter(s)")


@app.command()
def stats(dsn: Dsn = None) -> None:
    """Per topic and per subscriber figures."""

    async def action(q: pgqueue.Queue) -> tuple[list[Any], list[Any]]:
        return await q.topic_stats(), await q.subscriber_stats()

    topics, subscribers = with_queue(dsn, action)
    table(
        [vars(t) for t in topics],
        "topic",
        "messages",
        "first_offset",
        "last_offset",
        "bytes",
        "pending",
        "subscribers",
    )
    out.print()
    table(
        [vars(s) for s in subscribers],
        "topic",
        "subscriber",
        "position",
        "lag",
        "in_flight",
        "retrying",
        "dead",
    )


@app.command()
def shell(dsn: Dsn = None) -> None:
    """An interactive prompt: pub, batch, periodic, sub, unsub, listen, stop, stats, exit."""
    from pgqueue.shell import Shell

    if not dsn:
        raise fail("no database: pass --dsn or set PGQUEUE_DATABASE_URL")
    run(Shell(dsn, out).run())


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """The benchmarks (`python -m bench` of a source checkout): `pgqueue bench all --dsn URL`,
    `pgqueue bench r1 --help`, ..."""
    import subprocess
    import sys

    # bench/ is not installed with the package: it lives beside it in the source tree.
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "__main__.py").is_file():
        raise fail(f"no benchmarks here: bench/ is in the source checkout, not under {root}")
    raise typer.Exit(subprocess.call([sys.executable, "-m", "bench", *ctx.args], cwd=root))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
