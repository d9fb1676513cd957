"""docs/BENCHMARKS.md from the JSON results in bench/results (`python -m bench report`).

Reads bench/results/<row>.json for every row script, whichever exist (a missing one gives "not
run" rows), runs `pg_test_fsync` briefly (about 15 s) for the machine's durable-write rate,
draws PNG plots into docs/bench/ with matplotlib (skipped with a note when it is not installed)
and writes the markdown. Nothing here measures a queue: the figures are the JSON files' own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import common

DOCS = common.ROOT / "docs"
OUTPUT = DOCS / "BENCHMARKS.md"
PLOTS_DIR = DOCS / "bench"
FSYNC_TEST_FILE = Path("/tmp/pgqueue-fsync-test")

BENCHMARKS = ("r1", "r1c", "r2", "r3", "r4", "r5", "r6", "r7")
# Rows a full run produces, for the "not run" lines of a missing result file.
EXPECTED_ROWS = {
    "r1": ("r1a", "r1a-procs", "r1b"),
    "r1c": ("r1c", "r1c-batch"),
    "r2": ("r2a", "r2a-piggyback", "r2b", "r2b-piggyback"),
    "r3": ("r3", "r3-redis", "r3-nats"),
    "r4": ("r4-publish", "r4-drain"),
    "r5": ("r5",),
    "r6": ("r6",),
    "r7": ("r7",),
}
# Sweeps some rows record besides their ratio: (result, series, x axis, title, file).
SERIES_PLOTS = (
    (
        "r5",
        "publishers",
        "publisher tasks",
        "publish throughput against publisher count",
        "publishers.png",
    ),
    (
        "r6",
        "subscribers",
        "subscribers on the topic",
        "publish throughput against fan-out",
        "fanout.png",
    ),
)
# Rows whose figures rest on publishes being acknowledged durably: BENCHMARKS.md wants their
# WAL flushes counted and checked, and without that they are not a result.
PUBLISHING_ROWS = frozenset(
    {"r1a", "r1a-procs", "r1b", "r1c", "r1c-batch", "r3", "r4-publish", "r5", "r6", "r7"}
)
# Points of the R3 latency CDF: percentile name in the JSON -> cumulative fraction.
# "max" (fraction 1) has no place on the logit axis; it is in the R3 table.
CDF_POINTS = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999))


def load_results(results_dir: Path = common.RESULTS_DIR) -> dict[str, dict[str, Any] | None]:
    loaded: dict[str, dict[str, Any] | None] = {}
    for name in BENCHMARKS:
        path = results_dir / f"{name}.json"
        loaded[name] = json.loads(path.read_text()) if path.exists() else None
    return loaded


# --- formatting -------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ratio(summary: dict[str, Any]) -> str:
    return f"{summary['median']:.2f} ({summary['min']:.2f}–{summary['max']:.2f})"


def _spread_ms(summary: dict[str, Any]) -> str:
    return f"{_ms(summary['median'])} ({_ms(summary['min'])}–{_ms(summary['max'])})"


def _yes_no(value: bool) -> str:
    return "**yes**" if value else "no"


def _row_label(row_id: str) -> str:
    return row_id[:1].upper() + row_id[1:]


# --- header -----------------------------------------------------------------------------------


def _memory() -> str:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "unknown"
    return f"{total / 2**30:.1f} GiB"


def _source_lines(results: dict[str, dict[str, Any] | None]) -> list[str]:
    lines = [
        "| result | date | git | host | cores | load at start | reportable | PostgreSQL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, data in results.items():
        if data is None:
            lines.append(f"| {name} | not run | | | | | | |")
            continue
        machine = data.get("machine", {})
        load = machine.get("loadavg_at_start")
        load_text = " ".join(f"{value:.2f}" for value in load) if load else "?"
        settings = data.get("settings") or {}
        reportable = data.get("reportable")
        problems = common.durability_problems(settings) if settings else []
        check = data.get("durability_check")
        if check is not None and not check["met"]:
            problems.append("not durable")
        lines.append(
            "| "
            + " | ".join(
                _cell(str(cell))
                for cell in (
                    name,
                    machine.get("time", "?"),
                    machine.get("git") or "not recorded",
                    machine.get("host", "?"),
                    machine.get("cpus", "?"),
                    load_text,
                    "yes" if reportable else "NO: " + ("; ".join(problems) or "see JSON"),
                    common.settings_line(settings) or "not recorded",
                )
            )
            + " |"
        )
    return lines


def _find_pg_test_fsync() -> Path | None:
    found = shutil.which("pg_test_fsync")
    if found:
        return Path(found)
    system = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_test_fsync"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if system:
        return system[-1]
    try:
        from pgqueue import embedded

        candidate: Path = embedded.bin_dir() / "pg_test_fsync"
    except Exception:  # the embedded extra missing or broken: no candidate
        return None
    return candidate if candidate.exists() else None


_FDATASYNC = re.compile(r"^\s*fdatasync\s+([0-9.]+) ops/sec\s+([0-9]+) usecs/op", re.MULTILINE)


def fsync_line() -> str:
    """The fdatasync rate of one 8kB write, the ceiling of durable commits per second of one
    session (group commit lifts it for concurrent sessions)."""
    binary = _find_pg_test_fsync()
    if binary is None:
        return "pg_test_fsync not found (PATH, /usr/lib/postgresql/*/bin, embedded wheel)."
    try:
        result = subprocess.run(
            [str(binary), "-s", "1", "-f", str(FSYNC_TEST_FILE)],
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return f"pg_test_fsync failed: {error!r}."
    finally:
        FSYNC_TEST_FILE.unlink(missing_ok=True)
    output = result.stdout
    # The first fdatasync line is in the "one 8kB write" section.
    section = output.split("one 8kB write", 1)
    match = _FDATASYNC.search(section[1] if len(section) == 2 else output)
    if result.returncode != 0 or match is None:
        tail = (result.stderr or output).strip().splitlines()[-1:] or ["no output"]
        return f"pg_test_fsync failed (exit {result.returncode}): {tail[0]}"
    return (
        f"one 8kB write, fdatasync: **{float(match.group(1)):,.0f} ops/sec** "
        f"({match.group(2)} µs/op), `{binary} -s 1 -f {FSYNC_TEST_FILE}` at report time"
    )


# --- tables -----------------------------------------------------------------------------------


def _check_value(name: str, value: Any) -> str:
    if isinstance(value, dict) and name.endswith("growth"):  # a Summary of fractions
        return f"{value['median']:+.1%} ({value['min']:+.1%} to {value['max']:+.1%})"
    if isinstance(value, dict):  # a Summary
        return _ratio(value)
    if isinstance(value, int):
        return _count(value)
    return f"{value:.2f}"


def _not_a_result(row: dict[str, Any]) -> str | None:
    """Why a row's figures do not count on durability grounds: its check failed, or a
    publishing row carries no WAL accounting (a result file from before it existed)."""
    if "not_a_result" in row:
        return "**not durable: not a result**"
    if row["id"] in PUBLISHING_ROWS and "wal" not in row:
        return "**durability not checked (no WAL accounting): not a result**"
    return None


def _flushes(wal: dict[str, Any], side: str) -> str | None:
    summary = wal.get(side)
    if summary is None:
        return None
    return f"{summary['median']:.2f}/{wal.get(side + '_per') or 'ack'}"


def _wal_cell(row: dict[str, Any]) -> str:
    """WAL flushes per acknowledged publish beside the baseline's per commit, medians."""
    wal = row.get("wal")
    if wal is None:
        return "not recorded" if row["id"] in PUBLISHING_ROWS else "–"
    ours, theirs = _flushes(wal, "pgqueue"), _flushes(wal, "baseline")
    if ours is None:
        return "not recorded"
    return ours if theirs is None else f"{ours} vs {theirs}"


