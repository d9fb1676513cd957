"""What the CLI prints: tables, JSON, one-line notes on stderr, and confirmations."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime, timedelta
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from pgqueue.models import Lease

out = Console()
err = Console(stderr=True)


def table(rows: list[dict[str, Any]], *columns: str) -> None:
    grid = Table(*columns, box=None, header_style="bold")
    for row in rows:
        grid.add_row(*(_cell(row.get(c)) for c in columns))
    out.print(grid)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"{type(value).__name__} is not JSON")


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=_jsonable, ensure_ascii=False))


def record(row: Any) -> dict[str, Any]:
    """A library row (a frozen dataclass) as a plain dict of its public fields."""
    return {
        f.name: getattr(row, f.name) for f in dataclasses.fields(row) if not f.name.startswith("_")
    }


def say(text: str) -> None:
    """One unstyled line on stderr, never wrapped (scripts read it)."""
    err.print(text, highlight=False, markup=False, soft_wrap=True)


def show(rows: list[dict[str, Any]], as_json: bool, *columns: str) -> None:
    """Rows as JSON (every field) or as a table (the named columns)."""
    if as_json:
        print_json(rows)
    else:
        table(rows, *columns)


def confirm(question: str, yes: bool) -> None:
    """Goes on only with --yes or a 'y' typed at a terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        say(f"error: {question} Not confirmed: pass --yes (no terminal to ask at).")
        raise typer.Exit(2)
    if not typer.confirm(question, err=True):
        say("cancelled: nothing changed")
        raise typer.Exit(1)


def print_description(described: dict[str, Any]) -> None:
    """`subscribers describe`: settings and figures, then the leases per consumer."""
    settings, stats = described["subscriber"], described["stats"]
    grid = Table(box=None, show_header=False)
    for field in ("topic", "name", "subscriber_id", "filter", "max_attempts", "backoff_base",
                  "backoff_max", "ephemeral", "epoch", "created_at"):  # fmt: skip
        grid.add_row(field, _cell(settings[field]))
    for field in ("position", "last_offset", "lag", "lag_seconds", "in_flight", "expired",
                  "retrying", "dead"):  # fmt: skip
        grid.add_row(field, _cell(stats[field]))
    out.print(grid)
    for group in described["consumers"]:
        leases = group["leases"]
        expired = sum(lease["expired"] for lease in leases)
        out.print(
            f"\nconsumer {group['consumer'] or '(not named)'}: {len(leases)} lease(s), "
            f"{expired} expired",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        rows = [
            {**lease, "leased since": lease["leased_at"], "lease ends": lease["lease_ends"]}
            for lease in leases
        ]
        table(rows, "offset", "attempt", "leased since", "lease ends", "expired")
    if not described["consumers"]:
        out.print("\nno leases")


def per_consumer(leases: list[Lease]) -> list[dict[str, Any]]:
    """Leases grouped by who holds them, in the order each consumer first appears."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for lease in leases:
        groups.setdefault(lease.consumer, []).append(record(lease))
    return [{"consumer": c, "leases": rows} for c, rows in groups.items()]
