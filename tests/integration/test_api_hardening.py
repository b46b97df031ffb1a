"""Bad input never answers 5xx, and costly writes are limited: cursors are signed and validated,
zones must be known to PostgreSQL as well as Python, bodies are JSON of a sane depth, imports and
zone changes are rate limited, and a statement the API's timeout cancels answers 503. Everything
through the API function's resolver, on the real database and the emulator; a property-based fuzzer
throws arbitrary cursors, zones, parameters and bodies at every route."""

from __future__ import annotations

import base64
import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.local import events
from infra.wiring import WIRING, Route
from myi import cursors, db
from myi.api.app import MAX_BODY_DEPTH, body_too_deep
from myi.api.database import connection as api_connection
from myi.auth import sessions
from myi.ingestion import ingest
from myi.settings import Settings, get_settings
from tests.fixtures.api import ApiClient, Reply, signed_in
from tests.fixtures.plays import extended_play, make_user

Conn = psycopg.Connection[Any]


@pytest.fixture
def tune(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set environment settings for the API function (read again at once), restored after."""

    def set_env(**values: str) -> Settings:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        return get_settings()

    yield set_env
    monkeypatch.undo()
    get_settings.cache_clear()


def fresh_user(conn: Conn, spotify_id: str = "carol", timezone: str = "UTC") -> int:
    """A user whose id no earlier test used: the DynamoDB counters outlive the tables' truncation."""
    conn.execute(
        "SELECT setval(pg_get_serial_sequence('users', 'id'), %s)", (random.randrange(10**6, 2 * 10**9),)
    )
    return make_user(conn, spotify_id, timezone)


@pytest.fixture
def carol(db_conn: Conn, api_settings: Settings) -> tuple[int, ApiClient]:
    user = fresh_user(db_conn)
    ingest(
        db_conn,
        user,
        [extended_play(n, datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=n), 60_000) for n in range(30)],
    )
    return user, signed_in(db_conn, api_settings, user)


def raw(
    api: ApiClient,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    content_type: str | None = None,
    origin: str | None = None,
) -> Reply:
    """A request with a body exactly as given (ApiClient only sends JSON it serialised itself), to a
    route of the wiring or, as API Gateway would not send it, to any other path of the API function."""
    match, known = events.match_route(WIRING.routes(), method, path)
    if match is None:
        assert not path.startswith("/auth/"), known
        match = events.RouteMatch(Route(method, path), WIRING.function("api"), {})  # type: ignore[arg-type]
    headers = [] if api.cookie is None else [("cookie", f"{sessions.COOKIE}={api.cookie}")]
    if content_type is not None:
        headers.append(("content-type", content_type))
    if origin is not None:
        headers.append(("origin", origin))
    event = events.http_to_event(
        method=method,
        raw_path=path,
        raw_query=query,
        headers=headers,
        body=body,
        match=match,
        source_ip="127.0.0.1",
        host="localhost",
        now=datetime.now(UTC),
    )
    result = api.app.resolve(event, None)
    text = result.get("body") or ""
    return Reply(
        status=int(result["statusCode"]),
        headers={k.lower(): v for k, v in (result.get("headers") or {}).items()},
        body=json.loads(text) if text else None,
    )


