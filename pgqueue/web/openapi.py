"""The OpenAPI document as the server really answers, built in one place from the route table.

FastAPI documents each route from its signature; what it cannot see is added here, for every
route alike, so that the route modules stay free of documentation boilerplate:
- the error body every handler in pgqueue.web.errors sends, on each status a route can give;
- the bearer scheme on every route guarded by pgqueue.web.auth;
- parameters of routes that parse their request by hand (the v1 API), declared with `declare`;
- an operationId per operation (a route serving several methods would repeat one).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel, Field

AUTH_MODULE = "pgqueue.web.auth"
SCHEME = "HTTPBearer"  # the name FastAPI's own HTTPBearer would give it
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
REF = "#/components/schemas/{model}"
# What pgqueue._check_name accepts, for the topic and subscriber names in paths.
# Integers a JSON client holds exactly (a double's range, as in JavaScript); a bound this size
# also survives FastAPI's conversion of the document's numbers to float.
SAFE_INTEGER = 2**53
NAME: dict[str, Any] = {
    "type": "string",
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
    "description": "1-100 letters, digits, '.', '_' or '-'; the first a letter or digit.",
}
IN_PATH: dict[str, dict[str, Any]] = {
    "topic": {**NAME, "description": "The topic's name.", "examples": ["orders"]},
    "name": {**NAME, "description": "The subscriber's name.", "examples": ["billing"]},
    "subscriber_id": {
        "type": "integer",
        "minimum": 1,
        "exclusiveMaximum": SAFE_INTEGER,
        "description": "The subscriber's subscriber_id.",
        "examples": [1],
    },
}


class Problem(BaseModel):
    loc: list[str | int] = Field(
        description="Where the problem is: body, query or path, then the field."
    )
    msg: str = Field(description="What is wrong there.")


class ErrorBody(BaseModel):
    """Every error answer of the server."""

    error: str = Field(
        description="A stable code to branch on, e.g. topic_not_found or invalid_request.",
        examples=["topic_not_found"],
    )
    detail: str | list[Problem] = Field(
        description="A plain message; for invalid_request, the problems found in the request.",
        examples=["topic 'orders' does not exist"],
    )
    id: str | None = Field(
        default=None,
        description="For error internal (status 500) only: the id the server logged the "
        "error under.",
    )


ERRORS: dict[int, str] = {
    400: "The request is malformed, or was refused before it reached the operation.",
    401: "A valid bearer token is required (when the server has tokens configured).",
    403: "The token does not grant this operation.",
    404: "The topic or subscriber does not exist.",
    409: "It exists already, or the lease it refers to was lost.",
    413: "The request body or a payload is larger than the server accepts.",
    415: "The body must be JSON (application/json).",
    422: "The request is invalid; the detail says where and why.",
    429: "Too many requests for this token; try again later.",
    503: "The database is unavailable; try again later.",
}

# RFC 6750: a 401 names the scheme to authenticate with.
CHALLENGE = {
    "WWW-Authenticate": {
        "description": "Bearer",
        "required": True,
        "schema": {"type": "string"},
    }
}


@dataclass(frozen=True)
class Declared:
    """The inputs of a route that reads its request by hand: each field is a query parameter
    on methods without a body, and a property of the JSON body on the others."""

    properties: Mapping[str, Mapping[str, Any]]
    required: tuple[str, ...] = ()
    examples: tuple[Mapping[str, Any], ...] = field(default=())


def declare(app: FastAPI, path: str, declared: Declared) -> None:
    """Documents the inputs of the operations at `path`, whatever methods it serves."""
    _declared(app)[path] = declared


def install(app: FastAPI) -> None:
    """Makes app.openapi() build the document described in this module's docstring."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI) -> dict[str, Any]:
    with warnings.catch_warnings():
        # A route serving several methods repeats its id once per method; made unique below.
        warnings.filterwarnings("ignore", "Duplicate Operation ID")
        doc = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
            servers=app.servers,
        )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    error_schema = ErrorBody.model_json_schema(ref_template=REF)
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorBody"] = error_schema
    doc["components"]["securitySchemes"] = {
        SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from PGQUEUE_API_TOKENS. With no tokens configured, every "
            "route is open (and the server should listen on loopback only).",
        }
    }
    declared = _declared(app)
    for route, method, operation in _operations(app, doc):
        inputs = declared.get(route.path_format or "")
        if inputs is not None:
            _document_inputs(operation, method, inputs)
        _document_path(operation)
        _document_errors(method, operation, guarded=_guarded(route.dependant))
    _make_ids_unique(doc)
    return doc


