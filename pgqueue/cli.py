"""The `pgqueue` command: serve, migrate, and the queue from a terminal.

Every command but `serve` talks to PostgreSQL through the library (--dsn or
PGQUEUE_DATABASE_URL). Errors print as one line on stderr: exit status 2 for a bad command
line, 1 for anything else. Read commands take --json; destructive ones ask first or take --yes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from rich.progress import Progress
from rich.text import Text

import pgqueue
from pgqueue.settings import Settings
from pgqueue.terminal import (
    confirm,
    err,
    out,
    per_consumer,
    print_description,
    print_json,
    record,
    say,
    show,
    table,
)

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

T = TypeVar("T")

Dsn = Annotated[
    str | None,
    typer.Option(
        "--dsn", envvar="PGQUEUE_DATABASE_URL", help="PostgreSQL DSN.", show_default=False
    ),
]


AsJson = Annotated[
    bool, typer.Option("--json", help="Print JSON (machine-readable) instead of a table.")
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def fail(message: str) -> typer.Exit:
    # One line, never wrapped: a database HINT joins the message instead of a second line.
    parts = (line.strip().removeprefix("HINT:").strip() for line in message.splitlines())
    text = Text.assemble(("error:", "red"), " ", "; ".join(p for p in parts if p))
    err.print(text, soft_wrap=True, highlight=False)
    return typer.Exit(1)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine, turning our errors into one line and Ctrl-C into a quiet exit."""
    try:
        return asyncio.run(coroutine)
    except pgqueue.PgQueueError as error:
        raise fail(str(error)) from None
    except asyncpg.ClientConfigurationError as error:  # a --dsn asyncpg cannot read
        raise fail(f"bad database URL: {error}") from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def database(dsn: str | None) -> str:
    """--dsn, PGQUEUE_DATABASE_URL, or the embedded server running from here (Settings.dsn)."""
    found = dsn or Settings().dsn()
    if not found:
        raise fail(
            "no database: pass --dsn, set PGQUEUE_DATABASE_URL, or run `pgqueue serve` "
            "in this directory for an embedded one"
        )
    return found


def with_queue(dsn: str | None, action: Callable[[pgqueue.Queue], Awaitable[T]]) -> T:
    dsn = database(dsn)

    async def main() -> T:
        async with pgqueue.connect(dsn) as queue:
            return await action(queue)

    return run(main())


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
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Serve a non-loopback address without tokens (everyone is admin).",
        ),
    ] = False,
) -> None:
    """Run the combined server: REST and WebSocket at /, v1 under /v1, Swagger at /docs.

    With no PGQUEUE_DATABASE_URL, starts (and migrates) an embedded PostgreSQL whose data
    lives in PGQUEUE_EMBEDDED_PGDATA (default .pgqueue/pgdata), so it survives restarts; it
    stops when the server exits, however it exits.
    Without PGQUEUE_API_TOKENS it serves loopback addresses only, unless --insecure.
    """
    from pgqueue import migrate as migrations
    from pgqueue.availability import wait_for_database
    from pgqueue.web.exposure import refusal
    from pgqueue.web.serve import log_to_stderr
    from pgqueue.web.serve import run as run_server

    log_to_stderr()
    settings = Settings()
    # Checked again (and warned about) where it binds; here before PostgreSQL starts for nothing.
    if reason := refusal(settings, host or settings.host, insecure=insecure):
        raise fail(reason)
    with ExitStack() as stack:
        if settings.database_url is None:
            migrate_dsn, runtime_dsn = _start_embedded(stack, settings)
            database_line = f"{runtime_dsn}\n              (`{_program()} dsn` prints it)"
        else:
            migrate_dsn = settings.database_url.get_secret_value()
            database_line = "PGQUEUE_DATABASE_URL"
        try:
            # Started beside its database (compose, a reboot): wait for it rather than exit.
            asyncio.run(wait_for_database(migrate_dsn, give_up_after=settings.connect_timeout))
        except pgqueue.PgQueueError as error:
            raise fail(str(error)) from None
        try:
            migrations.upgrade(migrate_dsn)
        except Exception as error:  # alembic raises many kinds; any of them stops us here
            raise fail(f"migration failed: {error}") from None
        url = f"http://{host or settings.host}:{port or settings.port}"
        run_server(
            "pgqueue.web.combined:create_app",
            default_port=port or settings.port,
            host=host,
            on_ready=lambda: _show_where(
                url, database_line, embedded=settings.database_url is None
            ),
            insecure=insecure,
        )


