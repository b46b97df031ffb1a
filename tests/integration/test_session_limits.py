"""Sessions end at their absolute lifetime however often they are used, and a user can sign out
everywhere; through the API and auth functions' resolvers on the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from devtools.local import events
from infra.wiring import WIRING
from myi.auth import sessions
from myi.auth.routes import build_auth_app
from myi.settings import Settings
from tests.fixtures.api import ApiClient
from tests.fixtures.plays import make_user


def session_since(conn: psycopg.Connection[Any], settings: Settings, user: int, days_ago: int) -> str:
    """A session signed in ``days_ago`` days ago and used a minute ago (its sliding expiry is far off)."""
    created = datetime.now(UTC) - timedelta(days=days_ago)
    raw = sessions.create(conn, user, settings, now=created, user_agent="tests")
    conn.execute(
        "UPDATE sessions SET last_seen_at = now() - interval '1 minute', "
        "expires_at = now() + interval '29 days' WHERE id_hash = %s",
        (sessions._digest(raw),),
    )
    return raw


def me(settings: Settings, raw: str) -> int:
    return ApiClient(settings, raw).get("/me").status


def test_a_session_past_its_absolute_lifetime_is_401_though_used_recently(
    db_conn: psycopg.Connection[Any], api_settings: Settings
) -> None:
    assert api_settings.session_max_days == 90
    user = make_user(db_conn, "long-lived")
    young = session_since(db_conn, api_settings, user, days_ago=89)
    old = session_since(db_conn, api_settings, user, days_ago=91)
    assert me(api_settings, young) == 200
    assert me(api_settings, old) == 401


def test_renewal_never_moves_a_session_past_its_absolute_lifetime(
    db_conn: psycopg.Connection[Any], api_settings: Settings
) -> None:
    settings = api_settings.replace(session_max_days=40)
    user = make_user(db_conn, "renewed")
    start = datetime.now(UTC)
    raw = sessions.create(db_conn, user, settings, now=start, user_agent=None)
    renewed = sessions.resolve(db_conn, raw, settings, now=start + timedelta(days=25))
    assert renewed is not None and renewed.renewed
    assert renewed.expires_at == start + timedelta(days=40)
    assert sessions.resolve(db_conn, raw, settings, now=start + timedelta(days=39)) is not None
    assert sessions.resolve(db_conn, raw, settings, now=start + timedelta(days=40, seconds=1)) is None


def logout(raw: str, query: str = "") -> dict[str, Any]:
    match, known = events.match_route(WIRING.routes(), "POST", "/auth/logout")
    assert match is not None, known
    event = events.http_to_event(
        method="POST",
        raw_path="/auth/logout",
        raw_query=query,
        headers=[("cookie", f"{sessions.COOKIE}={raw}")],
        body=b"",
        match=match,
        source_ip="127.0.0.1",
        host="localhost",
        now=datetime.now(UTC),
    )
    return build_auth_app().resolve(event, None)


def test_logout_everywhere_ends_every_session_of_the_user_and_no_one_elses(
    db_conn: psycopg.Connection[Any], api_settings: Settings
) -> None:
    alice, bob = make_user(db_conn, "alice"), make_user(db_conn, "bob")
    now = datetime.now(UTC)
    here, laptop, phone = (
        sessions.create(db_conn, alice, api_settings, now=now, user_agent=None) for _ in range(3)
    )
    bobs = sessions.create(db_conn, bob, api_settings, now=now, user_agent=None)
    assert all(me(api_settings, raw) == 200 for raw in (here, laptop, phone, bobs))

    result = logout(here, "everywhere=1")
    assert result["statusCode"] == 204
    assert any(c.startswith(f"{sessions.COOKIE}=;") for c in result.get("cookies") or [])
    assert [me(api_settings, raw) for raw in (here, laptop, phone)] == [401, 401, 401]
    assert me(api_settings, bobs) == 200


def test_a_plain_logout_ends_only_its_own_session(
    db_conn: psycopg.Connection[Any], api_settings: Settings
) -> None:
    alice = make_user(db_conn, "alice")
    now = datetime.now(UTC)
    here, laptop = (sessions.create(db_conn, alice, api_settings, now=now, user_agent=None) for _ in range(2))
    assert logout(here)["statusCode"] == 204
    assert me(api_settings, here) == 401 and me(api_settings, laptop) == 200


def test_logout_everywhere_with_a_dead_or_moved_session_revokes_nothing(
    db_conn: psycopg.Connection[Any], api_settings: Settings
) -> None:
    alice, bob = make_user(db_conn, "alice"), make_user(db_conn, "bob")
    now = datetime.now(UTC)
    bobs = sessions.create(db_conn, bob, api_settings, now=now, user_agent=None)
    moved = sessions.create(db_conn, alice, api_settings, now=now, user_agent=None)
    db_conn.execute("UPDATE sessions SET user_id = %s WHERE id_hash = %s", (bob, sessions._digest(moved)))
    assert logout(moved, "everywhere=1")["statusCode"] == 204
    assert logout("made-up-value", "everywhere=1")["statusCode"] == 204
    assert me(api_settings, bobs) == 200
