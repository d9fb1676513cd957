"""A real uvicorn server (in a thread) serving the combined app on the test's database."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from pgqueue.migrate import RUNTIME_ROLE, as_role
from pgqueue.settings import Settings
from pgqueue.web.combined import create_app
from pgqueue.web.serve import uvicorn_config


@dataclass
class RunningServer:
    url: str
    ws_url: str
    settings: Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(
    settings: Settings, app: FastAPI | None = None, *, log_level: str = "warning"
) -> Iterator[RunningServer]:
    """The combined app of these settings (or `app`) in a uvicorn server of its own."""
    port = free_port()
    config = uvicorn_config(
        app or create_app(settings),
        settings,
        host="127.0.0.1",
        port=port,
        log_level=log_level,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def server_settings(database_dsn: str) -> Settings:
    # As the deployed server runs: the runtime role, which may only call the API.
    return Settings(
        database_url=as_role(database_dsn, RUNTIME_ROLE), ws_send_timeout=2.0, poll_interval=30.0
    )


@pytest.fixture
def server(server_settings: Settings) -> Iterator[RunningServer]:
    with serving(server_settings) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client
