"""The auth function's routes: ``/auth/login``, ``/auth/callback``, ``/auth/logout``.

:func:`auth_router` makes them anew for each resolver that includes them: the auth function's
(:func:`build_auth_app`), which serves them, and the one the API function's OpenAPI document reads
them from (:mod:`myi.api.app`), which never serves a request."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse, OpenAPIResponseHeader
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from myi.api.app import new_resolver
from myi.api.errors import Forbidden, responses
from myi.auth import login, sessions
from myi.errors import InvalidRequest, InvalidState, RateLimited

NO_STORE = {"Cache-Control": "no-store"}

_LOCATION: OpenAPIResponseHeader = {
    "description": "Where the browser goes next",
    "schema": {"type": "string"},
}
_SET_COOKIE: OpenAPIResponseHeader = {
    "description": "The cookies this step sets or clears",
    "schema": {"type": "string"},
}


def _redirect(description: str) -> dict[int, OpenAPIResponse]:
    """A redirect, without a body."""
    headers = {"Location": _LOCATION, "Set-Cookie": _SET_COOKIE}
    return {302: {"description": description, "headers": headers, "content": {}}}


def auth_router() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.get(
        "/auth/login",
        summary="Sign in with Spotify: 302 to Spotify's consent page (OAuth code flow with PKCE)",
        tags=["auth"],
        responses=responses(
            InvalidRequest,
            RateLimited,
            ok=_redirect("To Spotify's consent page; the sign-in's state is bound to this browser"),
        ),
    )
    def auth_login(
        return_to: Annotated[
            str | None, Query(description="Where to land once signed in: a path on the SPA, like /stats")
        ] = None,
    ):  # a Response return annotation would enter the generated schema
        event = router.current_event
        deps = login.default_deps()
        started = login.begin(deps, return_to=return_to, client_ip=event.request_context.http.source_ip)
        return Response(
            status_code=302,
            headers={"Location": started.location, **NO_STORE},
            cookies=[login.browser_cookie(deps, started.browser)],
        )

    @router.get(
        "/auth/callback",
        summary="Where Spotify sends the browser back: signs in and sets the session cookie",
        tags=["auth"],
        responses=responses(
            InvalidRequest,
            InvalidState,
            ok=_redirect(
                "To the SPA: signed in (the myi_session cookie is set), or with ?login_error=<code>"
            ),
        ),
    )
    def auth_callback(
        code: Annotated[str | None, Query(description="The authorization code Spotify issued")] = None,
        state: Annotated[str | None, Query(description="The state /auth/login sent to Spotify")] = None,
        error: Annotated[str | None, Query(description="Spotify's refusal, e.g. access_denied")] = None,
    ):  # a Response return annotation would enter the generated schema
        event = router.current_event
        deps = login.default_deps()
        params = {
            name: value
            for name, value in (("code", code), ("state", state), ("error", error))
            if value is not None
        }
        done = login.finish(
            deps,
            params,
            browser=sessions.cookie_value(event.cookies, login.BROWSER_COOKIE),
            user_agent=event.headers.get("user-agent"),
        )
        cookies = [login.clear_browser_cookie(deps)]
        if done.session:
            cookies.append(sessions.set_cookie(done.session, deps.settings))
        return Response(status_code=302, headers={"Location": done.location, **NO_STORE}, cookies=cookies)

    @router.post(
        "/auth/logout",
        summary="Sign out: the session is revoked server-side and its cookie cleared",
        tags=["auth"],
        responses=responses(
            InvalidRequest,
            Forbidden,
            ok={204: {"description": "Signed out", "headers": {"Set-Cookie": _SET_COOKIE}, "content": {}}},
        ),
    )
    def auth_logout(
        everywhere: Annotated[
            str | None, Query(description="1 or true: end every session of the user, on every device")
        ] = None,
    ):  # a Response return annotation would enter the generated schema
        deps = login.default_deps()
        event = router.current_event
        login.logout(
            deps, sessions.cookie_value(event.cookies), everywhere=(everywhere or "").lower() in {"1", "true"}
        )
        return Response(status_code=204, cookies=[sessions.clear_cookie(deps.settings)])

    return router


def build_auth_app() -> APIGatewayHttpResolver:
    app = new_resolver()
    app.include_router(auth_router())
    return app
