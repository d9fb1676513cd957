"""run_all.sh from a clean clone, and docker-compose.yml."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from pgqueue.settings import Settings
from pgqueue.web.exposure import refusal
from tests.services.conftest import free_port
from tests.support import within

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_wires_db_migrate_and_server(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "migrate", "server", "publish", "subscribe"}
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["pgqueue", "migrate"]
    # Migrated as the owner, which sets the runtime role's password; served as that role.
    migrate_env = services["migrate"]["environment"]
    assert migrate_env["PGQUEUE_DATABASE_URL"].startswith("postgresql://pgqueue:")
    assert "PGQUEUE_RUNTIME_PASSWORD" in migrate_env
    server_env = compose["x-pgqueue"]["environment"]
    assert server_env["PGQUEUE_DATABASE_URL"].startswith("postgresql://pgqueue_runtime:")
    for name, port in (("server", 8888), ("publish", 8001), ("subscribe", 8002)):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        # Published on the host's loopback unless the operator says otherwise.
        assert services[name]["ports"] == [f"${{COMPOSE_BIND_ADDRESS:-127.0.0.1}}:{port}:{port}"]
    if shutil.which("docker-compose"):  # .ci/run installs it; the engine is not needed
        assert _compose_config("--env-file", str(ROOT / ".env.example")).returncode == 0
        (tmp_path / "empty.env").write_text("")
        without_tokens = _compose_config("--env-file", str(tmp_path / "empty.env"))
        assert without_tokens.returncode != 0
        assert "copy .env.example to .env and set" in without_tokens.stderr


def _compose_config(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", *options, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_serves_only_with_a_token_from_the_env_file() -> None:
    """Finding 3 of issue 9: compose published the whole admin API with no tokens."""
    environment = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-pgqueue"][
        "environment"
    ]
    assert environment["PGQUEUE_API_TOKENS"].startswith("${PGQUEUE_API_TOKENS:?")
    example = Settings(_env_file=ROOT / ".env.example")
    assert example.api_tokens == {"change-me": {"*": ["admin"]}}
    # Copied and not edited, the example's token is refused.
    assert refusal(example, "0.0.0.0") is not None
    assert ".env" in (ROOT / ".gitignore").read_text().split()


@pytest.fixture
def clean_clone() -> Iterator[Path]:
    # Not under pytest's temporary directory, which any other pytest run that starts makes
    # private to us again: as root, the embedded PostgreSQL runs as another user.
    with tempfile.TemporaryDirectory(prefix="pgqueue-clone-") as tmp:
        Path(tmp).chmod(0o755)
        clone = Path(tmp) / "pgqueue"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
        yield clone


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


async def _healthy(url: str, proc: asyncio.subprocess.Process, clone: Path) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(2400):  # a first run installs everything: allow a few minutes
            assert proc.returncode is None, f"run_all.sh exited:\n{_server_log(clone)}"
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


def _started_block(log: str, url: str, pgdata: Path) -> None:
    """Start-up ends with where everything is, and no warnings come before it."""
    assert f"pgqueue is serving on {url}" in log, log
    for where in (
        f"{url}/docs",
        f"{url}/ui",
        f"postgresql://pgqueue_runtime@/postgres?host={pgdata}",
    ):
        assert where in log, log
    assert ".venv/bin/pgqueue psql" in log and ".venv/bin/pgqueue dsn" in log, log
    assert "warning" not in log.lower(), log


@pytest.mark.timeout(600)
async def test_run_all_from_a_clean_clone_serves_and_keeps_data(clean_clone: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pgdata = clean_clone / ".pgqueue" / "pgdata"
    log = clean_clone.parent / "run_all.log"

    proc = await _start(clean_clone, port)
    try:
        await _healthy(url, proc, clean_clone)
        async with httpx.AsyncClient(base_url=url) as http:
            created = await http.post("/topics", json={"name": "kept"})
            assert created.status_code == 201, (created.text, _server_log(clean_clone))
            assert (await http.get("/docs")).status_code == 200
    finally:
        await _interrupt(proc)
    first = log.read_text(errors="replace")
    assert "installing pgqueue" in first
    _started_block(first, url, pgdata)
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists(), "Ctrl-C left the embedded server running"

    proc = await _start(clean_clone, port)
    try:
        await _healthy(url, proc, clean_clone)
        async with httpx.AsyncClient(base_url=url) as http:
            assert [t["name"] for t in (await http.get("/topics")).json()] == ["kept"]
    finally:
        await _interrupt(proc)
    second = log.read_text(errors="replace")[len(first) :]
    assert "installing" not in second, "nothing changed, yet run_all.sh installed again"
    _started_block(second, url, pgdata)
    assert not (pgdata / "postmaster.pid").exists()
