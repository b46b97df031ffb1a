"""The HTTP face of errors: each domain error's status and code, in one table, and the one error
shape of API.md, ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types

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


# The most specific class of an error decides (InvalidState before InvalidRequest).
STATUSES: dict[type[DomainError], tuple[int, str]] = {
    InvalidRequest: (400, "invalid_request"),
    InvalidState: (400, "invalid_state"),
    Unauthenticated: (401, "unauthenticated"),
    Forbidden: (403, "forbidden"),
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    TooLarge: (413, "too_large"),
    RateLimited: (429, "rate_limited"),
    Unavailable: (503, "unavailable"),
}


def status_of(exc: DomainError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in STATUSES:
            return STATUSES[cls]
    return 400, "invalid_request"


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
