"""Statistics API figures: ``api_p95_ms_<route>_<range>``, the 95th percentile of the API function's
handler time (the resolver, from API Gateway event to response, session check included) over 200
calls, against the local PostgreSQL, for a user with 1,000,000 plays over ten years ending now
(30,000 tracks); ``api_p95_growth``, the worst ratio of a route's p95 for that user to the same
route's p95 for a user with 10,000 plays over the same ten years (``api_p95_growth_<route>`` for
each route). ``MYI_BENCH_API_PLAYS`` overrides the large user's plays.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import urlencode

import psycopg

from devtools.bench import BenchContext, Figure
from devtools.bench.ingest import YEARS, load_user
from devtools.local import events
from devtools.local.resources import create_resources
from infra.wiring import WIRING
from myi import db, migrate
from myi.api.app import build_app
from myi.auth import sessions
from myi.settings import Settings, get_settings

LARGE = int(os.environ.get("MYI_BENCH_API_PLAYS") or 1_000_000)
SMALL = 10_000
CALLS = 200
HISTORY_DEPTH = 50


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


class _Caller:
    def __init__(self, settings: Settings, cookie: str) -> None:
        self.app = build_app()
        self.cookie = cookie
        self.settings = settings

    def __call__(self, path: str, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        match, _ = events.match_route(WIRING.routes(), "GET", path)
        assert match is not None
        event = events.http_to_event(
            method="GET",
            raw_path=path,
            raw_query=urlencode(params),
            headers=[("cookie", f"{sessions.COOKIE}={self.cookie}")],
            body=b"",
            match=match,
            source_ip="127.0.0.1",
            host="localhost",
            now=datetime.now(UTC),
        )
        start = time.perf_counter()
        result = self.app.resolve(event, cast(Any, None))
        elapsed = (time.perf_counter() - start) * 1000
        if result["statusCode"] != 200:
            raise RuntimeError(f"GET {path} {params}: {result['statusCode']} {result.get('body')}")
        return elapsed, json.loads(result["body"])


def _routes(call: _Caller) -> dict[str, Callable[[], float]]:
    """Each measured route as a function returning one call's handler time."""
    history_cursor = None
    for _ in range(HISTORY_DEPTH - 1):
        _, page = call("/me/history", {"limit": 20, **({"cursor": history_cursor} if history_cursor else {})})
        history_cursor = page["next"]
    deep = {"limit": 20, "cursor": history_cursor} if history_cursor else {"limit": 20}
    routes: dict[str, Callable[[], float]] = {
        "history_p1": lambda: call("/me/history", {"limit": 20})[0],
        "history_p50": lambda: call("/me/history", deep)[0],
    }
    for range_ in ("4w", "all"):
        for name, path in (
            ("overview", "/me/stats/overview"),
            ("top_tracks", "/me/stats/top/tracks"),
            ("top_artists", "/me/stats/top/artists"),
            ("activity", "/me/stats/activity"),
        ):
            routes[f"{name}_{range_}"] = _once(call, path, {"range": range_})
    return routes


def _once(call: _Caller, path: str, params: dict[str, Any]) -> Callable[[], float]:
    return lambda: call(path, params)[0]


def _measure(call: _Caller) -> dict[str, float]:
    out = {}
    for name, once in _routes(call).items():
        for _ in range(5):  # warm the caches and the prepared statements
            once()
        out[name] = _p95([once() for _ in range(CALLS)])
    return out


def run(ctx: BenchContext) -> Iterator[Figure]:
    os.environ["DATABASE_URL"] = ctx.database_url
    # the state table (rate limits, the cursor key) and the rest, as the API finds them deployed
    os.environ.update(create_resources(Settings.from_env()))
    get_settings.cache_clear()
    db.close_connection()
    settings = get_settings()
    start = datetime.now(UTC) - timedelta(days=365 * YEARS)
    with psycopg.connect(ctx.database_url, autocommit=True, prepare_threshold=None) as conn:
        migrate.migrate(conn)
        large, _ = load_user(conn, "bench-api-large", LARGE, settings.import_batch_size, start=start)
        small, _ = load_user(conn, "bench-api-small", SMALL, settings.import_batch_size, start=start)
        conn.execute("VACUUM ANALYZE")
        now = datetime.now(UTC)
        large_cookie = sessions.create(conn, large, settings, now=now, user_agent="bench")
        small_cookie = sessions.create(conn, small, settings, now=now, user_agent="bench")
    big = _measure(_Caller(settings, large_cookie))
    little = _measure(_Caller(settings, small_cookie))
    for name, value in big.items():
        yield Figure(f"api_p95_ms_{name}", value, "ms")
    for name in big:
        yield Figure(f"api_p95_growth_{name}", big[name] / little[name], "x")
    yield Figure("api_p95_growth", max(big[n] / little[n] for n in big), "x")
    db.close_connection()
