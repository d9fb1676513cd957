"""Running an app under uvicorn with our settings (frame limit, bind address)."""

from __future__ import annotations

import logging

import uvicorn

from pgqueue.settings import Settings

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
    factory: str, *, default_port: int, host: str | None = None, port: int | None = None
) -> None:
    log_to_stderr()
    settings = Settings()
    uvicorn.run(
        factory,
        factory=True,
        host=host or settings.host,
        port=port or default_port,
        ws_max_size=settings.ws_max_frame_bytes,
        log_level="info",
    )
