"""The one way a route learns who is calling: the session of the ``myi_session`` cookie.

``current_user(app)`` answers the user id of a live session or raises 401; a session whose expiry
slid forward gets its cookie sent again by :func:`session_middleware`. :func:`gate`, which
:mod:`myi.api.app` runs before request validation, refuses state-changing requests from an
``Origin`` that is not the SPA's (403) and every ``/me`` route without a live session (401).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from myi.api import database
from myi.api.errors import Forbidden, Unauthenticated, response_for
from myi.auth import sessions
from myi.dormancy import Dormancy
from myi.errors import DomainError, NotFound, Unavailable
from myi.settings import get_settings

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# What every /me route may answer besides its own errors (its ``responses=``): no live session, the
# user (or the item asked for) gone, the database too slow to answer (the session lookup included).
SIGNED_IN: tuple[type[DomainError], ...] = (Unauthenticated, NotFound, Unavailable)
_RENEWED = "myi_session_renewed"
_USER = "myi_user_id"


def current_user(app: APIGatewayHttpResolver | APIGatewayHttpRouter) -> int:
    known = app.context.get(_USER)
    if isinstance(known, int):
        return known
    user_id = _resolve_session(app, app.current_event.cookies)
    if user_id is None:
        raise Unauthenticated()
    return user_id


def _resolve_session(
    app: APIGatewayHttpResolver | APIGatewayHttpRouter, cookies: list[str] | None
) -> int | None:
    settings = get_settings()
    raw = sessions.cookie_value(cookies)
    now = datetime.now(UTC)
    session = sessions.resolve(database.connection(settings), raw, settings, now=now)
    if session is None:
        return None
    if session.seen:
        Dormancy(settings).seen(now)
    if session.renewed and raw:
        app.append_context(**{_RENEWED: raw})
    app.append_context(**{_USER: session.user_id})
    return session.user_id


def _is_user_route(path: str) -> bool:
    return path == "/me" or path.startswith("/me/")


def gate(app: APIGatewayHttpResolver) -> Response[Any] | None:
    """What is settled before a request reaches its route, and before its parameters are validated:
    a state-changing request from a foreign ``Origin`` is 403, and every ``/me`` route without a live
    session is 401, whatever else is wrong with the request. None lets the request through."""
    settings = get_settings()
    event = app.current_event.raw_event
    http = (event.get("requestContext") or {}).get("http") or {}
    method = str(http.get("method") or "").upper()
    path = str(event.get("rawPath") or http.get("path") or "")
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    origin = headers.get("origin")
    if method in STATE_CHANGING and origin and str(origin).rstrip("/") not in settings.allowed_origins:
        return response_for(Forbidden("Requests from this origin may not change anything here."))
    if method != "OPTIONS" and _is_user_route(path) and _resolve_session(app, event.get("cookies")) is None:
        return response_for(Unauthenticated())
    return None


def session_middleware(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Sends the cookie again when the session's expiry slid forward."""
    response = next_middleware(app)
    renewed = app.context.get(_RENEWED)
    if renewed and not any(c.name == sessions.COOKIE for c in response.cookies):
        response.cookies.append(sessions.set_cookie(renewed, get_settings()))
    return response