def assert_error(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.error_code == code and reply.body["error"]["message"], reply.body


def unsigned(payload: Any) -> str:
    """A cursor as a client might make one up: base64 of JSON, no MAC."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def us(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


# --- cursors -----------------------------------------------------------------------------------------

FAR = [us(datetime(9999, 12, 31, tzinfo=UTC)), us(datetime(9999, 12, 31, 23, tzinfo=UTC))]
YEAR_ONE = [us(datetime(1, 1, 1, tzinfo=UTC)), us(datetime(1, 1, 2, tzinfo=UTC))]


@pytest.mark.parametrize(
    "window", [FAR, YEAR_ONE, [FAR[0], YEAR_ONE[0]]], ids=["9999", "year 1", "from > to"]
)
def test_a_top_list_cursor_whose_window_is_out_of_range_is_400(
    carol: tuple[int, ApiClient], window: list[int]
) -> None:
    user, api = carol
    payload = {"kind": "tracks", "by": "plays", "rank": 2, "key": [1, 1, 1], "window": window}
    for cursor in (unsigned(payload), cursors.seal(get_settings(), "top", user, payload)):
        reply = api.get("/me/stats/top/tracks", range_="1y", cursor=cursor)
        assert_error(reply, 400, "invalid_request")
        assert "cursor" in reply.body["error"]["message"]


@pytest.mark.parametrize("at", [FAR[1], YEAR_ONE[0], 10**30, -1])
def test_a_history_cursor_out_of_range_is_400(carol: tuple[int, ApiClient], at: int) -> None:
    user, api = carol
    payload = {"at": at, "track": 1}
    for cursor in (unsigned(payload), cursors.seal(get_settings(), "history", user, payload)):
        assert_error(api.get("/me/history", cursor=cursor), 400, "invalid_request")


def test_a_client_cannot_choose_the_window_of_a_cursor(carol: tuple[int, ApiClient]) -> None:
    _, api = carol
    window = {"from_": "2024-01-01", "to": "2024-01-31"}
    first = api.get("/me/stats/top/tracks", limit=2, **window)
    assert first.status == 200 and first.body["next"], first.body
    cursor = first.body["next"]
    assert api.get("/me/stats/top/tracks", limit=2, cursor=cursor, **window).status == 200
    data = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    mac, payload = data[: cursors.MAC_BYTES], json.loads(data[cursors.MAC_BYTES :])
    payload["window"] = [us(datetime(2024, 1, 1, tzinfo=UTC)), us(datetime(2024, 1, 2, tzinfo=UTC))]
    forged = base64.urlsafe_b64encode(mac + json.dumps(payload, separators=(",", ":")).encode()).decode()
    assert_error(api.get("/me/stats/top/tracks", limit=2, cursor=forged, **window), 400, "invalid_request")
    # A history cursor does not open a top list, nor the other way round.
    history = api.get("/me/history", limit=2).body["next"]
    assert history is not None
    assert_error(api.get("/me/stats/top/tracks", cursor=history), 400, "invalid_request")
    assert_error(api.get("/me/history", cursor=cursor), 400, "invalid_request")


@pytest.mark.parametrize(
    "cursor",
    [
        unsigned(["2024-01-01T00:00:00+00:00", 5]),
        unsigned(["2024-01-01T00:00:00+00:00", ["x"]]),
        unsigned([1, 2]),
        unsigned({"a": 1}),
        "%%%",
        unsigned(7),
    ],
)
def test_an_imports_cursor_of_the_wrong_shape_is_400(carol: tuple[int, ApiClient], cursor: str) -> None:
    _, api = carol
    assert_error(api.get("/me/imports", cursor=cursor), 400, "invalid_request")


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"from": "2024-W01-1", "to": "2024-01-31"}, "from"),
        ({"from": "2024-01-01", "to": "2024-W05-1"}, "to"),
        ({"from": "0001-01-01", "to": "2024-01-31"}, "from"),
        ({"from": "2024-02-01", "to": "2024-01-31"}, "to"),
        ({"from": "\uff12\uff10\uff12\uff14-01-01", "to": "2024-01-31"}, "from"),
    ],
)
def test_a_window_of_week_dates_year_one_or_backwards_is_400(
    carol: tuple[int, ApiClient], params: dict[str, str], parameter: str
) -> None:
    _, api = carol
    reply = api.request("GET", "/me/stats/overview", params=params)
    assert_error(reply, 400, "invalid_request")
    assert parameter in reply.body["error"]["message"]


# --- zones and bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["America/Coyhaique", "localtime"])
def test_a_zone_python_knows_but_postgresql_does_not_is_400(
    db_conn: Conn, carol: tuple[int, ApiClient], zone: str
) -> None:
    from zoneinfo import available_timezones

    user, api = carol
    known = {r[0] for r in db_conn.execute("SELECT name FROM pg_timezone_names").fetchall()}
    if zone not in available_timezones() or zone in known:
        pytest.skip(f"{zone} is not a zone only Python knows here")
    reply = api.request("PATCH", "/me", body={"timezone": zone})
    assert_error(reply, 400, "invalid_request")
    assert "timezone" in reply.body["error"]["message"]
    assert db_conn.execute("SELECT timezone FROM users WHERE id = %s", (user,)).fetchone() == ("UTC",)
    assert api.get("/me/stats/activity").status == 200


@pytest.mark.parametrize(("method", "path"), [("PATCH", "/me"), ("POST", "/me/imports")])
def test_a_body_that_is_not_json_is_415_with_the_error_shape(
    carol: tuple[int, ApiClient], method: str, path: str
) -> None:
    _, api = carol
    reply = raw(api, method, path, body=b'{"timezone": "Europe/Berlin"}', content_type="text/plain")
    assert_error(reply, 415, "unsupported_media_type")


@pytest.mark.parametrize(("method", "path"), [("PATCH", "/me"), ("POST", "/me/imports")])
def test_a_body_nested_100000_levels_is_400(carol: tuple[int, ApiClient], method: str, path: str) -> None:
    _, api = carol
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        reply = raw(api, method, path, body=body, content_type="application/json")
        assert_error(reply, 400, "invalid_request")
        assert "nested" in reply.body["error"]["message"]


def test_the_depth_scan_skips_strings_and_is_linear() -> None:
    assert not body_too_deep('{"timezone": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}')
    assert not body_too_deep('{"a": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\""}')
    assert body_too_deep("[" * 17) and not body_too_deep("[" * 16 + "]" * 16)
    assert body_too_deep('{"a": [[[[[[[[[[[[[[[[[[ "x" ]]]]]]]]]]]]]]]]]]}')
    # Escaped quotes with no end, and a lone backslash at the end: one pass, not one per quote.
    started = datetime.now(UTC)
    assert not body_too_deep('"' + '\\"' * 500_000 + "\\")
    assert datetime.now(UTC) - started < timedelta(seconds=5)


# --- what is answered first ---------------------------------------------------------------------------

FOREIGN = "https://elsewhere.example"
DEEP = b'{"timezone": ' * (MAX_BODY_DEPTH + 1) + b'"UTC"' + b"}" * (MAX_BODY_DEPTH + 1)
# Requests each wrong in one more way than the one under test: what validation alone would answer.
WRONG = [
    pytest.param("GET", "/me/history", "limit=0&cursor=%25", b"", None, id="bad query parameters"),
    pytest.param("GET", "/me/stats/top/playlists", "", b"", None, id="bad path parameter"),
    pytest.param("PATCH", "/me", "", b'{"timezone": 5}', "application/json", id="bad body"),
    pytest.param("PATCH", "/me", "", b"{", "application/json", id="body not JSON"),
    pytest.param("POST", "/me/imports", "", b'{"filename": "a.zip"}', "text/plain", id="not sent as JSON"),
    pytest.param("POST", "/me/imports", "", DEEP, "application/json", id="body too deep"),
    pytest.param("PUT", "/me/imports", "", b"", None, id="no such route"),
]


@pytest.mark.parametrize(("method", "path", "query", "body", "content_type"), WRONG)
def test_no_session_is_401_whatever_else_is_wrong(
    api_settings: Settings,
    carol: tuple[int, ApiClient],
    method: str,
    path: str,
    query: str,
    body: bytes,
    content_type: str | None,
) -> None:
    for client in (ApiClient(api_settings), ApiClient(api_settings, cookie="x" * 43)):
        reply = raw(client, method, path, query=query, body=body, content_type=content_type)
        assert_error(reply, 401, "unauthenticated")
    # Signed in, the same request is refused for what is wrong with it.
    _, api = carol
    reply = raw(api, method, path, query=query, body=body, content_type=content_type)
    assert reply.status in (400, 404, 415) and reply.error_code, reply.body


@pytest.mark.parametrize(("method", "path", "query", "body", "content_type"), WRONG)
def test_a_foreign_origin_is_403_before_the_session_and_the_request_are_looked_at(
    api_settings: Settings,
    carol: tuple[int, ApiClient],
    method: str,
    path: str,
    query: str,
    body: bytes,
    content_type: str | None,
) -> None:
    method = "DELETE" if method == "GET" else method  # a state-changing request
    _, api = carol
    for client in (api, ApiClient(api_settings)):
        reply = raw(client, method, path, query=query, body=body, content_type=content_type, origin=FOREIGN)
        assert_error(reply, 403, "forbidden")
    # The SPA's own origin changes things as ever: the same request meets the next check instead.
    own = raw(
        api,
        method,
        path,
        query=query,
        body=body,
        content_type=content_type,
        origin=api_settings.allowed_origins[0],
    )
    assert own.status != 403, own.body


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "x/y", None])
@pytest.mark.parametrize(("method", "path"), [("PATCH", "/me"), ("POST", "/me/imports")])
def test_a_body_too_deep_is_400_before_validation(
    carol: tuple[int, ApiClient], method: str, path: str, content_type: str | None
) -> None:
    _, api = carol
    for body in (DEEP, b"[" * (MAX_BODY_DEPTH + 1)):
        reply = raw(api, method, path, body=body, content_type=content_type)
        assert_error(reply, 400, "invalid_request")
        assert "nested deeper" in reply.body["error"]["message"], reply.body
    assert raw(api, "PATCH", "/me", body=b"{}", content_type="text/plain").status == 415


def test_a_session_lookup_the_timeout_cancels_answers_503_before_validation(
    carol: tuple[int, ApiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, api = carol

    def cancelled(*args: Any, **kwargs: Any) -> None:
        raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    requests = [p.values for p in WRONG] + [("GET", "/me", "", b"", None)]
    with monkeypatch.context() as patch:
        patch.setattr(sessions, "resolve", cancelled)
        for method, path, query, body, content_type in requests:
            reply = raw(api, method, path, query=query, body=body, content_type=content_type)
            assert_error(reply, 503, "unavailable")
            assert int(reply.headers["retry-after"]) >= 1
    assert api.get("/me").status == 200


# --- limits on costly writes ---------------------------------------------------------------------------


def test_import_creations_are_limited_per_user_per_window(
    db_conn: Conn, api_settings: Settings, tune: Any
) -> None:
    tune(IMPORT_CREATE_LIMIT="3", IMPORT_CREATE_WINDOW_SECONDS="3600")
    user = fresh_user(db_conn)
    api = signed_in(db_conn, api_settings, user)
    new = {"filename": "my_spotify_data.zip", "size_bytes": 1000}
    assert [api.request("POST", "/me/imports", body=new).status for _ in range(3)] == [201] * 3
    refused = api.request("POST", "/me/imports", body=new)
    assert_error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert db_conn.execute("SELECT count(*) FROM import_jobs WHERE user_id = %s", (user,)).fetchone() == (3,)
    # Bad requests are answered before the budget is touched; other users have their own.
    assert api.request("POST", "/me/imports", body={**new, "size_bytes": 0}).status == 400
    other = signed_in(db_conn, api_settings, fresh_user(db_conn, "dave"))
    assert other.request("POST", "/me/imports", body=new).status == 201


def test_one_import_per_user_is_read_at_a_time(db_conn: Conn, api_settings: Settings, tune: Any) -> None:
    tune(IMPORT_CREATE_LIMIT="100")
    user = fresh_user(db_conn)
    api = signed_in(db_conn, api_settings, user)
    new = {"filename": "my_spotify_data.zip", "size_bytes": 1000}
    first = api.request("POST", "/me/imports", body=new)
    assert first.status == 201
    job = first.body["import"]["id"]
    db_conn.execute("UPDATE import_jobs SET status = 'running', updated_at = now() WHERE id = %s", (job,))
    refused = api.request("POST", "/me/imports", body=new)
    assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1
    db_conn.execute("UPDATE import_jobs SET status = 'completed' WHERE id = %s", (job,))
    assert api.request("POST", "/me/imports", body=new).status == 201


def test_zone_changes_are_limited_per_user_per_window(
    db_conn: Conn, api_settings: Settings, tune: Any
) -> None:
    tune(ZONE_CHANGE_LIMIT="2", ZONE_CHANGE_WINDOW_SECONDS="3600")
    user = fresh_user(db_conn)
    api = signed_in(db_conn, api_settings, user)
    zones = ["Europe/Berlin", "Asia/Tokyo", "America/New_York"]
    assert [api.request("PATCH", "/me", body={"timezone": z}).status for z in zones[:2]] == [200, 200]
    refused = api.request("PATCH", "/me", body={"timezone": zones[2]})
    assert_error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert db_conn.execute("SELECT timezone FROM users WHERE id = %s", (user,)).fetchone() == ("Asia/Tokyo",)
    # An unknown zone is 400 (not 429) and takes nothing from the budget.
    assert api.request("PATCH", "/me", body={"timezone": "Mars/Olympus"}).status == 400


def test_a_statement_the_api_timeout_cancels_answers_503(
    db_conn: Conn, database_url: str, carol: tuple[int, ApiClient], tune: Any
) -> None:
    _, api = carol
    tune(API_STATEMENT_TIMEOUT_MS="300")
    assert api.get("/me/stats/overview", range_="1y").status == 200
    assert api_connection().execute("SHOW statement_timeout").fetchone() == ("300ms",)
    assert db.get_connection().execute("SHOW statement_timeout").fetchone() == ("0",)  # the workers'
    blocker = psycopg.connect(database_url, autocommit=True)
    pid = blocker.info.backend_pid
    # Without the timeout the request would wait for the lock for ever: it is ended after 10 s.
    release = threading.Timer(10, lambda: db_conn.execute("SELECT pg_terminate_backend(%s)", (pid,)))
    try:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE stat_user IN ACCESS EXCLUSIVE MODE")
        release.start()
        reply = api.get("/me/stats/overview", range_="1y")
    finally:
        release.cancel()
        blocker.close()
    assert_error(reply, 503, "unavailable")
    assert int(reply.headers["retry-after"]) >= 1
    assert api.get("/me/stats/overview", range_="1y").status == 200  # the connection serves on


# --- the fuzzer -------------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/me"),
    ("PATCH", "/me"),
    ("GET", "/me/stats/overview"),
    ("GET", "/me/stats/top/tracks"),
    ("GET", "/me/stats/top/artists"),
    ("GET", "/me/stats/top/albums"),
    ("GET", "/me/stats/activity"),
    ("GET", "/me/history"),
    ("GET", "/me/imports"),
    ("POST", "/me/imports"),
    ("GET", "/me/imports/00000000-0000-0000-0000-000000000000"),
    ("GET", "/me/spotify-top/tracks"),
    ("GET", "/me/spotify-top/artists"),
    ("POST", "/me/sync"),
    ("GET", "/health"),
]

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_instants = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from(FAR + YEAR_ONE + [0, None])
_cursor_payloads = st.one_of(
    _json,
    st.fixed_dictionaries({"at": _instants, "track": _json | st.integers()}),
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["tracks", "artists", "albums", "x"]),
            "by": st.sampled_from(["plays", "ms_played"]),
            "rank": st.integers(min_value=-5, max_value=2**70),
            "key": st.lists(_json | st.integers(), max_size=4),
            "window": st.lists(_instants, max_size=3),
        }
    ),
    st.tuples(st.text(max_size=40), st.text(max_size=40)).map(list),
    st.tuples(  # imports cursors: (created_at, id)
        st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-14:00", "2024-01-01"])
        | st.datetimes().map(datetime.isoformat),
        st.uuids().map(str) | _json,
    ).map(list),
)
_zones = st.sampled_from(
    ["America/Coyhaique", "localtime", "posixrules", "Factory", "UTC", "Etc/GMT+5", "EST5EDT", "", "../etc"]
) | st.text(max_size=30)
_dates = st.sampled_from(["2024-W01-1", "0001-01-01", "9999-12-31", "2024-02-30", "2024-01-01"]) | st.text(
    max_size=12
)


@st.composite
def _requests(draw: st.DrawFn) -> dict[str, Any]:
    method, path = draw(st.sampled_from(ROUTES))
    payload = draw(_cursor_payloads)
    encoded = unsigned(payload)
    query: dict[str, Any] = {}
    if draw(st.booleans()):
        query["cursor"] = draw(st.sampled_from([encoded, encoded[:-3]]) | st.text(max_size=60))
    for name, values in (
        ("range", st.sampled_from(["4w", "6m", "1y", "all", "x"])),
        ("from", _dates),
        ("to", _dates),
        ("limit", st.integers(min_value=-2, max_value=200).map(str) | st.text(max_size=4)),
        ("by", st.sampled_from(["plays", "ms_played", "x"])),
        ("term", st.sampled_from(["short_term", "long_term", "x"])),
    ):
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            query[name] = draw(values)
    body_kind = draw(st.sampled_from(["none", "zone", "import", "json", "deep", "text"]))
    body = b""
    if body_kind == "zone":
        body = json.dumps({"timezone": draw(_zones)}).encode()
    elif body_kind == "import":
        body = json.dumps(
            {"filename": draw(st.text(max_size=30)), "size_bytes": draw(st.integers() | _json)}
        ).encode()
    elif body_kind == "json":
        body = json.dumps(draw(_json)).encode()
    elif body_kind == "deep":
        depth = draw(st.integers(min_value=1, max_value=50_000))
        body = (draw(st.sampled_from(["[", '{"a":'])) * depth).encode()
    elif body_kind == "text":
        body = draw(st.binary(max_size=60))
    content_type = draw(
        st.sampled_from([None, "application/json", "text/plain", "application/x-www-form-urlencoded", "x/y"])
    )
    return {
        "method": method,
        "path": path,
        "query": urlencode(query),
        "body": body,
        "content_type": content_type,
    }


def test_no_cursor_zone_parameter_or_body_answers_5xx(
    db_conn: Conn, carol: tuple[int, ApiClient], tune: Any
) -> None:
    _, api = carol
    tune(IMPORT_CREATE_LIMIT="1000000", ZONE_CHANGE_LIMIT="1000000")
    seen: set[int] = set()

    @given(request=_requests())
    @settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def fuzz(request: dict[str, Any]) -> None:
        reply = raw(api, **request)
        seen.add(reply.status)
        assert reply.status < 500, (request, reply.status, reply.body)
        if reply.status >= 400:
            assert reply.error_code, (request, reply.body)

    fuzz()
    assert {200, 400} <= seen
