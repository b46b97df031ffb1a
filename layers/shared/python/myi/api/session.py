"""The one way a route learns who is calling: the session of the ``myi_session`` cookie.

``current_user(app)`` answers the user id of a live session or raises 401; a session whose expiry
slid forward gets its cookie sent again by :func:`session_middleware`. The same middleware refuses
state-changing requests from an ``Origin`` that is not the SPA's (403), before any handler runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from myi import db
from myi.api.errors import Unauthenticated, error_response
from myi.auth import sessions
from myi.settings import get_settings

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
_RENEWED = "myi_session_renewed"


def current_user(app: APIGatewayHttpResolver | APIGatewayHttpRouter) -> int:
    settings = get_settings()
    raw = sessions.cookie_value(app.current_event.cookies)
    session = sessions.resolve(db.get_connection(settings), raw, settings, now=datetime.now(UTC))
    if session is None:
        raise Unauthenticated()
    if session.renewed and raw:
        app.append_context(**{_RENEWED: raw})
    return session.user_id


def session_middleware(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    settings = get_settings()
    event = app.current_event
    origin = event.headers.get("origin")
    if (
        event.http_method.upper() in STATE_CHANGING
        and origin
        and origin.rstrip("/") not in settings.allowed_origins
    ):
        return error_response(403, "forbidden", "Requests from this origin may not change anything here.")
    response = next_middleware(app)
    renewed = app.context.get(_RENEWED)
    if renewed and not any(c.name == sessions.COOKIE for c in response.cookies):
        response.cookies.append(sessions.set_cookie(renewed, settings))
    return response
