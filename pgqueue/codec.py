"""JSON at the library's edge: checked before it reaches the database.

PostgreSQL's jsonb has no NaN or Infinity, no \\u0000 and no lone surrogates, and the topic has
a size limit; a payload that breaks one of these is refused here with InvalidPayload or
PayloadTooLarge rather than as a driver error halfway through a batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pgqueue.errors import InvalidPayload, PayloadTooLarge

# \u0000 as a JSON escape: preceded by an even number of backslashes (so not "\\u0000" text).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# One encoder for every call: json.dumps with non-default options builds a new one each time.
_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def encode(value: Any, *, limit: int | None = None, what: str = "payload") -> str:
    """JSON text for a payload; raises InvalidPayload or PayloadTooLarge."""
    try:
        text = _ENCODER.encode(value)
    except ValueError as error:
        raise InvalidPayload(f"{what} is not valid JSON: {error}") from error
    except TypeError as error:
        raise InvalidPayload(f"{what} is not JSON-serialisable: {error}") from error
    except RecursionError as error:
        # The database refuses anything nested 100 levels or more anyway.
        raise InvalidPayload(f"{what} is nested more than 99 levels deep") from error
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise InvalidPayload(f"{what} contains \\u0000, which PostgreSQL cannot store")
    size = _utf8_size(text, what)
    if limit is not None and size > limit:
        raise PayloadTooLarge(f"{what} is {size} bytes; the limit is {limit}")
    return text


def _utf8_size(text: str, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as error:
        # A lone surrogate ("\\ud800" in the JSON a client sent): not Unicode text at all.
        raise InvalidPayload(
            f"{what} contains a lone surrogate ({text[error.start]!r}), which is not valid Unicode"
        ) from error


def encode_array(values: Sequence[Any], *, limit: int | None = None) -> str:
    """One JSON array text for a batch of payloads, each checked as encode() checks it.

    One encoder call for the whole batch costs less than half of one call per payload. When
    the batch as a whole is refused or is over the limit, the payloads are encoded one by one
    to find the one at fault (or to find that each fits on its own).
    """
    try:
        text: str | None = _ENCODER.encode(list(values))
    except (ValueError, TypeError, RecursionError):
        text = None
    if text is None or ("\\u0000" in text and _NUL_ESCAPE.search(text)) or not _fits(text, limit):
        return join_array([encode(value, limit=limit) for value in values])
    return text


def _fits(text: str, limit: int | None) -> bool:
    """Whether text is storable Unicode of at most `limit` UTF-8 bytes."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return limit is None or size <= limit


def join_array(texts: Sequence[str]) -> str:
    """A JSON array of already encoded values."""
    return "[" + ",".join(texts) + "]"


def encode_headers(headers: Mapping[str, str] | None) -> str:
    """JSON text for headers: an object whose values are strings (so nested one level only)."""
    if not headers:
        return "{}"
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidPayload("headers must be an object of string keys and string values")
    return encode(dict(headers), what="headers")


def decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)
