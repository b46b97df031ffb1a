"""The HTTP face of errors: each domain error's status and code, in one table, the one error shape
of API.md, ``{"error": {"code", "message"}}``, and what a route declares it may answer
(:func:`responses`), from the same table."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse, OpenAPIResponseHeader
from pydantic import BaseModel

from myi.errors import (
    Conflict,
    DomainError,
    InvalidRequest,
    InvalidState,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
)


class Unauthenticated(DomainError):
    """No live session: a concern of the HTTP layer alone."""

    def __init__(self, message: str = "Sign in first: no live session.") -> None:
        super().__init__(message)


class Forbidden(DomainError):
    """The request came from an origin that may not change anything."""


class UnsupportedMediaType(DomainError):
    """The body was not sent as JSON."""


class HttpError(NamedTuple):
    status: int
    code: str
    meaning: str  # what the OpenAPI document says it means
    retry_after: bool = False  # answered with Retry-After


# The most specific class of an error decides (InvalidState before InvalidRequest).
STATUSES: dict[type[DomainError], HttpError] = {
    InvalidRequest: HttpError(
        400, "invalid_request", "a parameter or the body is wrong (the message names it)"
    ),
    InvalidState: HttpError(
        400, "invalid_state", "the sign-in is unknown, expired, already used or from another browser"
    ),
    Unauthenticated: HttpError(401, "unauthenticated", "no live session"),
    Forbidden: HttpError(403, "forbidden", "a state-changing request from an origin that is not the SPA's"),
    NotFound: HttpError(404, "not_found", "no such item of this user"),
    Conflict: HttpError(409, "conflict", "the user already has one of these running"),
    TooLarge: HttpError(413, "too_large", "the file is over the upload limit"),
    UnsupportedMediaType: HttpError(
        415, "unsupported_media_type", "the body is not sent as application/json"
    ),
    RateLimited: HttpError(429, "rate_limited", "try again after Retry-After seconds", retry_after=True),
    Unavailable: HttpError(
        503, "unavailable", "nothing was changed; try again after Retry-After seconds", retry_after=True
    ),
}


def _entry(cls: type[DomainError]) -> HttpError:
    for klass in cls.__mro__:
        if klass in STATUSES:
            return STATUSES[klass]
    return STATUSES[InvalidRequest]


def status_of(exc: DomainError) -> tuple[int, str]:
    entry = _entry(type(exc))
    return entry.status, entry.code


def error_body(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def error_response(status: int, code: str, message: str, headers: dict[str, Any] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=error_body(code, message),
        headers=headers or {},
    )


def response_for(exc: DomainError) -> Response:
    """The response of API.md for a domain error, with ``Retry-After`` where retrying can succeed."""
    status, code = status_of(exc)
    headers = {} if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}
    return error_response(status, code, exc.message, headers)


# --- what a route declares -------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    """The one error shape of API.md."""

    error: ErrorDetail


OK: dict[int, OpenAPIResponse] = {200: {"description": "Successful Response"}}
_RETRY_AFTER: dict[str, OpenAPIResponseHeader] = {
    "Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}
}


def responses(
    *errors: type[DomainError], ok: Mapping[int, OpenAPIResponse] = OK
) -> dict[int, OpenAPIResponse]:
    """A route's ``responses=``: its success (``ok``; without ``content`` the route's return type is
    its body) and, for each status its ``errors`` can answer, the error shape with the codes it may
    carry. A route lists every error it answers, its own and those answered before it is reached
    (:mod:`myi.api.session`'s gate, the body's depth, request validation)."""
    by_status: dict[int, list[HttpError]] = {}
    for cls in errors:
        entry = _entry(cls)
        codes = by_status.setdefault(entry.status, [])
        if entry not in codes:
            codes.append(entry)
    declared: dict[int, OpenAPIResponse] = dict(ok)
    for status in sorted(by_status):
        entries = by_status[status]
        response: OpenAPIResponse = {
            "description": "; ".join(f"{e.code}: {e.meaning}" for e in entries),
            "content": {content_types.APPLICATION_JSON: {"model": Error}},
        }
        if any(e.retry_after for e in entries):
            response["headers"] = _RETRY_AFTER
        declared[status] = response
    return declared
