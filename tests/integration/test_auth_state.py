"""Login state, rate limits and sessions on the AWS emulator and a real PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import psycopg
import pytest

from myi.auth import pkce, sessions
from myi.ratelimit import RateLimiter
from myi.settings import Settings
from tests.fixtures.plays import make_user

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_login_state_works_once(aws_resources: dict[str, str], settings: Settings) -> None:
    store = pkce.StateStore(settings)
    state, browser = pkce.new_state(), pkce.new_browser_binding()
    store.put(state, pkce.LoginState(verifier="v" * 50, return_to="/stats"), browser=browser)
    assert store.consume(state, browser) == pkce.LoginState(verifier="v" * 50, return_to="/stats")
    assert store.consume(state, browser) is None
    assert store.consume("never-issued", browser) is None


def test_a_login_state_opens_only_with_its_browser_binding_and_is_not_spent_by_another(
    aws_resources: dict[str, str], settings: Settings
) -> None:
    store = pkce.StateStore(settings)
    state, browser = pkce.new_state(), pkce.new_browser_binding()
    store.put(state, pkce.LoginState(verifier="v" * 50, return_to="/"), browser=browser)
    for other in (None, "", pkce.new_browser_binding(), browser.upper(), browser + "=", "x" * 300):
        assert store.consume(state, other) is None
    assert store.consume(state, browser) == pkce.LoginState(verifier="v" * 50, return_to="/")


def test_the_table_holds_neither_the_state_nor_the_browser_binding(
    aws_resources: dict[str, str], settings: Settings
) -> None:
    store = pkce.StateStore(settings)
    state, browser = pkce.new_state(), pkce.new_browser_binding()
    store.put(state, pkce.LoginState(verifier="v" * 50, return_to="/"), browser=browser)
    items = (
        boto3.session.Session()
        .client("dynamodb", region_name=settings.region, endpoint_url=settings.aws_endpoint_url)
        .scan(TableName=settings.state_table)["Items"]
    )
    dumped = repr(items)
    assert "v" * 50 in dumped  # the item is there
    assert state not in dumped and browser not in dumped


def test_an_expired_login_state_is_refused_even_before_dynamodb_removes_it(
    aws_resources: dict[str, str], settings: Settings
) -> None:
    clock = Clock()
    store = pkce.StateStore(settings.replace(pkce_ttl_s=60), clock=clock)
    state = pkce.new_state()
    store.put(state, pkce.LoginState(verifier="v" * 50, return_to="/"), browser="b")
    clock.t += 61
    assert store.consume(state, "b") is None


def test_racing_callbacks_consume_a_state_exactly_once(
    aws_resources: dict[str, str], settings: Settings
) -> None:
    store = pkce.StateStore(settings)
    state = pkce.new_state()
    store.put(state, pkce.LoginState(verifier="v" * 50, return_to="/"), browser="b")
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(store.consume(state, "b"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1


def test_a_rate_limit_counts_within_its_window_and_resets_after(
    aws_resources: dict[str, str], settings: Settings
) -> None:
    clock = Clock(1_800_000_000.0)
    limiter = RateLimiter(settings, clock=clock)
    decisions = [limiter.take("login:203.0.113.9", limit=3, window_s=60) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[2].count == 3 and 1 <= decisions[3].retry_after_s <= 60
    assert limiter.take("login:203.0.113.10", limit=3, window_s=60).allowed  # another key
    clock.t += 60
    assert limiter.take("login:203.0.113.9", limit=3, window_s=60).allowed


def test_concurrent_takers_never_exceed_the_limit(aws_resources: dict[str, str], settings: Settings) -> None:
    limiter = RateLimiter(settings)
    allowed: list[bool] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(5):
            d = limiter.take("shared-budget-test", limit=12, window_s=3600)
            with lock:
                allowed.append(d.allowed)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 12


def test_a_block_closes_a_key_for_its_time(aws_resources: dict[str, str], settings: Settings) -> None:
    clock = Clock()
    limiter = RateLimiter(settings, clock=clock)
    assert limiter.blocked_for("spotify-block-test") == 0
    limiter.block("spotify-block-test", seconds=20)
    assert limiter.blocked_for("spotify-block-test") == pytest.approx(20, abs=0.01)
    clock.t += 21
    assert limiter.blocked_for("spotify-block-test") == 0


def counted_client(settings: Settings) -> tuple[Any, list[str]]:
    """A DynamoDB client of the emulator of its own, and the operations it calls, in order."""
    client = boto3.session.Session().client(
        "dynamodb", region_name=settings.region, endpoint_url=settings.aws_endpoint_url
    )
    calls: list[str] = []
    client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    return client, calls


def test_a_pause_refuses_pausable_takes_and_each_take_is_one_call(
    aws_resources: dict[str, str], settings: Settings
) -> None:
    clock = Clock(3_000_000_010.0)  # 10 s into a 30 s window
    client, calls = counted_client(settings)
    worker = RateLimiter(settings, clock=clock, client=client)
    elsewhere = RateLimiter(settings, clock=clock)  # another Lambda, which a 429 reached
    key = f"pause-test-{uuid.uuid4().hex}"

    def take() -> Any:
        return worker.take(key, limit=100, window_s=30, pausable=True)

    assert all(take().allowed for _ in range(3))
    assert calls == ["GetItem", "UpdateItem", "UpdateItem", "UpdateItem"]  # the pause read once
    elsewhere.block(key, seconds=100, window_s=30)
    calls.clear()
    refused = take()
    assert not refused.allowed and refused.paused and refused.retry_after_s == 100
    assert calls == ["UpdateItem"]  # refused by the window's own item
    for step, left in ((30, 70), (30, 40)):  # the next window, then one the block did not write
        clock.t += step
        refused = take()
        assert not refused.allowed and refused.paused and refused.retry_after_s == left
    clock.t += 41
    assert take().allowed
    assert worker.take(key, limit=100, window_s=30).allowed  # a take that is not pausable


def test_a_taker_that_read_the_pause_before_a_block_is_refused_by_its_window(
    aws_resources: dict[str, str], settings: Settings
) -> None:
    ahead, behind = Clock(3_000_000_030.5), Clock(3_000_000_029.9)  # either side of a boundary
    worker = RateLimiter(settings, clock=ahead)
    elsewhere = RateLimiter(settings, clock=behind)
    key = f"pause-race-{uuid.uuid4().hex}"
    assert worker.take(key, limit=100, window_s=30, pausable=True).allowed  # pause read: none
    elsewhere.block(key, seconds=5, window_s=30)  # in the window before, by its clock
    refused = worker.take(key, limit=100, window_s=30, pausable=True)
    assert not refused.allowed and refused.paused and refused.retry_after_s == 5


def test_a_session_resolves_slides_and_is_revoked(
    db_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = make_user(db_conn)
    raw = sessions.create(db_conn, user, settings, now=NOW, user_agent="tests")
    stored = db_conn.execute("SELECT id_hash FROM sessions").fetchone()
    assert stored is not None and raw.encode() not in bytes(stored[0])
    first = sessions.resolve(db_conn, raw, settings, now=NOW + timedelta(minutes=5))
    assert first is not None and first.user_id == user and not first.renewed
    later = NOW + timedelta(days=20)
    slid = sessions.resolve(db_conn, raw, settings, now=later)
    assert slid is not None and slid.renewed and slid.expires_at == later + timedelta(days=30)
    assert sessions.resolve(db_conn, raw, settings, now=later + timedelta(days=29)) is not None
    assert sessions.revoke(db_conn, raw, now=later)
    assert sessions.resolve(db_conn, raw, settings, now=later) is None


def test_a_session_expires_without_use(db_conn: psycopg.Connection[Any], settings: Settings) -> None:
    user = make_user(db_conn)
    raw = sessions.create(db_conn, user, settings, now=NOW, user_agent=None)
    assert sessions.resolve(db_conn, raw, settings, now=NOW + timedelta(days=30, seconds=1)) is None


def test_a_session_row_moved_to_another_user_opens_nothing(
    db_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    alice, bob = make_user(db_conn, "alice"), make_user(db_conn, "bob")
    raw = sessions.create(db_conn, alice, settings, now=NOW, user_agent=None)
    db_conn.execute("UPDATE sessions SET user_id = %s WHERE user_id = %s", (bob, alice))
    assert sessions.resolve(db_conn, raw, settings, now=NOW) is None
    assert sessions.resolve(db_conn, "made-up-value", settings, now=NOW) is None


def test_the_cookie_is_http_only_lax_and_secure_on_https(settings: Settings) -> None:
    plain = str(sessions.set_cookie("abc", settings.replace(api_url="http://127.0.0.1:8000")))
    secure = str(sessions.set_cookie("abc", settings.replace(api_url="https://api.example.com")))
    for cookie in (plain, secure):
        assert cookie.startswith("myi_session=abc;") and "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" in secure and "Secure" not in plain
    assert sessions.cookie_value(["other=1", "myi_session=abc"]) == "abc"


def test_sessions_long_expired_or_revoked_are_purged_and_live_ones_stay(
    db_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = make_user(db_conn, "purge")
    live = sessions.create(db_conn, user, settings, now=NOW, user_agent=None)
    old = sessions.create(db_conn, user, settings, now=NOW - timedelta(days=60), user_agent=None)
    gone = sessions.create(db_conn, user, settings, now=NOW, user_agent=None)
    sessions.revoke(db_conn, gone, now=NOW - timedelta(days=8))
    assert sessions.purge(db_conn, now=NOW) == 2
    assert sessions.resolve(db_conn, live, settings, now=NOW) is not None
    assert sessions.resolve(db_conn, old, settings, now=NOW) is None
    assert db_conn.execute("SELECT count(*) FROM sessions").fetchone() == (1,)


def test_a_rolling_budget_counts_the_end_of_the_previous_window(
    aws_resources: dict[str, str], settings: Settings
) -> None:
    clock = Clock()
    clock.t = 3_000_000_025.0  # 25 s into a 30 s window
    limiter = RateLimiter(settings, clock=clock)
    key = "rolling-budget-test"
    assert all(limiter.take(key, limit=10, window_s=30, rolling=True).allowed for _ in range(10))
    assert not limiter.take(key, limit=10, window_s=30, rolling=True).allowed
    clock.t += 6  # 1 s into the next window: a fixed window would start afresh
    refused = limiter.take(key, limit=10, window_s=30, rolling=True)
    assert not refused.allowed and 1 <= refused.retry_after_s <= 30
    assert limiter.take("fixed-" + key, limit=10, window_s=30).allowed
    clock.t += 14  # half of the new window: half of the old one still counts
    taken = [limiter.take(key, limit=10, window_s=30, rolling=True).allowed for _ in range(6)]
    assert taken == [True] * 5 + [False]  # 5 carried + 5 new = the budget
    clock.t += 30  # the old window has slid out entirely
    assert limiter.take(key, limit=10, window_s=30, rolling=True).allowed
