"""The suite tests pgqueue's defaults, whatever the shell running it exports (finding 19)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgqueue.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = {
    "PGQUEUE_API_TOKENS": '{"secret": ["admin"]}',
    "PGQUEUE_PUBLISH_BATCHING": "false",
    "PGQUEUE_POLL_INTERVAL": "0.01",
}


def test_settings_inside_a_test_are_the_defaults(tmp_path: Path) -> None:
    """Run alone by the test below, with OUTSIDE exported and a .env file in its directory."""
    assert not [n for n in os.environ if n.startswith("PGQUEUE_") and n != "PGQUEUE_TEST_DSN"]
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in OUTSIDE.items()))
    settings = Settings()
    assert settings.api_tokens == {}
    assert settings.publish_batching is True
    assert settings.poll_interval == 2.0


@pytest.mark.timeout(120)
def test_exported_settings_and_env_files_do_not_reach_the_tests(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in OUTSIDE.items()))
    # Without the suite's fixture, both the environment and the .env file would count.
    assert Settings(_env_file=tmp_path / ".env").api_tokens == {"secret": ["admin"]}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_settings_inside_a_test_are_the_defaults",
        ],
        cwd=tmp_path,  # where the .env file is
        env={**os.environ, **OUTSIDE},
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
