"""The chaos run (bench/chaos) as a test: publishers and consumers of every kind under server
kills, PostgreSQL crashes, killed LISTEN connections, a frozen consumer process and clients that
never read; nothing acknowledged may be lost, no offset reused, no rolled-back publish seen.

PGQUEUE_CHAOS_SECONDS sets how long the faults go on (default 20; CI runs 60), and
PGQUEUE_CHAOS_SEED replays a run. It brings its own PostgreSQL, so it ignores the suite's server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.chaos.checker import Evidence, Stored, check
from bench.chaos.model import SUBSCRIBERS, Delivery
from bench.chaos.publishers import Acked, Ledger
from bench.chaos.run import sweep

ROOT = Path(__file__).resolve().parent.parent
SECONDS = float(os.environ.get("PGQUEUE_CHAOS_SECONDS", "20"))
SEED = os.environ.get("PGQUEUE_CHAOS_SEED")
# Start-up, the drain's bound, the retry grace and the clean-up, with room for a busy machine.
ALLOWANCE = 150.0
FULL_ROUND = 45.0  # a run this long meets every kind of fault


@pytest.fixture
def run_home() -> Iterator[Path]:
    """A directory outside pytest's own: as root the run's PostgreSQL runs as another user,
    and every pytest session that starts (another suite on the machine) makes pytest's
    temporary root private again, which took the data directory from under a restart."""
    with tempfile.TemporaryDirectory(prefix="pgqueue-chaos-") as home:
        os.chmod(home, 0o755)
        yield Path(home)


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + ALLOWANCE + 30)
def test_chaos_run_loses_nothing(run_home: Path) -> None:
    report_path = run_home / "report.json"
    run_dir = run_home / "run"
    command = [
        sys.executable,
        "-m",
        "bench.chaos",
        "--seconds",
        str(SECONDS),
        "--json",
        str(report_path),
        "--workdir",
        str(run_dir),
    ]
    if SEED:
        command += ["--seed", SEED]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = process.communicate(timeout=SECONDS + ALLOWANCE)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the run cleans up after itself on SIGTERM
        output, _ = process.communicate(timeout=30)
        pytest.fail(f"the chaos run did not finish in time:\n{output[-4000:]}")
    finally:
        if process.poll() is None:
            process.kill()
        sweep(run_dir)  # nothing of the run may outlive the test
    print(output)
    assert report_path.exists(), f"no report (exit status {process.returncode}):\n{output}"
    report = json.loads(report_path.read_text())
    findings = {
        "lost": report["lost"],
        "reused_offsets": report["reused_offsets"],
        "rolled_back_delivered": report["rolled_back_delivered"],
        "duplicated_publishes": report["duplicated_publishes"],
        "vanished": report["vanished"],
    }
    assert report["verdict"] == "ok", (
        f"seed {report['seed']}: {report['failures']}\n{json.dumps(findings, indent=1)}"
    )
    assert process.returncode == 0, output
    # The run really was chaotic: faults happened (every kind, in a run of CI's length) and
    # publishing went on.
    assert sum(report["faults"].values()) >= 2, report["faults"]
    assert all(report["faults"].values()) or SECONDS < FULL_ROUND, report["faults"]
    assert report["published"]["acknowledged"] > 0 and report["published"]["rolled_back"] > 0


# -- the checker on made-up evidence (fast) ----------------------------------------------


def _evidence(log: dict[int, str], deliveries: list[tuple[str, int, str]]) -> Evidence:
    """One topic "t" whose log holds `log` (offset -> payload id, all matching every filter),
    and deliveries (subscriber, offset, payload id)."""
    return Evidence(
        ledger=Ledger(),
        log={"t": {o: Stored(pid, {"parity": "even"}) for o, pid in log.items()}},
        tx_offsets={},
        deliveries=[Delivery("t", s, o, pid, f"c:{s}", 1, 0.0) for s, o, pid in deliveries],
        dead={},
    )


def _everyone(log: dict[int, str]) -> list[tuple[str, int, str]]:
    return [(spec.name, o, pid) for spec in SUBSCRIBERS for o, pid in log.items()]


def test_checker_passes_a_clean_run() -> None:
    log = {1: "a1", 2: "a2"}
    evidence = _evidence(log, [*_everyone(log), ("pair-ws", 1, "a1")])
    evidence.ledger.acked += [Acked("t", "a1", "rest", 0.0, offset=1)]
    evidence.ledger.acked += [Acked("t", "a2", "tx", 0.0, message_id=7)]
    evidence.tx_offsets[("t", 7)] = 2
    report = check(evidence)
    assert report["verdict"] == "ok", report
    assert report["subscribers"]["t/pair-ws"]["duplicates"] == 1


def test_checker_finds_every_kind_of_failure() -> None:
    log = {1: "a1", 2: "a2", 3: "x", 4: "r1", 6: "a1"}
    deliveries = [d for d in _everyone(log) if d[:2] not in {("pair-ws", 2), ("mixed", 3)}]
    deliveries += [("even-ws", 1, "zz"), ("pair-lib", 9, "r2")]
    evidence = _evidence(log, deliveries)
    evidence.ledger.acked += [
        Acked("t", pid, "lib", 0.0, offset=o)
        for pid, o in (("a1", 1), ("a2", 2), ("a3", 3), ("a4", 5))
    ]
    evidence.ledger.rolled_back += [("t", "r1"), ("t", "r2")]
    evidence.dead[("t", "mixed")] = {3}  # reported as dead-lettered: not lost
    report = check(evidence)
    assert report["lost"]["acknowledged_not_in_log"]["count"] == 1  # a4
    assert report["lost"]["undelivered"]["count"] == 1  # offset 2 for pair-ws
    assert report["reused_offsets"]["count"] == 2  # a3's offset holds x; zz shown at 1
    assert report["rolled_back_delivered"]["count"] == 2  # r1 in the log, r2 delivered
    assert report["duplicated_publishes"]["count"] == 1  # a1 at offsets 1 and 6
    assert report["vanished"]["count"] == 1  # offset 9 shown, not in the log
    assert report["subscribers"]["t/mixed"]["dead_lettered"] == 1
    assert report["verdict"] == "fail"
    assert set(report["failures"]) == {
        "lost",
        "reused_offsets",
        "rolled_back_delivered",
        "duplicated_publishes",
        "vanished",
    }
