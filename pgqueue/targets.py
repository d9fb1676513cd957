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

from pgqueue.errors import InvalidPosition

_SHORT_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
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
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    try:
        return _TIMEDELTA.validate_python(text.strip())
    except ValidationError as error:
        raise InvalidPosition(f"not a duration: {text!r}") from error


def parse_target(value: Any) -> Target:
    """A Target from any supported form; raises InvalidPosition."""
    if isinstance(value, Target):
        return value
    if isinstance(value, bool):
        raise InvalidPosition(f"not a position: {value!r}")
    if isinstance(value, int):
        return Target(offset=_bigint(value, value))
    if isinstance(value, datetime):
        return Target(time=value)
    if isinstance(value, timedelta):
        return Target(ago=value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidPosition(f"not a position: {value!r}")
    text = value.strip()
    if text in ("earliest", "latest"):
        return Target(edge=text)
    if re.fullmatch(r"\d+", text):
        return Target(offset=_bigint(int(text), value))
    if re.fullmatch(r"[+-]\d+", text):
        return Target(shift=_bigint(int(text), value))
    if text.startswith("ago:"):
        return Target(ago=parse_duration(text[4:]))
    if _SHORT_DURATION.match(text) or text.startswith("P"):
        return Target(ago=parse_duration(text))
    try:
        moment = _DATETIME.validate_python(text)
    except ValidationError as error:
        raise InvalidPosition(
            f"not a position: {value!r} (use an offset, earliest, latest, an ISO time, "
            "a duration such as 5m, or +N/-N)"
        ) from error
    if moment.tzinfo is None:
        raise InvalidPosition(f"give the time zone of {value!r} (for example ...Z)")
    return Target(time=moment)


def _bigint(number: int, value: Any) -> int:
    # Offsets are PostgreSQL bigints: a larger number is a typo, not a position.
    if not -(2**63) <= number < 2**63:
        raise InvalidPosition(f"not a position: {value!r} is out of range")
    return number
