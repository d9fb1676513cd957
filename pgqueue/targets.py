"""Where a reset, a seek or a new subscriber goes: one parser for every written form.

42 / "42"               next message delivered is offset 42
"earliest" / "latest"   the oldest retained message / only new messages
datetime / ISO time     the first message published at or after that time
timedelta / "5m" / "PT5M" / "ago:1h"   that long ago
"+10" / "-10"           shift the current position by N
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from pgqueue.errors import InvalidPosition, shorten

# ASCII digits only: \d and int() would also read other scripts' digits ("١٢" as 12).
_SHORT_DURATION = re.compile(
    r"^(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+(?:\.[0-9]+)?)s)?$"
)
_OFFSET = re.compile(r"[0-9]+")
_SHIFT = re.compile(r"[+-][0-9]+")
BIGINT_MAX = 2**63 - 1  # offsets and shifts are PostgreSQL bigints
# Longer ago than any message can have been published (and than a timestamp reaches back).
MAX_AGO = timedelta(days=1000 * 366)
_DATETIME = TypeAdapter(datetime)
_TIMEDELTA = TypeAdapter(timedelta)


@dataclass(frozen=True)
class Target:
    """Exactly one field is set; they map to pgqueue.reset's arguments."""

    offset: int | None = None
    edge: str | None = None
    time: datetime | None = None
    ago: timedelta | None = None
    shift: int | None = None

    def args(self) -> tuple[int | None, str | None, datetime | None, timedelta | None, int | None]:
        return self.offset, self.edge, self.time, self.ago, self.shift


def parse_duration(text: str) -> timedelta:
    """'90s', '5m', '1h30m', '2d' or ISO 8601 ('PT5M')."""
    match = _SHORT_DURATION.match(text.strip())
    if match and any(match.groups()):
        days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        try:
            duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        except (OverflowError, ValueError) as error:
            raise _too_long(text) from error
    else:
        try:
            duration = _TIMEDELTA.validate_python(text.strip())
        except ValidationError as error:
            raise InvalidPosition(f"not a duration: {shorten(repr(text), 100)}") from error
    return _checked_ago(duration, text)


def _checked_ago(duration: timedelta, text: str | None = None) -> timedelta:
    if abs(duration) > MAX_AGO:
        raise _too_long(text or str(duration))
    return duration


def _too_long(text: str) -> InvalidPosition:
    return InvalidPosition(
        f"duration {shorten(text, 100)} is out of range (at most {MAX_AGO.days} days)"
    )


def _bigint(text: str, what: str) -> int:
    """An offset or shift from ASCII digits (with its sign), within PostgreSQL's bigint."""
    digits = text.lstrip("+-").lstrip("0") or "0"
    # Compared as text first: int() refuses strings over 4300 digits with a ValueError.
    if len(digits) > len(str(BIGINT_MAX)) or int(digits) > BIGINT_MAX:
        raise InvalidPosition(f"{what} {shorten(text, 40)} is out of range (at most {BIGINT_MAX})")
    return -int(digits) if text.startswith("-") else int(digits)


def parse_target(value: Any) -> Target:
    """A Target from any supported form; raises InvalidPosition."""
    if isinstance(value, Target):
        return value
    if isinstance(value, bool):
        raise InvalidPosition(f"not a position: {value!r}")
    if isinstance(value, int):
        if abs(value) > BIGINT_MAX:
            raise InvalidPosition(f"offset is out of range (at most {BIGINT_MAX})")
        return Target(offset=value)
    if isinstance(value, datetime):
        return Target(time=value)
    if isinstance(value, timedelta):
        return Target(ago=_checked_ago(value))
    if not isinstance(value, str) or not value.strip():
        raise InvalidPosition(f"not a position: {shorten(repr(value), 100)}")
    text = value.strip()
    if text in ("earliest", "latest"):
        return Target(edge=text)
    if _OFFSET.fullmatch(text):
        return Target(offset=_bigint(text, "offset"))
    if _SHIFT.fullmatch(text):
        return Target(shift=_bigint(text, "shift"))
    if text.startswith("ago:"):
        return Target(ago=parse_duration(text[4:]))
    if _SHORT_DURATION.match(text) or text.startswith("P"):
        return Target(ago=parse_duration(text))
    try:
        moment = _DATETIME.validate_python(text)
    except ValidationError as error:
        raise InvalidPosition(
            f"not a position: {shorten(repr(value), 100)} (use an offset, earliest, latest, "
            "an ISO time, a duration such as 5m, or +N/-N)"
        ) from error
    if moment.tzinfo is None:
        raise InvalidPosition(f"give the time zone of {value!r} (for example ...Z)")
    return Target(time=moment)
