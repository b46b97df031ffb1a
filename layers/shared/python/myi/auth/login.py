"""The sign-in flow: ``/auth/login`` starts it, ``/auth/callback`` finishes it.

Everything the flow touches is passed in (:class:`LoginDeps`), so tests can run it against the fake
Spotify and the emulator with any clock. Nothing here logs or raises a code, verifier or token.

Login CSRF: ``/auth/login`` binds its state to the browser with a random value in the short-lived
``myi_login`` cookie (HttpOnly, SameSite=Lax, Path = the callback's path); the state's record keeps
only its SHA-256. A callback without that cookie, or with another browser's, is ``invalid_state``:
an attacker's callback URL opened in someone else's browser signs nobody in, and does not spend the
state either (the binding is checked by the same conditional delete that consumes it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import psycopg
from aws_lambda_powertools.shared.cookies import Cookie, SameSite

from myi import crypto, db, users
from myi.auth import pkce, sessions
from myi.auth.tokens import store_grant
from myi.crypto import KeyRing
from myi.dormancy import Dormancy
from myi.errors import InvalidRequest, InvalidState
from myi.observability import logger
from myi.ratelimit import RateLimiter
from myi.settings import Settings, get_settings
from myi.spotify.accounts import AccountsClient, authorize_url
from myi.spotify.errors import SpotifyAuthError, SpotifyError, SpotifyUnavailable
from myi.spotify.webapi import WebApi

BROWSER_COOKIE = "myi_login"


@dataclass
class LoginDeps:
    settings: Settings
    conn: Callable[[], psycopg.Connection[Any]]
    states: pkce.StateStore
    accounts: AccountsClient
    webapi: WebApi
    keyring: Callable[[], KeyRing]
    limiter: RateLimiter
    dormancy: Dormancy
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def redirect_uri(self) -> str:
        return f"{self.settings.api_url}/auth/callback"

    @property
    def callback_path(self) -> str:
        return urlsplit(self.redirect_uri).path


@functools.cache
def default_deps() -> LoginDeps:
    """The dependencies of this execution environment, made at first use."""
    settings = get_settings()
    return LoginDeps(
        settings=settings,
        conn=lambda: db.get_connection(settings),
        states=pkce.StateStore(settings),
        accounts=AccountsClient(settings),
        webapi=WebApi(settings),
        keyring=lambda: crypto.load_keyring(settings),
        limiter=RateLimiter(settings),
        dormancy=Dormancy(settings),
    )


@dataclass(frozen=True)
class Started:
    location: str  # Spotify's authorize page
    browser: str = field(repr=False)  # the myi_login cookie value the state is bound to


def begin(deps: LoginDeps, *, return_to: str | None, client_ip: str | None) -> Started:
    """Where to send the browser (Spotify's authorize page with a fresh state and PKCE challenge),
    and the cookie value that binds the state to this browser."""
    target = pkce.safe_return_to(return_to)
    if target is None:
        raise InvalidRequest("Invalid parameter return_to: it must be a path on this site, like /stats")
    s = deps.settings
    deps.limiter.admit(
        f"login:{client_ip or 'unknown'}",
        limit=s.login_rate_limit,
        window_s=s.login_rate_window_s,
        refusal="Too many sign-in attempts from here; try again shortly.",
    )
    verifier, state, browser = pkce.new_verifier(), pkce.new_state(), pkce.new_browser_binding()
    deps.states.put(state, pkce.LoginState(verifier=verifier, return_to=target), browser=browser)
    location = authorize_url(
        s, state=state, code_challenge=pkce.challenge_of(verifier), redirect_uri=deps.redirect_uri
    )
    return Started(location, browser)


def browser_cookie(deps: LoginDeps, browser: str) -> Cookie:
    """The ``myi_login`` cookie: sent back only to the callback (SameSite=Lax lets it ride along on
    Spotify's top-level redirect), and only for as long as the state lives."""
    return _browser_cookie(deps, browser, max_age=deps.settings.pkce_ttl_s)


def clear_browser_cookie(deps: LoginDeps) -> Cookie:
    return _browser_cookie(deps, "", max_age=0)


def _browser_cookie(deps: LoginDeps, value: str, *, max_age: int) -> Cookie:
    return Cookie(
        BROWSER_COOKIE,
        value,
        path=deps.callback_path,
        secure=deps.settings.api_is_https,
        http_only=True,
        max_age=max_age,
        same_site=SameSite.LAX_MODE,
    )


@dataclass(frozen=True)
class Finished:
    location: str
    session: str | None = field(default=None, repr=False)  # the new cookie value


def _login_error(deps: LoginDeps, code: str) -> Finished:
    return Finished(f"{deps.settings.app_url}/?{urlencode({'login_error': code})}")


def finish(
    deps: LoginDeps, params: Mapping[str, str], *, browser: str | None, user_agent: str | None
) -> Finished:
    """The callback: a single-use state bound to this browser (``browser``, the ``myi_login``
    cookie), the code exchanged with its verifier, the user upserted, the grant stored encrypted and
    a session made; the schedules wake up (myi.dormancy)."""
    state = params.get("state") or ""
    if params.get("error"):
        if state:
            deps.states.consume(state, browser)  # spent either way (by its own browser only)
        code = "".join(ch for ch in params["error"].lower() if ch.isalpha() or ch == "_")[:40]
        logger.info("sign-in refused at Spotify", extra={"login_error": code})
        return _login_error(deps, code or "access_denied")
    login = deps.states.consume(state, browser)
    if login is None:
        raise InvalidState(
            "This sign-in link is unknown, expired, already used or from another browser; start again."
        )
    auth_code = params.get("code")
    if not auth_code:
        raise InvalidRequest("Invalid parameter code: missing")
    try:
        grant = deps.accounts.exchange_code(
            code=auth_code, verifier=login.verifier, redirect_uri=deps.redirect_uri
        )
        profile = deps.webapi.me(grant.access_token)
    except SpotifyAuthError as exc:
        logger.warning("code exchange refused", extra={"login_error": exc.code})
        return _login_error(deps, exc.code)
    except SpotifyUnavailable as exc:
        logger.warning("Spotify unavailable at sign-in", extra={"reason": str(exc)})
        return _login_error(deps, "spotify_unavailable")
    except SpotifyError as exc:
        logger.warning("Spotify answered unexpectedly at sign-in", extra={"reason": str(exc)})
        return _login_error(deps, "spotify_error")
    now = deps.clock()
    ring = deps.keyring()
    deps.dormancy.signed_in(now)
    conn = deps.conn()
    with conn.transaction():
        user_id = users.upsert_from_profile(conn, profile, now=now)
        store_grant(conn, ring, user_id, grant, now=now)
        raw = sessions.create(conn, user_id, deps.settings, now=now, user_agent=user_agent)
    logger.info("signed in", extra={"user_id": user_id})
    # Checked again on the way out: the redirect is always a path on the SPA.
    return Finished(f"{deps.settings.app_url}{pkce.safe_return_to(login.return_to) or '/'}", raw)


def logout(deps: LoginDeps, raw: str | None, *, everywhere: bool = False) -> bool:
    """Revoke this session, or with ``everywhere`` every session of its user."""
    if everywhere:
        return sessions.revoke_all(deps.conn(), raw, deps.settings, now=deps.clock()) > 0
    return sessions.revoke(deps.conn(), raw, now=deps.clock())
