"""run_all.sh from a clean clone, and docker-compose.yml."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.services.conftest import free_port
from tests.support import within

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_wires_db_migrate_and_server() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "migrate", "server", "publish", "subscribe"}
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["pgqueue", "migrate"]
    for name, port in (("server", 8888), ("publish", 8001), ("subscribe", 8002)):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert f"{port}:{port}" in services[name]["ports"]
    if shutil.which("docker-compose"):  # .ci/run installs it; the engine is not needed
        result = subprocess.run(
            ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


@pytest.fixture
def clean_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "pgqueue"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    return clone


async def _start(clone: Path, port: int) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env["PGQUEUE_PORT"] = str(port)
    # The server's output goes to a file beside the clone, so a failure can show it.
    with (clone.parent / "run_all.log").open("ab") as log:
        return await asyncio.create_subprocess_exec(
            str(clone / "run_all.sh"),
            cwd=clone,
            env=env,
            stdout=log,
            stderr=log,
        )


def _server_log(clone: Path) -> str:
    lines = (clone.parent / "run_all.log").read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if "Warning" not in line)[-4000:]


async def _healthy(url: str, proc: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(2400):  # a first run installs everything: allow a few minutes
            assert proc.returncode is None, "run_all.sh exited"
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail("run_all.sh did not answer /healthz")


async def _interrupt(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    await within(proc.wait(), 60)


@pytest.mark.timeout(600)
async def test_run_all_from_a_clean_clone_serves_and_keeps_data(clean_clone: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pgdata = clean_clone / ".pgqueue" / "pgdata"

    proc = await _start(clean_clone, port)
    try:
        await _healthy(url, proc)
        async with httpx.AsyncClient(base_url=url) as http:
            created = await http.post("/topics", json={"name": "kept"})
            assert created.status_code == 201, (created.text, _server_log(clean_clone))
            assert (await http.get("/docs")).status_code == 200
    finally:
        await _interrupt(proc)
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists(), "Ctrl-C left the embedded server running"

    proc = await _start(clean_clone, port)
    try:
        await _healthy(url, proc)
        async with httpx.AsyncClient(base_url=url) as http:
            assert [t["name"] for t in (await http.get("/topics")).json()] == ["kept"]
    finally:
        await _interrupt(proc)
    assert not (pgdata / "postmaster.pid").exists()
