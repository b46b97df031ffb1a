"""The sign-in flow against the fake Spotify, the AWS emulator and a real PostgreSQL."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest

from myi import crypto
from myi.auth import login, pkce, sessions
from myi.crypto import KeyRing
from myi.errors import InvalidRequest, RateLimited
from myi.observability import logger
from myi.spotify.accounts import authorize_url
from tests.fixtures.auth import approve


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def start(deps: login.LoginDeps, return_to: str = "/") -> tuple[dict[str, str], str]:
    """Login and Spotify's consent: the callback's query, and the browser's ``myi_login`` value."""
    started = login.begin(deps, return_to=return_to, client_ip=None)
    return approve(started.location), started.browser


def sign_in(deps: login.LoginDeps, return_to: str = "/", user: str | None = None) -> login.Finished:
    started = login.begin(deps, return_to=return_to, client_ip="198.51.100.7")
    return login.finish(deps, approve(started.location, user), browser=started.browser, user_agent="tests")


def test_login_redirects_to_spotify_with_pkce_and_a_fresh_state(login_deps: login.LoginDeps) -> None:
    begun = login.begin(login_deps, return_to="/stats", client_ip="198.51.100.7")
    first = urlparse(begun.location)
    again = login.begin(login_deps, return_to="/stats", client_ip="198.51.100.7")
    second = query(again.location)
    q = query(first.geturl())
    assert (
        f"{first.scheme}://{first.netloc}{first.path}"
        == f"{login_deps.settings.spotify_accounts_url}/authorize"
    )
    assert q["response_type"] == "code" and q["client_id"] == login_deps.settings.spotify_client_id
    assert q["redirect_uri"] == f"{login_deps.settings.api_url}/auth/callback"
    assert set(q["scope"].split()) >= {"user-read-recently-played", "user-top-read"}
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["state"] != second["state"] and q["code_challenge"] != second["code_challenge"]
    assert len(begun.browser) >= 43 and begun.browser != again.browser
    assert begun.browser not in begun.location  # the binding travels only in the cookie


def test_a_full_sign_in_creates_the_user_the_encrypted_grant_and_a_session(
    login_deps: login.LoginDeps, db_conn: psycopg.Connection[Any], keyring: KeyRing
) -> None:
    done = sign_in(login_deps, "/stats?range=4w")
    assert done.location == f"{login_deps.settings.app_url}/stats?range=4w"
    session = sessions.resolve(db_conn, done.session, login_deps.settings, now=login_deps.clock())
    assert session is not None
    user = db_conn.execute(
        "SELECT spotify_id, display_name, last_login_at FROM users WHERE id = %s", (session.user_id,)
    ).fetchone()
    assert user is not None and user[0] == "demo" and user[1] and user[2] is not None
    grant = db_conn.execute(
        "SELECT refresh_token_enc, refresh_key_version, is_valid FROM spotify_auth WHERE user_id = %s",
        (session.user_id,),
    ).fetchone()
    assert grant is not None and grant[2] is True
    refresh = crypto.decrypt(keyring, grant[0], grant[1], user_id=session.user_id, purpose="refresh")
    assert refresh.encode() not in bytes(grant[0])
    awake = login_deps.dormancy.awake_until()  # the schedules wake for the active window (myi.dormancy)
    window = timedelta(days=login_deps.settings.sync_active_days - 1)
    assert awake is not None and awake >= login_deps.clock() + window
    again = sign_in(login_deps)  # the same Spotify user signs in again: same MYI user, new session
    second = sessions.resolve(db_conn, again.session, login_deps.settings, now=login_deps.clock())
    assert second is not None and second.user_id == session.user_id and again.session != done.session