def _start_embedded(stack: ExitStack, settings: Settings) -> tuple[str, str]:
    """Starts the embedded PostgreSQL for `serve`, to be stopped with the stack; returns its
    superuser DSN (for migrating) and the runtime role's (for serving: the server never has
    more rights than calling the API gives)."""
    import os
    import signal
    import sys

    from pgqueue import embedded
    from pgqueue.migrate import RUNTIME_ROLE

    pgdata = Path(settings.embedded_pgdata)
    err.print(f"starting embedded PostgreSQL in {pgdata}", highlight=False)
    try:
        keeper = stack.enter_context(embedded.Keeper(pgdata))
        admin, runtime = keeper.dsn(embedded.ADMIN), keeper.dsn(RUNTIME_ROLE)
    except embedded.EmbeddedError as error:
        raise fail(str(error)) from None
    os.environ["PGQUEUE_DATABASE_URL"] = runtime
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through Python (not the
    # default action) stops PostgreSQL before we exit. A closed terminal (SIGHUP) gets the
    # same graceful shutdown. Killed instead, we leave the stopping to the keeper.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: signal.raise_signal(signal.SIGTERM))
    return admin, runtime


def _show_where(url: str, database: str, *, embedded: bool) -> None:
    """The block that ends the start-up: where everything is."""
    lines = [
        "",
        f"pgqueue is serving on {url}",
        f"  Swagger     {url}/docs",
        f"  dashboard   {url}/ui",
        f"  database    {database}",
    ]
    if embedded:
        lines.append(
            f"  psql        {_program()} psql   (--admin: as the superuser, for maintenance)"
        )
    lines += ["Ctrl-C stops it" + (" and the embedded PostgreSQL." if embedded else "."), ""]
    err.print("\n".join(lines), highlight=False, soft_wrap=True)


def _program() -> str:
    """How to run this command again: as it was run (run_all.sh runs .venv/bin/pgqueue,
    which may not be on PATH), else by its name."""
    import sys

    return sys.argv[0] if Path(sys.argv[0]).name == "pgqueue" else "pgqueue"


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


# -- the embedded database ------------------------------------------------------------------

Admin = Annotated[
    bool, typer.Option("--admin", help="As the superuser `postgres`, for maintenance.")
]


def _embedded_dsn(admin: bool) -> str:
    from pgqueue import embedded
    from pgqueue.migrate import RUNTIME_ROLE

    pgdata = Path(Settings().embedded_pgdata)
    found = embedded.dsn(pgdata, embedded.ADMIN if admin else RUNTIME_ROLE)
    if found is None:
        raise fail(
            f"no embedded PostgreSQL is running from {pgdata.resolve()}: start `pgqueue serve` "
            "in this directory (or set PGQUEUE_EMBEDDED_PGDATA)"
        )
    return found


@app.command("dsn")
def show_dsn(admin: Admin = False) -> None:
    """Print the DSN of the embedded PostgreSQL that `pgqueue serve` runs from this directory:
    the runtime role's, for applications (what the library and the CLI use here)."""
    typer.echo(_embedded_dsn(admin))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def psql(ctx: typer.Context, admin: Admin = False) -> None:
    """Open psql (shipped with the embedded extra) on the embedded PostgreSQL that `pgqueue
    serve` runs from this directory; other arguments go to psql: `pgqueue psql -c 'select 1'`."""
    import os

    from pgqueue import embedded

    dsn = _embedded_dsn(admin)
    program = str(embedded.bin_dir() / "psql")
    os.execv(program, [program, "--dbname", dsn, *ctx.args])


# -- topics ---------------------------------------------------------------------------------


@topics_app.command("list")
def topics_list(dsn: Dsn = None, as_json: AsJson = False) -> None:
    """Topics with their settings and message counts."""

    async def action(q: pgqueue.Queue) -> list[dict[str, Any]]:
        stats = {s.topic: s for s in await q.topic_stats()}
        return [
            {"topic": t.name, **record(t), **record(stats[t.name])}
            for t in await q.list_topics()
            if t.name in stats  # deleted between the two reads
        ]

    rows = with_queue(dsn, action)
    for row in rows:
        del row["name"]
    show(rows, as_json, "topic", "messages", "last_offset", "subscribers", "description")


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
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="An existing topic is not an error.")
    ] = False,
) -> None:
    """Create a topic."""

    async def action(q: pgqueue.Queue) -> tuple[pgqueue.Topic, bool]:
        existed = exist_ok and bool(await q.list_topics(name))
        created = await q.create_topic(
            name,
            description=description,
            retention_max_count=retention_count,
            retention_max_age=timedelta(seconds=retention_age) if retention_age else None,
            segment_size=segment_size,
            exist_ok=exist_ok,
        )
        return created, existed

    topic, existed = with_queue(dsn, action)
    out.print(f"topic {topic.name} already exists" if existed else f"created topic {topic.name}")