def _throughput_row(row: dict[str, Any]) -> list[str]:
    label = _row_label(row["id"])
    checks = row.get("checks", [])
    goal = "; ".join([f"≥ {row['goal']:g}"] + [f"{c['name']} {c['goal']}" for c in checks])
    if "skipped" in row or "pgqueue" not in row:
        reason = row.get("skipped", "not measured")
        return [label, row["what"], f"skipped: {reason}", "–", "–", goal, "–", "–"]
    unit = row.get("unit", "/s")
    ratio = _ratio(row["ratio"])
    for check in checks:
        ratio += f"; {check['name']} {_check_value(check['name'], check['value'])}"
    met = _not_a_result(row) or "; ".join(
        [_yes_no(bool(row["met"]))]
        + [f"{check['name']} {_yes_no(bool(check['met']))}" for check in checks]
    )
    return [
        label,
        row["what"],
        f"{_count(row['pgqueue']['median'])} {unit}",
        f"{_count(row['baseline']['median'])} {unit} ({row['baseline_name']})",
        ratio,
        goal,
        met,
        _wal_cell(row),
    ]


def _latency_row(row: dict[str, Any]) -> list[str]:
    label = _row_label(row["id"])
    what = row["what"] + (" (durable)" if row.get("durable") else " (**not durable**)")
    if "error" in row:
        return [label, what, f"failed: {row['error']}", "–", "–", "–", "–", "–"]
    latency = row["latency_ms"]
    figure = f"p50 {_ms(latency['p50']['median'])} ms, p99 {_ms(latency['p99']['median'])} ms"
    goal = row.get("goal")
    if goal is None:
        # A reference row: its figure is the baseline pgqueue's latency is read against.
        return [label, what, "–", figure, "absolute", "reference", "–", "–"]
    met = row["met"]
    return [
        label,
        what,
        figure,
        "–",
        "absolute",
        f"p50 ≤ {goal['p50_ms']:g} ms, p99 ≤ {goal['p99_ms']:g} ms",
        _not_a_result(row) or f"p50 {_yes_no(met['p50'])}, p99 {_yes_no(met['p99'])}",
        _wal_cell(row),
    ]


