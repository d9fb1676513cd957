"""Running an app under uvicorn with our settings (frame limit, bind address)."""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from pgqueue.settings import Settings
from pgqueue.web.exposure import UnsafeBind, check_bind

# Our loggers: the library's and the services'.
LOGGERS = ("pgqueue", "service_publish", "service_subscribe")


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


def run(
    factory: str,
    *,
    default_port: int,
    host: str | None = None,
    port: int | None = None,
    insecure: bool = False,
) -> None:
    """Serves the app `factory` makes; exits with a message rather than expose an open API."""
    log_to_stderr()
    settings = Settings()
    host = host or settings.host
    try:
        check_bind(settings, host, insecure=insecure)
    except UnsafeBind as error:
        raise SystemExit(f"pgqueue: {error}") from None
    # The factory reads its own Settings: it must know the address (its Host allow-list).
    os.environ["PGQUEUE_HOST"] = host
    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port or default_port,
        ws_max_size=settings.ws_max_frame_bytes,
        log_level="info",
    )


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
