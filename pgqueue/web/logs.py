"""Keeps bearer tokens out of uvicorn's log lines.

Tokens do not belong in URLs (a WebSocket client sends one in a header or a subprotocol), but
an old client may still put one in `?token=`; uvicorn writes the path with its query string to
the access log (HTTP) and to its error log (WebSocket handshakes), so the value is masked there.
"""

from __future__ import annotations

import logging
import re

UVICORN_LOGGERS = ("uvicorn.access", "uvicorn.error")
_TOKEN_IN_QUERY = re.compile(r"([?&](?:access_)?token=)[^&\s\"]*", re.IGNORECASE)
MASK = "***"


def scrub(text: str) -> str:
    return _TOKEN_IN_QUERY.sub(rf"\g<1>{MASK}", text)


class TokenScrubber(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(scrub(a) if isinstance(a, str) else a for a in record.args)
        return True


def scrub_tokens_from_uvicorn_logs() -> None:
    """Idempotent: every app factory calls it, whoever runs the app."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenScrubber) for f in logger.filters):
            logger.addFilter(TokenScrubber())
