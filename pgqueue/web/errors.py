"""PgQueueError → HTTP, in one place: JSON {"error": code, "detail": text}."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from pgqueue import errors
from pgqueue.web.incidents import DETAIL, incident, internal_body

STATUS: dict[type[errors.PgQueueError], int] = {
    errors.TopicNotFound: 404,
    errors.SubscriberNotFound: 404,
    errors.TopicExists: 409,
    errors.SubscriberExists: 409,
    errors.LeaseLost: 409,
    errors.LimitReached: 409,
    errors.TransactionRequired: 409,
    errors.PayloadTooLarge: 413,
    errors.InvalidName: 422,
    errors.InvalidArgument: 422,
    errors.InvalidPayload: 422,
    errors.InvalidFilter: 422,
    errors.InvalidPosition: 422,
    errors.DatabaseUnavailable: 503,
}


def status_of(error: errors.PgQueueError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


@dataclass(frozen=True)
class Told:
    """What a client is told of an error."""

    code: str
    detail: str
    incident_id: str | None = None  # set for an internal error, logged under this id


def told(error: errors.PgQueueError, what: str) -> Told:
    """A refusal as it is; anything else (an error the library could not name, whose text
    may quote the database) as an internal error, logged with its traceback under an id."""
    # An outage is logged by the Queue once, when it starts and when it ends; logged here it
    # would be a line per request for as long as it lasts.
    if status_of(error) < 500 or isinstance(error, errors.DatabaseUnavailable):
        return Told(error.code, str(error))
    return Told("internal", DETAIL, incident(what, error))


def error_response(status: int, code: str, detail: object) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def _message(problem: Mapping[str, Any]) -> str:
    message = str(problem.get("msg", ""))
    reason = (problem.get("ctx") or {}).get("error")
    # A malformed body's reason (NaN, a lone surrogate...) is worth more than "decode error".
    if problem.get("type") == "json_invalid" and reason:
        message = f"{message}: {reason}"
    return message


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.PgQueueError)
    async def on_queue_error(request: Request, error: errors.PgQueueError) -> JSONResponse:
        said = told(error, f"{request.method} {request.url.path} failed")
        if said.incident_id is not None:
            return JSONResponse(internal_body(said.incident_id), status_code=500)
        return error_response(status_of(error), said.code, said.detail)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [{"loc": list(e.get("loc", ())), "msg": _message(e)} for e in error.errors()]
        return error_response(422, "invalid_request", problems)

    @app.exception_handler(HTTPException)
    async def on_http_error(_request: Request, error: HTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "request_too_large",
        }.get(error.status_code, "http_error")
        response = error_response(error.status_code, code, error.detail)
        if error.headers:
            response.headers.update(error.headers)
        return response
