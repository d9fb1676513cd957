"""Running an app under uvicorn with our settings: bind address, frame size, and the limits
an exposed server needs (pgqueue.web.protocol). One Config builder for the commands and the
tests, so the tests exercise what runs."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

import uvicorn

from pgqueue.settings import Settings
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
    factory: str, *, default_port: int, host: str | None = None, port: int | None = None
) -> None:
    log_to_stderr()
    settings = Settings()
    config = uvicorn_config(
        factory,
        settings,
        host=host or settings.host,
        port=port or default_port,
        factory=True,
        log_level="info",
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: a second Ctrl-C
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
