"""Schemathesis against a real server with tokens on: every check, no 5xx, no answer that the
OpenAPI document does not describe."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pgqueue.settings import Settings
from tests.services.conftest import RunningServer, serving

CONFIG = Path(__file__).with_name("schemathesis.toml")
TOKEN = "schemathesis-admin"


def seed(server: RunningServer) -> None:
    """What the document's examples name (topic orders, subscriber billing with id 1), so
    that the generated requests reach existing things as well as missing ones."""
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        assert http.post("/topics", json={"name": "orders"}).status_code == 201
        billing = http.post("/topics/orders/subscribers", json={"name": "billing"})
        assert billing.json()["subscriber_id"] == 1
        messages = [{"payload": {"id": i}} for i in range(20)]
        assert http.post("/topics/orders/messages/batch", json={"messages": messages}).is_success


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_failure(database_dsn: str, tmp_path: Path) -> None:
    settings = Settings(
        database_url=database_dsn, api_tokens={TOKEN: ["admin"]}, poll_interval=30.0
    )
    with serving(settings) as server:
        seed(server)
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(CONFIG),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "all",
                "--header",
                f"Authorization: Bearer {TOKEN}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=280,
        )
    summary = re.search(r"(\d+) generated, .*", run.stdout)
    assert summary, run.stdout[-5000:] + run.stderr[-5000:]
    print(summary.group(0))  # the figures, for whoever reads the run's output (pytest -s)
    assert run.returncode == 0, run.stdout[-30000:]
    # A run that tested little would pass for the wrong reason.
    assert int(summary.group(1)) >= 500, summary.group(0)
