"""queue_stress.sh for ~20 s: random resets, v1/pull/WebSocket subscribers, nothing lost."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from tests.support import within

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
async def test_queue_stress_loses_nothing(database_dsn: str) -> None:
    env = {**os.environ, "STRESS_SECONDS": "20", "PGQUEUE_DATABASE_URL": database_dsn}
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "queue_stress.sh"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out = (await within(proc.communicate(), 500))[0].decode()
    assert proc.returncode == 0, out
    assert re.search(r"^lost 0$", out, re.MULTILINE), out
    committed = re.search(r"committed (\d+) messages, (\d+) resets, (\d+) deliveries", out)
    assert committed, out
    messages, resets, deliveries = map(int, committed.groups())
    assert messages > 500 and resets > 0 and deliveries >= messages
    # Progress while it ran, results per client kind, and duplicates explained.
    progress = r"^\[\s*\d+ s\] publishing \(for 20 s\): \d+ published"
    assert re.search(progress, out, re.MULTILINE), out
    published = re.search(r"^publishers \(committed messages\): (.*)$", out, re.MULTILINE)
    assert published, out
    by_kind = dict(part.rsplit(" ", 1) for part in published.group(1).split(", "))
    assert set(by_kind) == {"rest", "rest batch", "v1"}
    assert sum(map(int, by_kind.values())) == messages
    for kind in ("v1 subscriber", "pull subscriber", "websocket subscriber"):
        assert re.search(rf"^{kind}\s+3\s+\d+", out, re.MULTILINE), out
    assert "what the numbers mean:" in out and "after resets" in out
    duplicates = re.search(r"^duplicates (\d+) \((\d+) after resets, (\d+) other\)$", out, re.M)
    assert duplicates, out
    total, after, other = map(int, duplicates.groups())
    assert total == after + other
    print(out[-400:])
