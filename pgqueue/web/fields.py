"""Bounded field types of the HTTP and WebSocket bodies.

Numbers in JSON bodies are strict (true is not 1, "7" is not 7) and within PostgreSQL's
bigint, so an out-of-range value is a 422 naming the field, never an overflow in the driver
or the database.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictInt

from pgqueue.targets import BIGINT_MAX

BigInt = Annotated[StrictInt, Field(ge=-BIGINT_MAX - 1, le=BIGINT_MAX)]
Offset = Annotated[StrictInt, Field(ge=1, le=BIGINT_MAX)]
# Where a reset, a seek or a new subscriber goes: an offset, or text for pgqueue.targets.
Target = Annotated[StrictInt, Field(ge=0, le=BIGINT_MAX)] | Annotated[str, Field(max_length=100)]
# Milliseconds of a delay or a backoff: at most a year (366 days), far inside an interval.
YEAR_MS = 366 * 24 * 3600 * 1000
Millis = Annotated[StrictInt, Field(ge=0, le=YEAR_MS)]
# Seconds of a retention age: at most 1000 years, inside both timedelta and interval.
MAX_AGE_S = 1000 * 366 * 24 * 3600