def summary_table(results: dict[str, dict[str, Any] | None]) -> list[str]:
    lines = [
        "| row | what is measured | pgqueue | baseline | ratio, median (min–max) | goal | met "
        "| WAL flushes per ack: pgqueue vs baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in BENCHMARKS:
        data = results[name]
        if data is None:
            for row_id in EXPECTED_ROWS[name]:
                lines.append(f"| {_row_label(row_id)} | | not run | | | | | |")
            continue
        for row in data["rows"]:
            cells = _latency_row(row) if name == "r3" else _throughput_row(row)
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return lines


def _spread(summary: dict[str, Any] | None, per: str | None) -> str:
    if summary is None:
        return "–"
    return f"{summary['median']:.2f} ({summary['min']:.2f}–{summary['max']:.2f}) per {per}"


def wal_section(results: dict[str, dict[str, Any] | None]) -> list[str]:
    """The durability check of every result that ran one, and the WAL flushes of every row
    that recorded them."""
    checks = [
        "| result | check | value, median (min–max) | goal | met |",
        "|---|---|---|---|---|",
    ]
    flushes = [
        "| row | pgqueue: WAL flushes per acknowledged publish, median (min–max) "
        "| baseline: per commit (or per publish when it is pgqueue too) |",
        "|---|---|---|",
    ]
    unchecked = []
    for name in BENCHMARKS:
        data = results[name]
        if data is None:
            continue
        # R3 keeps its check in the pgqueue row (the other systems are not PostgreSQL).
        check = data.get("durability_check") or next(
            (row["durability_check"] for row in data["rows"] if "durability_check" in row), None
        )
        if check is not None:
            value = _ratio(check["value"]) if "value" in check else "–"
            met = _yes_no(bool(check["met"])) if check["met"] else f"**NO**: {check['reason']}"
            cells = (name, check["name"], value, check["goal"], met)
            checks.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
        elif any(row["id"] in PUBLISHING_ROWS for row in data["rows"]):
            unchecked.append(name)
        for row in data["rows"]:
            wal = row.get("wal")
            if wal is None:
                continue
            sides = (
                _row_label(row["id"]),
                _spread(wal.get("pgqueue"), wal.get("pgqueue_per")),
                _spread(wal.get("baseline"), wal.get("baseline_per")),
            )
            flushes.append("| " + " | ".join(_cell(cell) for cell in sides) + " |")
    out = [
        "## Durability: WAL flushes",
        "",
        "Every publishing phase and its baseline record the cluster's WAL writes and flushes "
        "before and after (`pg_stat_wal.wal_write` / `wal_sync`; `pg_stat_io` rows of object "
        "`wal` from PostgreSQL 18), read once the phase's sessions have exited or been idle "
        "long enough to have reported. Under concurrency one flush legitimately covers many "
        "publishes (group commit, publish batching), so flushes per publish below 1 prove "
        "nothing there; a single connection publishing sequentially cannot share flushes, so "
        "each run also has a durability check: such a publisher must show at least "
        f"{common.CHECK_MIN_FLUSHES_PER_PUBLISH:g} flushes per publish in every repetition, "
        "or every publishing row of the run is marked not durable and is not a result.",
        "",
        f"Caveat: {common.WAL_CAVEAT}",
        "",
    ]
    if len(checks) > 2:
        out += [*checks, ""]
    if unchecked:
        out += [
            "No durability check in: "
            + ", ".join(unchecked)
            + " (results recorded before WAL accounting): their publishing rows are not a "
            "result.",
            "",
        ]
    if len(flushes) > 2:
        out += [*flushes, ""]
    return out


def latency_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| system | durable | durability | rate msg/s | p50 ms | p99 ms | p99.9 ms | lost | dup |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        if "error" in row:
            lines.append(f"| {row['system']} | | failed: {_cell(row['error'])} | | | | | | |")
            continue
        latency = row["latency_ms"]
        behind = " (fell behind)" if row.get("fell_behind") else ""
        cells = [
            row["system"],
            "yes" if row["durable"] else "**NO**",
            row["durability"],
            _count(row["rate"]) + behind,
            *(_spread_ms(latency[stat]) if stat in latency else "–" for stat in ("p50", "p99")),
            _spread_ms(latency["p99.9"]) if "p99.9" in latency else "–",
            _count(row["lost"]),
            _count(row["duplicates"]),
        ]
        lines.append("| " + " | ".join(_cell(str(cell)) for cell in cells) + " |")
    return lines


# --- plots ------------------------------------------------------------------------------------


def plot_latency_cdf(data: dict[str, Any], path: Path) -> bool:
    """Step CDF through the recorded percentiles (medians of the repetitions) per system; the
    JSON holds percentiles, not the histograms, so the curve is exact only at its steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in data["rows"] if "error" not in row]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in rows:
        latency = row["latency_ms"]
        points = [(latency[name]["median"], q) for name, q in CDF_POINTS if name in latency]
        if not points:
            continue
        xs = [x for x, _ in points]
        ys = [q for _, q in points]
        label = f"{row['system']} ({'durable' if row['durable'] else 'not durable'})"
        ax.step(xs, ys, where="post", marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("publish → receive latency, ms (log scale)")
    ax.set_ylabel("fraction of messages (logit scale)")
    ax.set_yscale("logit")
    ax.set_ylim(0.4, 0.9995)
    ax.set_yticks([0.5, 0.9, 0.99, 0.999], ["p50", "p90", "p99", "p99.9"])
    ax.minorticks_off()
    ax.set_xscale("log")
    ax.set_title("R3 latency CDF (steps at recorded percentiles, medians of repetitions)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return True


def plot_throughput(results: dict[str, dict[str, Any] | None], path: Path) -> bool:
    """Grouped bars pgqueue vs baseline per R1/R2 row, medians with min–max whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for name in ("r1", "r2"):
        data = results[name]
        if data is None:
            continue
        rows = [row for row in data["rows"] if "pgqueue" in row and "baseline" in row]
        if rows:
            panels.append((name, rows))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    width = 0.38
    for ax, (name, rows) in zip(axes[0], panels, strict=True):
        positions = list(range(len(rows)))
        for offset, side, color in ((-width / 2, "pgqueue", "C0"), (width / 2, "baseline", "C7")):
            medians = [row[side]["median"] for row in rows]
            errors = [
                [row[side]["median"] - row[side]["min"] for row in rows],
                [row[side]["max"] - row[side]["median"] for row in rows],
            ]
            ax.bar(
                [p + offset for p in positions],
                medians,
                width,
                yerr=errors,
                capsize=3,
                color=color,
                label=side,
            )
        ax.set_xticks(
            positions,
            [f"{_row_label(row['id'])}\nvs {row['baseline_name']}" for row in rows],
            fontsize=8,
        )
        ax.set_ylabel("per second (msg/s; R1b rows/s)" if name == "r1" else "msg/s")
        ax.set_title(f"{name.upper()} throughput, median (min–max)")
        tops = [row[side]["max"] for row in rows for side in ("pgqueue", "baseline")]
        if max(tops) > 20 * min(tops):
            ax.set_yscale("log")
            ax.set_title(f"{name.upper()} throughput, median (min–max), log scale")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return True


def plot_series(data: dict[str, Any], series: str, xlabel: str, title: str, path: Path) -> bool:
    """Median msg/s with min–max whiskers against the swept quantity."""
    points = data.get("series", {}).get(series)
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [point["x"] for point in points]
    medians = [point["median"] for point in points]
    errors = [
        [point["median"] - point["min"] for point in points],
        [point["max"] - point["median"] for point in points],
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(xs, medians, yerr=errors, marker="o", capsize=3)
    ax.set_xscale("log" if max(xs) > 20 * min(xs) else "linear")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("msg/s")
    ax.set_title(f"{title} (median, min–max)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return True


# --- document ---------------------------------------------------------------------------------


def render(
    results: dict[str, dict[str, Any] | None], *, fsync: str, plots: list[tuple[str, str]]
) -> str:
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m bench all --dsn ...` or `python -m bench report` from "
        "bench/results/*.json; edits here are overwritten. -->",
        "",
        "Generated by `python -m bench all --dsn ...` (runs every row, then this report) or "
        "`python -m bench report` (this report only, from the JSON in bench/results/) on "
        f"{time.strftime('%Y-%m-%d %H:%M %z')}. Throughput figures (R1, R2, R4–R7) are ratios "
        "against a baseline measured in the same run on the same machine; latency figures (R3) are "
        "absolute, with reference systems measured the same way. Every row runs with "
        "autovacuum on, as on a production server: the bench switches it on for the run where "
        "the server has it off (ALTER SYSTEM, reset afterwards).",
        "",
        "## Where the figures come from",
        "",
        *_source_lines(results),
        "",
        f"- Memory: {_memory()} (this machine at report time; the JSON does not record it).",
        f"- Disk: {fsync}",
        "",
        "## Results",
        "",
        *summary_table(results),
        "",
        "Ratios are pgqueue / baseline per repetition (pairs measured side by side), then the "
        "median and min–max of those ratios; a goal is met when the median ratio reaches it. "
        "R3 figures are medians of the repetitions' percentiles. A row with further goals (R4, "
        "R7) lists each check after the ratio; R7 is one run of 10 minutes, its ratios are "
        "the last minute against the first. The last column is the median of WAL flushes per "
        "acknowledged publish call (R1b, R1c-batch: one call of 100 messages) beside the "
        "baseline's per commit (pgbench) or per publish (when the baseline is pgqueue too); "
        "see the next section.",
        "",
        *wal_section(results),
    ]
    r3 = results["r3"]
    if r3 is not None:
        out += [
            "## R3 latency per system",
            "",
            "Open loop at 50 % of each system's probed max publish rate; ms as median "
            "(min–max) of the repetitions.",
            "",
            *latency_table(r3),
            "",
        ]
    if plots:
        out += ["## Plots", ""]
        for title, relative in plots:
            out += [f"![{title}]({relative})", ""]
    else:
        out += ["## Plots", "", "No plots: matplotlib is not installed or nothing to plot.", ""]
    return "\n".join(out)


def main(*, output: Path = OUTPUT, run_fsync: bool = True) -> Path:
    results = load_results()
    fsync = fsync_line() if run_fsync else "pg_test_fsync not run (--no-fsync)."
    plots: list[tuple[str, str]] = []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        throughput = PLOTS_DIR / "throughput.png"
        if plot_throughput(results, throughput):
            plots.append(("R1/R2 throughput, pgqueue vs baseline", "bench/throughput.png"))
        r3 = results["r3"]
        cdf = PLOTS_DIR / "r3_latency_cdf.png"
        if r3 is not None and plot_latency_cdf(r3, cdf):
            plots.append(("R3 latency CDF per system", "bench/r3_latency_cdf.png"))
        for name, series, xlabel, title, filename in SERIES_PLOTS:
            data = results[name]
            if data is not None and plot_series(data, series, xlabel, title, PLOTS_DIR / filename):
                plots.append((title, f"bench/{filename}"))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(results, fsync=fsync, plots=plots))
    return output