def test_a_display_name_with_nul_characters_is_stored_without_them(
    login_deps: login.LoginDeps, db_conn: psycopg.Connection[Any], fake_spotify: Any
) -> None:
    fake_spotify.world.add_user("nul-name", display_name="Nul\x00 Name")
    done = sign_in(login_deps, user="nul-name")
    session = sessions.resolve(db_conn, done.session, login_deps.settings, now=login_deps.clock())
    assert session is not None
    row = db_conn.execute("SELECT display_name FROM users WHERE id = %s", (session.user_id,)).fetchone()
    assert row == ("Nul Name",)


def test_a_state_works_once(login_deps: login.LoginDeps) -> None:
    params, browser = start(login_deps)
    assert login.finish(login_deps, params, browser=browser, user_agent=None).session
    with pytest.raises(login.InvalidState):
        login.finish(login_deps, params, browser=browser, user_agent=None)
    with pytest.raises(login.InvalidState):
        login.finish(login_deps, {"code": "x", "state": "forged"}, browser=browser, user_agent=None)


def sessions_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM sessions").fetchone()
    assert row is not None
    return int(row[0])


def test_a_callback_from_another_browser_signs_nobody_in_and_leaves_the_state_unspent(
    login_deps: login.LoginDeps, db_conn: psycopg.Connection[Any]
) -> None:
    # Login CSRF: the attacker starts a sign-in and gets the victim's browser to open the callback.
    attackers, attacker_browser = start(login_deps)
    _, victim_browser = start(login_deps)  # the victim's own sign-in, in progress
    for browser in (None, "", victim_browser, attacker_browser + "x", "a" * 300):
        with pytest.raises(login.InvalidState):
            login.finish(login_deps, attackers, browser=browser, user_agent=None)
    assert sessions_count(db_conn) == 0
    # Refused without being spent: in the browser that started it, the same callback still works.
    done = login.finish(login_deps, attackers, browser=attacker_browser, user_agent=None)
    assert done.session and sessions_count(db_conn) == 1


def test_a_refusal_from_spotify_spends_the_state_only_in_its_own_browser(
    login_deps: login.LoginDeps, fake_spotify: Any
) -> None:
    params, browser = start(login_deps)
    refused = {"error": "access_denied", "state": params["state"]}
    other = login.finish(login_deps, refused, browser=pkce.new_browser_binding(), user_agent=None)
    assert other.session is None and query(other.location) == {"login_error": "access_denied"}
    assert login.finish(login_deps, params, browser=browser, user_agent=None).session  # still unspent
    params, browser = start(login_deps)
    assert login.finish(login_deps, {**refused, "state": params["state"]}, browser=browser, user_agent=None)
    with pytest.raises(login.InvalidState):  # spent by the refusal in its own browser
        login.finish(login_deps, params, browser=browser, user_agent=None)


def test_a_refused_authorisation_sends_the_user_back_with_the_reason(
    login_deps: login.LoginDeps, fake_spotify: Any, db_conn: psycopg.Connection[Any]
) -> None:
    fake_spotify.deny_next_login()
    done = sign_in(login_deps)
    assert done.session is None
    assert done.location == f"{login_deps.settings.app_url}/?login_error=access_denied"
    assert db_conn.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_a_spent_code_ends_in_invalid_grant_not_a_server_error(login_deps: login.LoginDeps) -> None:
    params, browser = start(login_deps)
    assert login.finish(login_deps, params, browser=browser, user_agent=None).session
    state = pkce.new_state()
    login_deps.states.put(state, pkce.LoginState(verifier=pkce.new_verifier(), return_to="/"), browser="b")
    done = login.finish(login_deps, {"code": params["code"], "state": state}, browser="b", user_agent=None)
    assert done.session is None and query(done.location) == {"login_error": "invalid_grant"}


@pytest.mark.parametrize("status", [500, 503])
def test_spotify_down_at_the_exchange_ends_in_a_redirect(
    status: int, login_deps: login.LoginDeps, fake_spotify: Any
) -> None:
    fake_spotify.inject("/api/token", status=status)
    done = sign_in(login_deps)
    assert done.session is None and query(done.location) == {"login_error": "spotify_unavailable"}


