"""Size limits of the fields around a payload, checked by the library itself.

Every way in (REST, v1, WebSocket frames, the library) reaches the database through the
library, so the limits hold the same on each; a field over its limit raises FieldTooLarge,
naming the field, its size and the setting, before anything is stored. Sizes are UTF-8 bytes.
The payload's own limit is the topic's max_payload_bytes (pgqueue.codec).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgqueue.errors import FieldTooLarge, InvalidArgument

if TYPE_CHECKING:
    from pgqueue.settings import Settings

# A btree entry holds at most 2704 bytes (a third of a page); the idempotency index stores
# the key beside the topic id, so keys stay well below that.
MAX_INDEXED_BYTES = 2000
# JSON nesting the read paths can always hand back (the SQL publish check allows the same).
MAX_DEPTH = 99


@dataclass(frozen=True)
class FieldLimits:
    """Largest size of each field, in UTF-8 bytes (headers: their JSON text)."""

    headers: int = 16 * 1024
    key: int = 1024
    idempotency_key: int = 512
    correlation_id: int = 1024
    reply_to: int = 1024
    description: int = 4 * 1024
    filter: int = 4 * 1024

    @classmethod
    def of(cls, settings: Settings) -> FieldLimits:
        return cls(
            headers=settings.max_headers_bytes,
            key=settings.max_key_bytes,
            idempotency_key=settings.max_idempotency_key_bytes,
            correlation_id=settings.max_correlation_id_bytes,
            reply_to=settings.max_reply_to_bytes,
            description=settings.max_description_bytes,
            filter=settings.max_filter_bytes,
        )

    def check_text(self, field: str, value: str | None) -> None:
        """Raises FieldTooLarge when value is over the limit of `field`, InvalidArgument when
        it is not text PostgreSQL can store."""
        if value is None:
            return
        if not isinstance(value, str):
            raise InvalidArgument(f"{field} must be a string, got {type(value).__name__}")
        limit: int = getattr(self, field)
        size = len(value) if value.isascii() else utf8_size(value, field)
        if size > limit:
            raise too_large(field, size, limit)
        if "\x00" in value:
            raise InvalidArgument(f"{field} contains \\u0000, which PostgreSQL cannot store")


DEFAULT_LIMITS = FieldLimits()


def utf8_size(text: str, what: str) -> int:
    """The UTF-8 size of text; InvalidArgument for a lone surrogate (not Unicode text)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise InvalidArgument(
            f"{what} contains a lone surrogate ({text[error.start]!r}), which is not valid Unicode"
        ) from error


def too_large(field: str, size: int, limit: int) -> FieldTooLarge:
    setting = f"PGQUEUE_MAX_{field.upper()}_BYTES"
    return FieldTooLarge(f"{field} is {size} bytes; the limit is {limit} ({setting})")


def depth_over(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON-like value holds a value more than `limit` levels below its top (what
    the SQL publish check finds with '$.**{100}')."""
    containers = [value] if isinstance(value, dict | list) else []
    for _ in range(limit):
        containers = [
            child
            for node in containers
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
        if not containers:
            return False
    return any(len(node) for node in containers)
