"""The auth function's routes: ``/auth/login``, ``/auth/callback``, ``/auth/logout``."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from myi.api.app import new_resolver
from myi.auth import login, sessions

NO_STORE = {"Cache-Control": "no-store"}


def build_auth_app() -> APIGatewayHttpResolver:
    app = new_resolver()

    @app.get("/auth/login", include_in_schema=False)
    def auth_login():
        event = app.current_event
        deps = login.default_deps()
        started = login.begin(
            deps,
            return_to=event.get_query_string_value("return_to"),
            client_ip=event.request_context.http.source_ip,
        )
        return Response(
            status_code=302,
            headers={"Location": started.location, **NO_STORE},
            cookies=[login.browser_cookie(deps, started.browser)],
        )

    @app.get("/auth/callback", include_in_schema=False)
    def auth_callback():
        event = app.current_event
        deps = login.default_deps()
        done = login.finish(
            deps,
            event.query_string_parameters or {},
            browser=sessions.cookie_value(event.cookies, login.BROWSER_COOKIE),
            user_agent=event.headers.get("user-agent"),
        )
        cookies = [login.clear_browser_cookie(deps)]
        if done.session:
            cookies.append(sessions.set_cookie(done.session, deps.settings))
        return Response(status_code=302, headers={"Location": done.location, **NO_STORE}, cookies=cookies)

    @app.post("/auth/logout", include_in_schema=False)
    def auth_logout():
        deps = login.default_deps()
        event = app.current_event
        everywhere = (event.get_query_string_value("everywhere") or "").lower() in {"1", "true"}
        login.logout(deps, sessions.cookie_value(event.cookies), everywhere=everywhere)
        return Response(status_code=204, cookies=[sessions.clear_cookie(deps.settings)])

    return app
