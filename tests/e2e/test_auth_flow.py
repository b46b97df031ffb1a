"""Signing in through the local runtime over HTTP, the way a browser does, against the fake Spotify."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import psycopg
import pytest

from tests.e2e.conftest import APP_URL, browser, print_log_on_failure, sign_in, start_sign_in
from tests.fixtures.local_runtime import LocalRuntime

log_on_failure = pytest.fixture(autouse=True)(print_log_on_failure)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def me(rt: LocalRuntime, cookie: str | None) -> httpx.Response:
    return httpx.get(f"{rt.url}/me", cookies={"myi_session": cookie} if cookie else None)


def test_a_user_signs_in_and_sees_themselves(runtime: LocalRuntime, fake: Any) -> None:
    cookie, location, _ = sign_in(runtime, return_to="/stats?range=4w")
    assert location == f"{APP_URL}/stats?range=4w"
    response = me(runtime, cookie)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["spotify_id"] == "demo" and body["spotify_connection"] == "ok"
    assert body["timezone"] == "UTC" and body["last_synced_at"] is None
    assert body["created_at"].endswith("Z") and isinstance(body["id"], str)
    assert body["totals"] == {
        "plays": 0,
        "ms_played": 0,
        "tracks": 0,
        "artists": 0,
        "first_played_at": None,
        "last_played_at": None,
    }


def set_cookie(response: httpx.Response, name: str) -> str:
    [line] = [v for v in response.headers.get_list("set-cookie") if v.startswith(f"{name}=")]
    return line


def test_the_session_cookie_is_http_only_and_lax(runtime: LocalRuntime) -> None:
    with browser() as client:
        done = client.get(start_sign_in(client, runtime))
    cookie = set_cookie(done, "myi_session")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/;" in cookie + ";"
    assert "Secure" not in cookie


def test_login_binds_the_state_to_the_browser_with_a_short_lived_callback_only_cookie(
    runtime: LocalRuntime,
) -> None:
    start = httpx.get(f"{runtime.url}/auth/login", follow_redirects=False)
    cookie = set_cookie(start, "myi_login")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert "Path=/auth/callback;" in cookie and "Max-Age=600;" in cookie  # PKCE_TTL_SECONDS
    value = start.cookies["myi_login"]
    assert len(value) >= 43 and value not in start.headers["location"]


def sessions_count(rt: LocalRuntime) -> int:
    with psycopg.connect(rt.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM sessions").fetchone()
    assert row is not None
    return int(row[0])


def test_a_callback_opened_in_another_browser_signs_nobody_in(runtime: LocalRuntime) -> None:
    """Login CSRF: the attacker starts a sign-in with their own Spotify account and gets the victim's
    browser to open the callback URL."""
    with browser() as attacker, browser() as victim:
        callback = start_sign_in(attacker, runtime, "ana")
        start_sign_in(victim, runtime, "demo")  # the victim has a sign-in of their own under way
        before = sessions_count(runtime)
        for jar in (None, {"myi_login": victim.cookies["myi_login"]}):
            refused = httpx.get(callback, cookies=jar, follow_redirects=False)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["code"] == "invalid_state"
            assert "myi_session" not in refused.cookies
        assert sessions_count(runtime) == before
        # The state was not spent: in the browser that started it, the same callback works.
        done = attacker.get(callback)
        assert done.status_code == 302 and done.cookies.get("myi_session")
        assert sessions_count(runtime) == before + 1
        cleared = set_cookie(done, "myi_login")
        assert "Max-Age=0" in cleared and "Path=/auth/callback" in cleared
        assert "myi_login" not in attacker.cookies  # the browser dropped it


def test_a_replayed_state_is_refused(runtime: LocalRuntime) -> None:
    with browser() as client:
        callback = start_sign_in(client, runtime)
        binding = client.cookies["myi_login"]
        assert client.get(callback).status_code == 302
    replay = httpx.get(callback, cookies={"myi_login": binding}, follow_redirects=False)
    assert replay.status_code == 400
    assert replay.json()["error"]["code"] == "invalid_state"


def test_a_denied_authorisation_returns_to_the_app_with_the_reason(runtime: LocalRuntime, fake: Any) -> None:
    fake.deny_next_login()
    with browser() as client:
        done = client.get(start_sign_in(client, runtime))
    assert done.status_code == 302
    assert done.headers["location"] == f"{APP_URL}/?login_error=access_denied"
    assert "myi_session" not in done.cookies


def test_logout_revokes_the_session_everywhere(runtime: LocalRuntime) -> None:
    cookie, _, _ = sign_in(runtime)
    other, _, _ = sign_in(runtime)  # a second device
    out = httpx.post(f"{runtime.url}/auth/logout", cookies={"myi_session": cookie})
    assert out.status_code == 204
    assert "myi_session=;" in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
    assert me(runtime, cookie).status_code == 401
    assert me(runtime, cookie).json()["error"]["code"] == "unauthenticated"
    assert me(runtime, other).status_code == 200


def test_a_session_row_given_to_another_user_opens_nothing(runtime: LocalRuntime) -> None:
    alice, _, _ = sign_in(runtime, "demo")
    bob, _, _ = sign_in(runtime, "ana")
    assert me(runtime, bob).json()["spotify_id"] == "ana"
    with psycopg.connect(runtime.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE sessions SET user_id = (SELECT id FROM users WHERE spotify_id = 'ana') "
            "WHERE user_id = (SELECT id FROM users WHERE spotify_id = 'demo')"
        )
    assert me(runtime, alice).status_code == 401


@pytest.mark.parametrize(
    "target",
    ["https://evil.example", "//evil.example", "/\\evil.example", "/\u3000/evil.example", "/\t/evil.example"],
)
def test_a_return_path_to_another_site_is_refused(runtime: LocalRuntime, target: str) -> None:
    response = httpx.get(f"{runtime.url}/auth/login", params={"return_to": target})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert "return_to" in response.json()["error"]["message"]
    assert "myi_login" not in response.cookies


def test_me_needs_a_live_session(runtime: LocalRuntime) -> None:
    assert me(runtime, None).status_code == 401
    assert me(runtime, "not-a-session").status_code == 401


def test_the_time_zone_can_be_changed_and_must_exist(runtime: LocalRuntime) -> None:
    cookie, _, _ = sign_in(runtime)
    jar = {"myi_session": cookie}
    ok = httpx.patch(f"{runtime.url}/me", json={"timezone": "Europe/Berlin"}, cookies=jar)
    assert ok.status_code == 200 and ok.json()["timezone"] == "Europe/Berlin"
    bad = httpx.patch(f"{runtime.url}/me", json={"timezone": "Mars/Olympus"}, cookies=jar)
    assert bad.status_code == 400 and "timezone" in bad.json()["error"]["message"]
    assert me(runtime, cookie).json()["timezone"] == "Europe/Berlin"


def test_a_state_changing_request_from_a_foreign_origin_is_refused(runtime: LocalRuntime) -> None:
    cookie, _, _ = sign_in(runtime)
    foreign = httpx.post(
        f"{runtime.url}/auth/logout",
        cookies={"myi_session": cookie},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    assert me(runtime, cookie).status_code == 200


def test_deleting_the_user_removes_them_and_their_sessions(runtime: LocalRuntime) -> None:
    cookie, _, _ = sign_in(runtime, "mika")
    gone = httpx.delete(f"{runtime.url}/me", cookies={"myi_session": cookie})
    assert gone.status_code == 204
    assert me(runtime, cookie).status_code == 401
    with psycopg.connect(runtime.database_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE spotify_id = 'mika'").fetchone() == (0,)


def test_no_code_or_token_appears_in_the_runtime_log(runtime: LocalRuntime, fake: Any) -> None:
    cookie, _, callback = sign_in(runtime)
    code = query(callback)["code"]
    log = runtime.log()
    assert "auth" in log  # the log holds the invocations at all
    for secret in (code, cookie, *fake.issued_tokens()):
        assert secret not in log