@topics_app.command("retention")
def topics_retention(
    name: Annotated[str | None, typer.Argument(help="One topic (default: all).")] = None,
    dsn: Dsn = None,
    as_json: AsJson = False,
) -> None:
    """Run a retention pass now: remove the log segments past each topic's retention."""
    results = with_queue(dsn, lambda q: q.enforce_retention(name))
    show(
        [record(r) for r in results],
        as_json,
        "topic",
        "segments_removed",
        "messages_removed",
        "first_offset",
        "subscribers_moved",
    )


@topics_app.command("delete")
def topics_delete(name: str, dsn: Dsn = None, yes: Yes = False) -> None:
    """Delete a topic with its messages and subscribers (asks first unless --yes)."""
    if not yes and sys.stdin.isatty():
        found = with_queue(dsn, lambda q: q.topic_stats(name))
        if not found:
            raise fail(f"topic {name!r} does not exist")
        [t] = found
        question = (
            f"Delete topic {name!r} with its {t.messages} message(s) and "
            f"{t.subscribers} subscriber(s)?"
        )
    else:
        question = f"Delete topic {name!r} with its messages and subscribers?"
    confirm(question, yes)
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
    file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, readable=True, help="One JSON per line."),
    ] = None,
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


def _show(message: Any, as_json: bool) -> None:
    if as_json:  # JSON Lines: one object per message, every field
        print_json(record(message))
    else:  # offset<TAB>JSON, unstyled, so it pipes into other tools
        typer.echo(f"{message.offset}\t{json.dumps(message.payload, ensure_ascii=False)}")


