"""The README's examples run as written."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _example(kind: str) -> str:
    pattern = rf"<!-- tested: {kind} -->\n```\w+\n(.*?)```"
    match = re.search(pattern, README.read_text(), re.DOTALL)
    assert match, f"README has no tested {kind} example"
    return match.group(1)


def _psql() -> str:
    found = shutil.which("psql")
    if found:
        return found
    from pgqueue import embedded

    return str(embedded.bin_dir() / "psql")


async def _run(*argv: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
    text = out.decode()
    assert proc.returncode == 0, text
    return text


async def test_readme_psql_example(database_dsn: str) -> None:
    out = await _run(_psql(), "-X", "-v", "ON_ERROR_STOP=1", database_dsn, stdin=_example("psql"))
    assert "orders" in out
    assert "{1,2}" in out  # both messages acked
    assert re.search(r"orders \| billing\s+\|\s+2 \|\s+0", out), out  # position 2, lag 0


async def test_readme_python_example(database_dsn: str) -> None:
    out = await _run(
        sys.executable, "-c", _example("python"), env={"PGQUEUE_DATABASE_URL": database_dsn}
    )
    assert out.splitlines() == ["published at offset 1", "1 {'text': 'hello'}"]
    again = await _run(
        sys.executable, "-c", _example("python"), env={"PGQUEUE_DATABASE_URL": database_dsn}
    )
    assert again.splitlines() == ["published at offset 2", "2 {'text': 'hello'}"]
