"""The built wheel works outside a checkout: it carries its migrations and SQL."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PUBLISH = """
import asyncio, sys
import pgqueue

async def main():
    async with pgqueue.connect(sys.argv[1]) as queue:
        await queue.create_topic("t")
        print(await queue.publish("t", {"from": "the wheel"}))

asyncio.run(main())
"""


def _run(*args: str, cwd: Path) -> str:
    # No PGQUEUE_* from the test's environment, and nothing of the checkout on the path.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGQUEUE_", "PYTHON"))}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_migrates_and_publishes(
    tmp_path: Path, empty_database_dsn: str
) -> None:
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT),
         cwd=tmp_path)  # fmt: skip
    [wheel] = dist.glob("pgqueue-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    _run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel),
         cwd=tmp_path)  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    out = _run(str(env_dir / "bin" / "pgqueue"), "migrate", "--dsn", empty_database_dsn,
               cwd=elsewhere)  # fmt: skip
    assert "migrated to head" in out
    assert _run(python, "-c", PUBLISH, empty_database_dsn, cwd=elsewhere).strip() == "1"
    # The installed package, not the checkout, did it.
    where = _run(python, "-c", "import pgqueue; print(pgqueue.__file__)", cwd=elsewhere)
    assert str(env_dir) in where and str(ROOT) not in where
