"""PgQueueError → HTTP, in one place: JSON {"error": code, "detail": text}."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from pgqueue import errors
from pgqueue.web.incidents import incident, internal_body

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
        status = status_of(error)
        # An outage is logged by the Queue once, when it starts and when it ends; logged
        # here it would be a line per request for as long as it lasts.
        if status >= 500 and not isinstance(error, errors.DatabaseUnavailable):
            incident_id = incident(f"{request.method} {request.url.path} failed", error)
            return JSONResponse(internal_body(incident_id), status_code=500)
        return error_response(status, error.code, str(error))

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
