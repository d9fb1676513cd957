"""The one-screen summary of a chaos report."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _pairs(counts: dict[str, Any]) -> str:
    return " · ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def render(report: dict[str, Any], console: Console) -> None:
    pg = report["postgres"]
    console.print(
        f"[bold]pgqueue chaos run[/] seed {report['seed']}, {report['seconds']:g} s, "
        f"PostgreSQL {pg['server_version']} (wal_writer_delay {pg['wal_writer_delay']})",
        highlight=False,
    )
    skipped = report["faults_skipped"]
    console.print(
        f"faults: {_pairs(report['faults'])}"
        + (f"  (found nothing: {_pairs(skipped)})" if skipped else ""),
        highlight=False,
    )
    console.print(
        "fault times (s): "
        + " · ".join(
            f"{f['at']} {f['kind']}{'' if f['injected'] else ' (nothing)'}"
            for f in report["fault_log"]
        ),
        highlight=False,
    )
    published = report["published"]
    console.print(
        f"published: acknowledged {published['acknowledged']} ({_pairs(published['by_way'])}) · "
        f"rolled back {published['rolled_back']} · unconfirmed {published['unconfirmed']} "
        f"({published['unconfirmed_in_log']} in the log) · retried errors "
        f"{sum(published['retried_errors'].values())}",
        highlight=False,
    )
    console.print(
        f"log: {sum(report['log'].values())} messages · deliveries {report['deliveries']} · "
        f"server started {report['server_starts']}x · worker exit {report['worker_exit']}",
        highlight=False,
    )
    console.print(_subscriber_table(report["subscribers"]))
    lost = report["lost"]
    console.print(
        f"lost {lost['count']} (acknowledged not in log {lost['acknowledged_not_in_log']['count']}"
        f", undelivered {lost['undelivered']['count']}) · "
        f"reused offsets {report['reused_offsets']['count']} · "
        f"rolled back delivered {report['rolled_back_delivered']['count']} · "
        f"duplicated publishes {report['duplicated_publishes']['count']} · "
        f"vanished {report['vanished']['count']}",
        highlight=False,
    )
    for name, row in report["subscribers"].items():
        if "stuck" in row:
            console.print(f"  stuck {name}: {_stuck(row['stuck'])}", highlight=False)
    for stall in report["stalls"]["examples"]:
        console.print(
            f"stall: {stall['subscriber']} offset {stall['offset']} acknowledged at "
            f"t={stall['acked_at_s']} s waited {stall['wait_s']} s"
            f"{'' if stall['delivered'] else ' (never delivered)'}; faults meanwhile: "
            f"{', '.join(stall['faults_meanwhile']) or 'none'}",
            highlight=False,
        )
    notes = []
    if report["ephemeral_left"]:
        notes.append(f"ephemeral subscribers left behind {len(report['ephemeral_left'])}")
    if report["over_max_attempts"]:
        notes.append(f"deliveries beyond max_attempts {report['over_max_attempts']}")
    if notes:
        console.print("also: " + " · ".join(notes), highlight=False)
    server_log = report["server_log"]
    if server_log["exceptions"]:
        console.print(
            "server log exceptions: "
            + " · ".join(f"{_short(e)} x{n}" for e, n in server_log["exceptions"].items()),
            highlight=False,
        )
    timings = report["timings_s"]
    drained = "complete" if report["drained"]["complete"] else "TIMED OUT"
    console.print(
        f"drain {drained} in {timings['drain']} s · setup {timings['setup']} s · "
        f"total {timings['total']} s",
        highlight=False,
    )
    if report["verdict"] == "ok":
        console.print("[bold green]VERDICT ok[/]")
    else:
        console.print(f"[bold red]VERDICT fail[/]: {', '.join(report['failures'])}")


def _short(exception: str) -> str:
    """`asyncpg.exceptions.X: detail` -> `X: detail`, cut to fit a line."""
    name, _, detail = exception.partition(":")
    return f"{name.rsplit('.', 1)[-1]}:{detail}"[:60]


def _subscriber_table(rows: dict[str, dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = (
        "subscriber",
        "owed",
        "delivered",
        "redelivered",
        "dead",
        "max attempt",
        "max wait s",
        "missing",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "subscriber" else "right")
    for name, row in rows.items():
        missing = str(row["missing"])
        table.add_row(
            name,
            str(row["owed"]),
            str(row["delivered"]),
            str(row["duplicates"]),
            str(row["dead_lettered"]),
            str(row["max_attempt"]),
            str(row["max_wait_s"]),
            f"[red]{missing}[/]" if row["missing"] else missing,
        )
    return table


def _stuck(note: dict[str, Any]) -> str:
    db = note.get("database") or {}
    consumers = "; ".join(
        f"{name.split(':')[0]} idle {c['idle_s']} s, {c['connects']} connects"
        for name, c in note["consumers"].items()
    )
    return (
        f"first missing {note['first_missing'][:5]}; position {db.get('position')}, "
        f"lag {db.get('lag')}, in flight {db.get('in_flight')}; {consumers}"
    )
