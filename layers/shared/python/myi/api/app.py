"""The API resolver: Powertools' HTTP API resolver with validation, one router per area.

Every request goes through the same global middlewares, in this order (Powertools calls global
middlewares in the order they were registered with ``app.use``, for unmatched routes as well):

1. :func:`refuse_early`: :func:`myi.api.session.gate` (403 to a state-changing request from a
   foreign origin, 401 to a ``/me`` route without a live session), then a body nested too deep for a
   parser is 400, before anything parses it;
2. Powertools' request validation (parameters and body: 400, or 415 for a body that is not JSON);
3. :func:`myi.api.session.session_middleware` (the session cookie sent again when it was renewed);
4. Powertools' response validation and serialisation of what the route returns.

Validation is therefore not switched on with ``enable_validation=True``: that puts the request
validation in front of every middleware, so a bad parameter would be answered before the gate.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from typing import Any

import psycopg
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (
    OpenAPIRequestValidationMiddleware,
    OpenAPIResponseValidationMiddleware,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from myi.api import exports, health, imports, me, openapi, spotify_top, statistics, sync
from myi.api.errors import UnsupportedMediaType, error_response, response_for, responses
from myi.api.session import gate, session_middleware
from myi.errors import DomainError, InvalidRequest, Unavailable
from myi.observability import logger


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path", "header")]
        name = ".".join(loc) or "request"
        parts.append(f"{name}: {err.get('msg', 'invalid')}")
    return "Invalid parameter " + "; ".join(parts) if parts else "Invalid request"


def build_app() -> APIGatewayHttpResolver:
    """The API function's resolver: /health, /openapi.json and every /me route. Its OpenAPI document
    also describes the auth function's routes, which this resolver does not serve."""
    app = new_resolver()
    app.include_router(health.router)
    app.include_router(me.router)
    app.include_router(imports.router)
    app.include_router(statistics.router)
    app.include_router(sync.router)
    app.include_router(spotify_top.router)
    app.include_router(exports.router)

    @functools.cache
    def document() -> str:  # made at the first request: the routes do not change afterwards
        from myi.auth.routes import build_auth_app  # that module imports this one

        return json.dumps(openapi.document(app, build_auth_app()))

    @app.get(
        "/openapi.json",
        summary="This document: the API's routes and the auth function's",
        tags=["operations"],
        responses=responses(
            InvalidRequest,
            ok={
                200: {
                    "description": "The OpenAPI 3.1 document",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        ),
    )
    def openapi_json():  # a Response return annotation would enter the generated schema
        return Response(status_code=200, content_type="application/json; charset=utf-8", body=document())

    return app


# Deepest nesting of arrays and objects a request body may have: MYI's bodies are flat objects.
MAX_BODY_DEPTH = 16
# A JSON string (an unterminated one runs to the end, so every scan is linear) or a bracket.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


def body_too_deep(body: str, limit: int = MAX_BODY_DEPTH) -> bool:
    """Whether ``body`` nests arrays and objects deeper than ``limit``, by one pass over the raw
    text that skips JSON strings, in constant memory: refused before any parser recurses into it."""
    depth = 0
    for token in _JSON_TOKENS.finditer(body):
        char = token.group()[0]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth = max(0, depth - 1)
    return False


def _too_deep(event: APIGatewayProxyEventV2) -> Response[Any] | None:
    body = event.body
    if not body or not isinstance(body, str):
        return None
    if event.is_base64_encoded:
        try:
            body = base64.b64decode(body).decode("utf-8", errors="replace")
        except (ValueError, binascii.Error):
            return None  # the parser refuses it without recursing
    if body_too_deep(body):
        return response_for(
            InvalidRequest(f"Invalid request body: nested deeper than {MAX_BODY_DEPTH} levels.")
        )
    return None


def _cancelled() -> Response[Any]:
    return response_for(
        Unavailable("The database took too long to answer; nothing was changed. Try again shortly.", 5)
    )


def refuse_early(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """The first global middleware: :func:`myi.api.session.gate`, then the body's depth, so a missing
    session is 401 and a foreign origin 403 whatever else is wrong with the request, and a body
    nested too deep is 400 before a parser recurses into it. A statement the timeout cancels in the
    gate answers 503 through the resolver's exception handler."""
    refused = gate(app) or _too_deep(app.current_event)
    return refused if refused is not None else next_middleware(app)


def new_resolver() -> APIGatewayHttpResolver:
    """A resolver with what every MYI HTTP function shares: the gate, validation, the error shape of
    API.md and session cookie renewal (see the module's docstring for their order)."""
    app = APIGatewayHttpResolver()
    app.use(
        middlewares=[
            refuse_early,
            OpenAPIRequestValidationMiddleware(),
            session_middleware,
            OpenAPIResponseValidationMiddleware(),
        ]
    )

    @app.exception_handler(DomainError)
    def handle_domain_error(exc: DomainError) -> Response:
        return response_for(exc)

    @app.exception_handler(RequestValidationError)
    def handle_validation(exc: RequestValidationError) -> Response:
        return error_response(400, "invalid_request", _describe_validation(exc))

    @app.exception_handler(RequestUnsupportedContentType)
    def handle_content_type(exc: RequestUnsupportedContentType) -> Response:
        return response_for(UnsupportedMediaType("Invalid request body: send it as application/json."))

    @app.exception_handler(RecursionError)
    def handle_recursion(exc: RecursionError) -> Response:
        return error_response(400, "invalid_request", "Invalid request body: nested too deep.")

    @app.exception_handler(psycopg.errors.QueryCanceled)
    def handle_cancelled(exc: psycopg.errors.QueryCanceled) -> Response:
        logger.warning("a statement was cancelled by the statement timeout")
        return _cancelled()

    @app.not_found
    def handle_not_found(exc: NotFoundError) -> Response:
        return error_response(404, "not_found", "No such route.")

    @app.exception_handler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(500, "internal", "Something went wrong on our side.")

    return app


def resolve(app: APIGatewayHttpResolver, event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