def test_an_unreachable_spotify_ends_in_a_redirect(login_deps: login.LoginDeps, fake_spotify: Any) -> None:
    params, browser = start(login_deps)
    fake_spotify.stop()
    done = login.finish(login_deps, params, browser=browser, user_agent=None)
    assert done.session is None and query(done.location) == {"login_error": "spotify_unavailable"}


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example",
        "//evil.example/x",
        "/\\evil.example",
        "/\u3000/evil.example",
        "/\t/evil.example",
        "/stats\x7f",
        "evil",
    ],
)
def test_a_return_path_off_the_site_is_refused(login_deps: login.LoginDeps, target: str) -> None:
    with pytest.raises(InvalidRequest, match="return_to"):
        login.begin(login_deps, return_to=target, client_ip=None)


@pytest.mark.parametrize(
    "stored", ["/\u3000/evil.example", "//evil.example", "/\\evil.example", "https://evil.example"]
)
def test_the_redirect_after_sign_in_is_always_a_path_on_the_app(
    login_deps: login.LoginDeps, stored: str
) -> None:
    # A state written before return paths were checked this strictly still lands on the app's home.
    verifier, state = pkce.new_verifier(), pkce.new_state()
    login_deps.states.put(state, pkce.LoginState(verifier=verifier, return_to=stored), browser="b")
    url = authorize_url(
        login_deps.settings,
        state=state,
        code_challenge=pkce.challenge_of(verifier),
        redirect_uri=login_deps.redirect_uri,
    )
    done = login.finish(login_deps, approve(url), browser="b", user_agent=None)
    assert done.session and done.location == f"{login_deps.settings.app_url}/"


def test_logins_are_limited_per_client_address(login_deps: login.LoginDeps) -> None:
    deps = login_deps
    deps.settings = deps.settings.replace(login_rate_limit=2, login_rate_window_s=3600)
    for _ in range(2):
        login.begin(deps, return_to="/", client_ip="192.0.2.44")
    with pytest.raises(RateLimited) as limited:
        login.begin(deps, return_to="/", client_ip="192.0.2.44")
    assert limited.value.retry_after_s is not None and limited.value.retry_after_s >= 1
    login.begin(deps, return_to="/", client_ip="192.0.2.45")


def test_no_code_verifier_or_token_reaches_a_log_line(
    login_deps: login.LoginDeps,
    db_conn: psycopg.Connection[Any],
    keyring: KeyRing,
    fake_spotify: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    verifiers: list[str] = []
    real = pkce.new_verifier
    monkeypatch.setattr(pkce, "new_verifier", lambda: verifiers.append(real()) or verifiers[-1])
    caplog.set_level(logging.DEBUG)  # httpx and botocore, through the root logger
    caplog.handler.setFormatter(logger.registered_formatter)  # MYI's JSON lines, extra keys included
    ours = logging.getLogger(logger.name)
    ours.addHandler(caplog.handler)
    logger.setLevel(logging.DEBUG)
    try:
        params, browser = start(login_deps)
        done = login.finish(login_deps, params, browser=browser, user_agent=None)
        fake_spotify.inject("/api/token", status=500)
        again, browser = start(login_deps)
        failed = login.finish(login_deps, again, browser=browser, user_agent=None)
    finally:
        logger.setLevel(logging.WARNING)
        ours.removeHandler(caplog.handler)
    assert done.session and failed.session is None
    row = db_conn.execute(
        "SELECT user_id, refresh_token_enc, refresh_key_version, access_token_enc, access_key_version "
        "FROM spotify_auth"
    ).fetchone()
    assert row is not None
    secrets = [
        params["code"],
        *verifiers,
        done.session,
        crypto.decrypt(keyring, row[1], row[2], user_id=row[0], purpose="refresh"),
        crypto.decrypt(keyring, row[3], row[4], user_id=row[0], purpose="access"),
    ]
    captured = caplog.text
    assert "signed in" in captured  # the logs were captured at all
    for secret in secrets:
        assert secret not in captured