def _declared(app: FastAPI) -> dict[str, Declared]:
    if not hasattr(app.state, "declared_inputs"):
        app.state.declared_inputs = {}
    declared: dict[str, Declared] = app.state.declared_inputs
    return declared


def _operations(
    app: FastAPI, doc: dict[str, Any]
) -> Iterator[tuple[RouteContext, str, dict[str, Any]]]:
    """Each documented operation with its route as included (prefix and router dependencies
    applied)."""
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in sorted(route.methods or ()):
            operation = doc["paths"].get(route.path_format or "", {}).get(method.lower())
            if operation is not None:
                yield route, method, operation


def _guarded(dependant: Dependant) -> bool:
    """Whether a dependency of the route (at any depth) comes from the auth module."""
    return any(
        getattr(d.call, "__module__", None) == AUTH_MODULE or _guarded(d)
        for d in dependant.dependencies
    )


def _document_inputs(operation: dict[str, Any], method: str, inputs: Declared) -> None:
    if method in BODY_METHODS:
        schema: dict[str, Any] = {"type": "object", "properties": dict(inputs.properties)}
        if inputs.required:
            schema["required"] = list(inputs.required)
        if inputs.examples:
            schema["examples"] = list(inputs.examples)
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
        return
    operation["parameters"] = [
        {
            "name": name,
            "in": "query",
            "required": name in inputs.required,
            "schema": dict(schema),
            **({"description": schema["description"]} if "description" in schema else {}),
        }
        for name, schema in inputs.properties.items()
    ]


def _document_path(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", ()):
        known = IN_PATH.get(parameter["name"]) if parameter["in"] == "path" else None
        if known is not None:
            parameter["schema"] = {**parameter["schema"], **known}
            parameter.setdefault("description", known["description"])
            # What Swagger's "Try it out" pre-fills (it does not read the schema's examples).
            parameter.setdefault("example", known["examples"][0])


def _document_errors(method: str, operation: dict[str, Any], *, guarded: bool) -> None:
    takes_body = "requestBody" in operation
    has_inputs = takes_body or bool(operation.get("parameters"))
    statuses = {400, 503}
    if guarded:
        statuses |= {401, 403, 429}
    if has_inputs or "422" in operation.get("responses", {}):
        statuses.add(422)
    if any(p["in"] == "path" for p in operation.get("parameters", ())):
        # a topic, subscriber name or subscriber id that may not exist
        statuses.add(404)
    if method == "POST":
        statuses.add(409)
    if takes_body:
        statuses |= {413, 415}
    responses = operation.setdefault("responses", {})
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": ERRORS[status],
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}},
            **({"headers": CHALLENGE} if status == 401 else {}),
        }
    if guarded:
        operation.setdefault("security", [{SCHEME: []}])


def _make_ids_unique(doc: dict[str, Any]) -> None:
    """A route serving several methods gives each the same id: suffix those with the method."""
    seen: dict[str, int] = {}
    for item in doc["paths"].values():
        for operation in item.values():
            seen[operation["operationId"]] = seen.get(operation["operationId"], 0) + 1
    for item in doc["paths"].values():
        for method, operation in item.items():
            if seen[operation["operationId"]] > 1:
                operation["operationId"] = f"{operation['operationId']}_{method}"
