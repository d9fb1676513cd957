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
    print(out[-400:])
