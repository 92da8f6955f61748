"""Every error is RFC 9457 problem+json: status, title, detail, and `errors` naming field and reason."""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin

from service.store.interface import FAULT_DESCRIPTIONS, Fault, StorageUnavailable, UnstorableText

log = logging.getLogger("service.api")


class FieldError(Exception):
    """A request the service understands but refuses, pointing at the field at fault."""

    def __init__(self, status: int, field: str, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.status = status
        self.field = field
        self.reason = reason
        self.detail = detail or reason


def problem(
    status: int, detail: str, errors: list[dict[str, Any]] | None = None, **extra: Any
) -> ProblemDetailsException:
    body: dict[str, Any] = dict(extra)
    if errors:
        body["errors"] = errors
    return ProblemDetailsException(
        status_code=status,
        title=HTTPStatus(status).phrase,
        detail=detail,
        type_="about:blank",
        extra=body or None,
    )


# Where Litestar says a refused value came from, when it is not the body.
_PARAMETER_SOURCES = frozenset({"query", "path", "header", "cookie"})


def _validation_errors(exc: ValidationException) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The field errors of a refused request: (those in the body, those in query/path/header/cookie)."""
    if not isinstance(exc.extra, list):
        return [], []
    body: list[dict[str, Any]] = []
    parameters: list[dict[str, Any]] = []
    for item in exc.extra:
        if isinstance(item, dict):
            key = item.get("key") or "body"
            if key == "data":  # Litestar's name for the whole body (e.g. `null` where an object belongs)
                key = "body"
            error = {"field": str(key), "reason": str(item.get("message", "invalid"))}
            source = item.get("source")
            source = getattr(source, "value", source)  # a ParamType member, or "body"
            (parameters if source in _PARAMETER_SOURCES else body).append(error)
    return body, parameters


def _from_validation(exc: ValidationException) -> ProblemDetailsException:
    body, parameters = _validation_errors(exc)
    if parameters:
        # A query, path or header value of the wrong type or out of range: a bad request, not a bad body.
        return problem(400, "A query, path or header value is not valid", parameters + body)
    if body:
        # Well-formed JSON of the wrong shape: the request is understood but cannot be processed.
        return problem(422, "The request body does not have the expected shape", body)
    return problem(400, "The request body is not valid JSON", [{"field": "body", "reason": str(exc.detail)}])


# The part of the request an error without a more precise field points at.
_FIELD_BY_STATUS = {400: "body", 401: "Authorization", 403: "Authorization", 404: "path", 405: "method"}


def _from_http(exc: HTTPException) -> ProblemDetailsException:
    if isinstance(exc, ProblemDetailsException):
        return exc
    if isinstance(exc, ValidationException):
        return _from_validation(exc)
    if exc.status_code >= 500:
        # A server-side HTTPException (e.g. a misconfiguration Litestar reports as 500): never leak its text.
        log.error("server error %s: %s", exc.status_code, exc.detail)
        p = problem(exc.status_code, "The service could not process this request")
        p.headers = exc.headers
        return p
    detail = str(exc.detail) if exc.detail else HTTPStatus(exc.status_code).phrase
    errors: list[dict[str, Any]] = []
    if exc.status_code == 413:
        errors = [{"field": "body", "reason": "request body is larger than the configured limit"}]
    elif exc.status_code in _FIELD_BY_STATUS:
        errors = [{"field": _FIELD_BY_STATUS[exc.status_code], "reason": detail}]
    p = problem(exc.status_code, detail, errors)
    p.headers = exc.headers
    return p


def _from_field_error(exc: FieldError) -> ProblemDetailsException:
    return problem(exc.status, exc.detail, [{"field": exc.field, "reason": exc.reason}])


def _from_unstorable(_: UnstorableText) -> ProblemDetailsException:
    return problem(422, "The upload holds text this deployment's database cannot store; nothing of it was written",
                   [{"field": "body", "reason": "a text value holds the NUL character (U+0000), which PostgreSQL "
                     "text cannot hold; send it without that character"}])


# Seconds a client is asked to wait when the database cannot take a write (a held lock clears in
# seconds; a full disk or a read-only mount needs an operator, and the client retries anyway).
RETRY_AFTER_S = 30


def unavailable(fault: Fault) -> ProblemDetailsException:
    """503 for a storage fault: the request was fine and can be sent again as it is."""
    p = problem(503, f"The service cannot store data right now: {FAULT_DESCRIPTIONS[fault]}; retry later",
                [{"field": "database", "reason": fault.value}])
    p.headers = {"Retry-After": str(RETRY_AFTER_S)}
    return p


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    db = getattr(request.app.state, "db", None)
    fault = exc.fault if isinstance(exc, StorageUnavailable) else db.fault_of(exc) if db is not None else None
    if fault is not None:
        log.error("storage fault on %s %s: %s: %s", request.method, request.url.path, fault.value, exc)
        return unavailable(fault).to_response(request)
    # Never leak internals; the log has the traceback.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "The service could not process this request").to_response(request)


def problem_details_plugin() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(
        ProblemDetailsConfig(
            enable_for_all_http_exceptions=True,
            exception_to_problem_detail_map={HTTPException: _from_http, FieldError: _from_field_error,
                                            UnstorableText: _from_unstorable},
        )
    )


unexpected_error_handlers: dict[int | type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]] = {
    Exception: _unexpected
}


class FieldProblem(msgspec.Struct):
    field: str
    reason: str


class ProblemDetail(msgspec.Struct):
    """RFC 9457 problem details as this service sends them."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] = []


_STATUS_DESCRIPTIONS = {
    400: "Unreadable JSON, or a bad header, cursor or query value",
    401: "Missing, expired or wrongly signed token",
    403: "The caller may not do this (support routes need an admin)",
    404: "No such user",
    409: "The device's declaration does not match what was received",
    413: "Request body larger than the configured limit",
    415: "The body is not declared as application/json",
    422: "Well-formed body of the wrong shape, or an idempotency key reused with another body",
    503: "The database cannot take a write now (locked, disk full, read-only, I/O error): retry after `Retry-After`",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem+json answers a route can give."""
    return {
        status: ResponseSpec(
            data_container=ProblemDetail,
            generate_examples=False,
            description=_STATUS_DESCRIPTIONS[status],
            media_type="application/problem+json",
        )
        for status in statuses
    }
