"""Running an app under uvicorn with our settings: bind address, frame size, and the limits
an exposed server needs (pgqueue.web.protocol). One Config builder for the commands and the
tests, so the tests exercise what runs."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from pgqueue.settings import Settings
from pgqueue.web.exposure import UnsafeBind, check_bind
from pgqueue.web.protocol import HttpLimits, protocol_for

# Our loggers: the library's and the services'.
LOGGERS = ("pgqueue", "service_publish", "service_subscribe")
STARTUP_FAILURE = 3  # uvicorn's exit status when the server did not start


def log_to_stderr() -> None:
    """Shows pgqueue's own log lines (waiting for the database, outages, slow clients) at
    INFO beside uvicorn's. For the server commands only: the library configures nothing."""
    formatter = logging.Formatter("%(levelname)s:     %(name)s: %(message)s")
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if logger.handlers:
            continue
        handler = logging.StreamHandler()
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def uvicorn_config(
    app: Any, settings: Settings, *, host: str, port: int, **options: Any
) -> uvicorn.Config:
    """uvicorn's Config for `app` (an ASGI app, or an import string with factory=True)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_for(HttpLimits.of(settings)),
        ws_max_size=settings.ws_max_frame_bytes,
        **options,
    )


def run(
    factory: str,
    *,
    default_port: int,
    host: str | None = None,
    port: int | None = None,
    on_ready: Callable[[], None] | None = None,
    insecure: bool = False,
) -> None:
    """Serves the app `factory` makes until a signal; on_ready is called once the server
    listens. Exits with a message rather than expose an open API."""
    log_to_stderr()
    settings = Settings()
    host = host or settings.host
    try:
        check_bind(settings, host, insecure=insecure)
    except UnsafeBind as error:
        raise SystemExit(f"pgqueue: {error}") from None
    # The factory reads its own Settings: it must know the address (its Host allow-list).
    os.environ["PGQUEUE_HOST"] = host
    config = uvicorn_config(
        factory,
        settings,
        host=host,
        port=port or default_port,
        factory=True,
        log_level="info",
    )
    server = _Server(config, on_ready)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: a second Ctrl-C
        server.run()
    if not server.started:  # the port was taken, the app did not start: logged already
        sys.exit(STARTUP_FAILURE)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()


def run_service(factory: str, *, default_port: int) -> None:
    """`python -m service_...`: the options a service takes on its command line."""
    parser = argparse.ArgumentParser(description=f"Serve {factory.split('.')[0]}.")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback PGQUEUE_HOST without tokens (everyone is admin)",
    )
    options = parser.parse_args()
    run(factory, default_port=default_port, insecure=options.insecure)
