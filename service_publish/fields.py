"""Field types the request bodies share, with the JSON Schema of what the server accepts.

Names, positions and filters are checked by the database, in one place; here their schemas
only say which forms it takes, so that the OpenAPI document promises no more than that.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import Field, WithJsonSchema

from pgqueue.web.openapi import NAME, SAFE_INTEGER

# An offset or a lease token never comes near the largest JSON-safe integer.
SAFE = SAFE_INTEGER
Offset = Annotated[int, Field(ge=1, lt=SAFE)]
LeaseToken = Annotated[int, Field(ge=1, lt=SAFE)]

_OFFSET = {"type": "integer", "minimum": 1, "exclusiveMaximum": SAFE}
_EDGE = {"type": "string", "enum": ["earliest", "latest"]}
_TIME = {"type": "string", "format": "date-time"}
_OFFSET_TEXT = {"type": "string", "pattern": "^[1-9][0-9]{0,14}$"}
_SHIFT = {"type": "string", "pattern": "^[+-][0-9]{1,15}$"}
_AGO = {
    "type": "string",
    "pattern": r"^(ago:)?([0-9]{1,5}[dhm]|[0-9]{1,5}(\.[0-9]{1,6})?s"
    r"|P[0-9]{1,5}D|PT[0-9]{1,5}[HMS])$",
}

Name = Annotated[str, WithJsonSchema(NAME)]
Start = Annotated[Offset | str, WithJsonSchema({"anyOf": [_OFFSET, _EDGE, _TIME, _OFFSET_TEXT]})]
Target = Annotated[
    Offset | str,
    WithJsonSchema({"anyOf": [_OFFSET, _EDGE, _TIME, _OFFSET_TEXT, _SHIFT, _AGO]}),
]
Filter = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "payload": {"description": "JSON the payload must contain."},
                "headers": {"type": "object", "description": "Headers the message must have."},
                "match": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": 'A glob per header ("*" any text, "?" one character).',
                },
            },
        }
    ),
]


def whole_numbers(value: Any, annotation: Any) -> Any:
    """2.0 as 2 where the field takes integers and not floats: JSON Schema counts 2.0 as an
    integer, strict validation would refuse it."""
    kinds = _kinds(annotation)
    if isinstance(value, float) and value.is_integer() and int in kinds and float not in kinds:
        return int(value)
    if isinstance(value, list):
        items = [get_args(k)[0] for k in kinds if get_origin(k) is list and get_args(k)]
        if items:
            return [whole_numbers(v, items[0]) for v in value]
    return value


def _kinds(annotation: Any) -> set[Any]:
    """The types an annotation admits, through Annotated, unions and Optional."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kinds(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return set().union(*(_kinds(a) for a in get_args(annotation)))
    return {annotation}
