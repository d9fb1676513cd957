"""Running an app under uvicorn with our settings (frame limit, bind address)."""

from __future__ import annotations

import uvicorn

from pgqueue.settings import Settings


def run(
    factory: str, *, default_port: int, host: str | None = None, port: int | None = None
) -> None:
    settings = Settings()
    uvicorn.run(
        factory,
        factory=True,
        host=host or settings.host,
        port=port or default_port,
        ws_max_size=settings.ws_max_frame_bytes,
        log_level="info",
    )
