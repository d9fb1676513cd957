"""JSON request bodies as the JSON standard has them, on every route and frame.

Python's parser also reads NaN, Infinity and -Infinity (which JSON does not have), turns
1e999 into an infinite float, and lets "\\ud800" through as a lone surrogate that no UTF-8
text (and no PostgreSQL value) can hold. Such a body is refused as malformed JSON instead,
before it can be stored as "nan" or fail deep inside a handler.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

# A \u escape of a surrogate; most are halves of valid pairs (emoji from ASCII-only encoders).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def loads(data: bytes | str) -> Any:
    """Parses JSON text; raises json.JSONDecodeError for anything that is not standard JSON."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
        if _SURROGATE_ESCAPE.search(raw):
            # Valid pairs were joined by the parser; only lone halves fail to encode.
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError as error:
        raise json.JSONDecodeError("the body is not UTF-8 text", "", error.start) from error
    except UnicodeEncodeError as error:
        problem = "a string holds a lone surrogate (\\u%04x), which is not Unicode text"
        raise json.JSONDecodeError(problem % ord(error.object[error.start]), "", 0) from error
    except RecursionError as error:
        raise json.JSONDecodeError("nested too deeply", "", 0) from error
    except ValueError as error:  # a constant, a number out of range
        problem = str(error)
        if "digits" in problem:  # int() refuses 4,300 digits and more
            problem = "a number has too many digits"
        raise json.JSONDecodeError(problem, "", 0) from error
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the number {text[:40]} is out of range")
    return number


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class JsonRoute(APIRoute):
    """An APIRoute whose JSON body is parsed by loads()."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