@app.command()
def tail(
    topic: str,
    dsn: Dsn = None,
    from_offset: Annotated[int | None, typer.Option("--from", min=1, help="First offset.")] = None,
    last: Annotated[int, typer.Option(min=1, help="Without --from: the last N messages.")] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print messages of a topic without consuming them."""

    async def action(q: pgqueue.Queue) -> None:
        found = await q.topic_stats(topic)
        if not found:
            raise pgqueue.TopicNotFound(f"topic {topic!r} does not exist")
        [stats] = found
        position = from_offset if from_offset is not None else max(1, stats.last_offset - last + 1)
        with q.listener.waiter(topic) as wake:
            while True:
                wake.clear()
                for message in await q.read(topic, from_offset=position, limit=1000):
                    _show(message, as_json)
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
    limit: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after N messages.")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Wait for more.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
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
                _show(message, as_json)
            await q.ack(topic, subscriber, messages, strict=True)
            done += len(messages)
        return done

    done = with_queue(dsn, action)
    err.print(f"consumed {done} message(s)", highlight=False)


# -- subscribers, reset, dead letters, stats ------------------------------------------------


@subscribers_app.command("list")
def subscribers_list(
    topic: Annotated[str | None, typer.Argument()] = None,
    dsn: Dsn = None,
    as_json: AsJson = False,
) -> None:
    """Subscribers with their positions and lag."""
    stats = with_queue(dsn, lambda q: q.subscriber_stats(topic))
    show(
        [record(s) for s in stats],
        as_json,
        "topic",
        "subscriber",
        "subscriber_id",
        "position",
        "lag",
        "lag_seconds",
        "in_flight",
        "expired",
        "retrying",
        "dead",
    )


@subscribers_app.command("describe")
def subscribers_describe(topic: str, name: str, dsn: Dsn = None, as_json: AsJson = False) -> None:
    """A subscriber's settings, figures and leases, grouped per consumer."""

    async def action(q: pgqueue.Queue) -> dict[str, Any]:
        found = await q.subscriber_stats(topic, name)
        if not found:
            raise pgqueue.SubscriberNotFound(f"subscriber {name!r} of {topic!r} does not exist")
        settings = [s for s in await q.list_subscribers(topic) if s.name == name]
        if not settings:  # deleted a moment ago
            raise pgqueue.SubscriberNotFound(f"subscriber {name!r} of {topic!r} does not exist")
        return {
            "subscriber": record(settings[0]),
            "stats": record(found[0]),
            "consumers": per_consumer(await q.leases(topic, name)),
        }

    described = with_queue(dsn, action)
    if as_json:
        print_json(described)
    else:
        print_description(described)


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
    execute: Annotated[
        bool,
        typer.Option(
            "--execute/--dry-run",
            help="Apply the reset. Without --execute it is a dry run that changes nothing.",
        ),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Move subscribers to a new position, online: a preview unless --execute."""
    # Text as given: the library reads offsets from ASCII digits only (not "١٢").
    results = with_queue(
        dsn, lambda q: q.reset(topic, to=to, subscriber=subscriber, dry_run=not execute)
    )
    rows = [
        {**record(r), "old position": r.old_position, "new position": r.new_position}
        for r in results
    ]
    if as_json:
        print_json([record(r) for r in results])
    else:
        table(rows, "subscriber", "old position", "new position")
    if execute:
        say(f"reset {sum(r.applied for r in results)} subscriber(s)")
    else:
        say("dry run: nothing changed; add --execute to apply")


@dlq_app.command("list")
def dlq_list(topic: str, subscriber: str, dsn: Dsn = None, as_json: AsJson = False) -> None:
    """Dead letters of a subscriber."""
    letters = with_queue(dsn, lambda q: q.dead_letters(topic, subscriber, limit=10_000))
    if as_json:
        print_json([record(d) for d in letters])
        return
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
    yes: Yes = False,
) -> None:
    """Delete dead letters (all, or the offsets first..last; asks first unless --yes)."""
    which = "" if first is None and last is None else f" at offsets {first or 1}..{last or 'end'}"
    confirm(f"Purge the dead letters{which} of {topic}/{subscriber}?", yes)
    count = with_queue(
        dsn, lambda q: q.purge_dead_letters(topic, subscriber, first=first, last=last)
    )
    out.print(f"purged {count} dead letter(s)")


@app.command()
def stats(dsn: Dsn = None, as_json: AsJson = False) -> None:
    """Per topic and per subscriber figures."""

    async def action(q: pgqueue.Queue) -> tuple[list[Any], list[Any]]:
        return await q.topic_stats(), await q.subscriber_stats()

    topics, subscribers = with_queue(dsn, action)
    if as_json:  # the shape of GET /stats
        print_json(
            {"topics": [record(t) for t in topics], "subscribers": [record(s) for s in subscribers]}
        )
        return
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
        "lag_seconds",
        "in_flight",
        "expired",
        "retrying",
        "dead",
    )


@app.command()
def top(
    topic: Annotated[str | None, typer.Argument(help="One topic (default: all).")] = None,
    dsn: Dsn = None,
    interval: Annotated[
        float, typer.Option(min=0.1, max=3600, help="Seconds between refreshes.")
    ] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one view (rates over one interval) and exit.")
    ] = False,
) -> None:
    """A live view of topics and subscribers: lag, in flight, retries, dead, rates."""
    from pgqueue import top as view

    if once:
        with_queue(dsn, lambda q: view.show_once(q, topic, interval, out))
        return
    try:
        with_queue(dsn, lambda q: view.watch(q, topic, interval, out, started=say))
    except typer.Exit as stop:
        if stop.exit_code != 130:  # Ctrl-C is how one leaves top: not a failure
            raise


@app.command()
def shell(dsn: Dsn = None) -> None:
    """An interactive prompt: topics, create, pub, batch, periodic, sub, unsub, listen, stop,
    stats, exit (line editing and history at a terminal)."""
    from pgqueue.shell import Shell

    run(Shell(database(dsn), out).run())


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
    """The command line, with every usage error as one line (exit 2), not a framed panel."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as error:  # typer's click: a bad option, argument or command
        context = getattr(error, "ctx", None)
        where = f" (see '{context.command_path} --help')" if context is not None else ""
        if error.format_message():  # empty: a group called bare, its help already shown
            say(f"error: {error.format_message()}{where}")
        code = error.exit_code
    except typer.Abort:  # Ctrl-C or end of input at a confirmation
        say("cancelled: nothing changed")
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
