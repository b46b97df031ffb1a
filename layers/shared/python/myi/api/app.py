"""The API resolver: Powertools' HTTP API resolver with validation, one router per area."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

import psycopg
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import BaseRouter, ResponseBuilder
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from myi.api import health, imports, me, openapi, spotify_top, statistics, sync
from myi.api.errors import error_response, response_for
from myi.api.session import gate, session_middleware
from myi.errors import DomainError, Unavailable
from myi.observability import logger


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path", "header")]
        name = ".".join(loc) or "request"
        parts.append(f"{name}: {err.get('msg', 'invalid')}")
    return "Invalid parameter " + "; ".join(parts) if parts else "Invalid request"


def build_app() -> APIGatewayHttpResolver:
    """The API function's resolver: /health, /openapi.json and every /me route."""
    app = new_resolver()
    app.include_router(health.router)
    app.include_router(me.router)
    app.include_router(imports.router)
    app.include_router(statistics.router)
    app.include_router(sync.router)
    app.include_router(spotify_top.router)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_json():  # a Response return annotation would enter the generated schema
        return Response(
            status_code=200,
            content_type="application/json; charset=utf-8",
            body=json.dumps(openapi.document(app)),
        )

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


def _too_deep(event: Mapping[str, Any]) -> Response[Any] | None:
    body = event.get("body")
    if not body or not isinstance(body, str):
        return None
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body).decode("utf-8", errors="replace")
        except (ValueError, binascii.Error):
            return None  # the parser refuses it without recursing
    if body_too_deep(body):
        return error_response(
            400, "invalid_request", f"Invalid request body: nested deeper than {MAX_BODY_DEPTH} levels."
        )
    return None


def _cancelled() -> Response[Any]:
    return response_for(
        Unavailable("The database took too long to answer; nothing was changed. Try again shortly.", 5)
    )


class Resolver(APIGatewayHttpResolver):
    """Powertools' HTTP API resolver with :func:`myi.api.session.gate` in front of everything,
    request validation included, so a missing session is 401 and a foreign origin 403 whatever
    else is wrong with the request; then a body nested too deep for a parser is 400."""

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        BaseRouter.current_event = self._to_proxy_event(dict(event))
        BaseRouter.lambda_context = context
        try:
            try:
                refused = gate(self, dict(event)) or _too_deep(event)
            except psycopg.errors.QueryCanceled:
                logger.warning("a statement was cancelled by the statement timeout")
                refused = _cancelled()
            if refused is not None:
                return self._build_response(ResponseBuilder(refused, self._serializer))
        except Exception:
            self.clear_context()
            raise
        return super().resolve(event, context)


def new_resolver() -> APIGatewayHttpResolver:
    """A resolver with what every MYI HTTP function shares: validation, the error shape of API.md,
    the origin check of state-changing requests and session cookie renewal."""
    app = Resolver(enable_validation=True)
    app.use(middlewares=[session_middleware])

    @app.exception_handler(DomainError)
    def handle_domain_error(exc: DomainError) -> Response:
        return response_for(exc)

    @app.exception_handler(RequestValidationError)
    def handle_validation(exc: RequestValidationError) -> Response:
        return error_response(400, "invalid_request", _describe_validation(exc))

    @app.exception_handler(RequestUnsupportedContentType)
    def handle_content_type(exc: RequestUnsupportedContentType) -> Response:
        return error_response(
            415, "unsupported_media_type", "Invalid request body: send it as application/json."
        )

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
