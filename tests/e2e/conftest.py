"""The local runtime wired to a fake Spotify in the test process, shared by a module's tests, and
the browser's side of signing in."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from devtools import embedded
from devtools.fakespotify import FakeSpotify, demo_world
from tests.fixtures.local_runtime import LocalRuntime, start_local_runtime, stop_local_runtime

APP_URL = "http://127.0.0.1:9/app"  # the SPA: never fetched, only redirected to


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSpotify]:
    with FakeSpotify(demo_world()) as server:
        yield server


@contextmanager
def runtime_with(
    fake: FakeSpotify, tmp_path_factory: pytest.TempPathFactory, **env: str
) -> Iterator[LocalRuntime]:
    """The local runtime with its own database, talking to ``fake``, with small limits for tests
    and ``env`` on top."""
    pg = embedded.start_postgres("pg-test")
    database_url = pg.create_database()
    log = tmp_path_factory.mktemp("e2e") / "local-runtime.log"
    rt = start_local_runtime(
        database_url,
        log,
        {
            "SPOTIFY_ACCOUNTS_URL": fake.accounts_url,
            "SPOTIFY_API_URL": fake.api_url,
            "SPOTIFY_CLIENT_ID": fake.client_id,
            "SPOTIFY_CLIENT_SECRET": fake.client_secret,
            "MAX_UPLOAD_BYTES": str(8 * 1024 * 1024),
            "IMPORT_BATCH_SIZE": "2000",
            "SYNC_MAX_DELAY_SECONDS": "1",
            **env,
        },
    )
    try:
        yield rt
    finally:
        stop_local_runtime(rt)
        pg.drop_database(database_url)


@pytest.fixture(scope="module")
def runtime(fake: FakeSpotify, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    """The runtime for API tests: the SPA elsewhere (``APP_URL``), only ever redirected to."""
    with runtime_with(fake, tmp_path_factory, APP_URL=APP_URL) as rt:
        yield rt


def print_log_on_failure(request: pytest.FixtureRequest, runtime: LocalRuntime) -> Iterator[None]:
    """Use as an autouse fixture in a module: the runtime's log follows a failed test's report."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"\n--- local runtime log ---\n{runtime.log()}", file=sys.stderr)


def browser() -> httpx.Client:
    """A browser of its own: a cookie jar (which keeps each cookie's path), redirects not followed."""
    return httpx.Client(follow_redirects=False, timeout=30)


def start_sign_in(
    client: httpx.Client, rt: LocalRuntime, spotify_user: str = "demo", return_to: str = "/"
) -> str:
    """Login -> Spotify's consent in the browser ``client`` (which keeps the ``myi_login`` cookie
    /auth/login sets); returns the callback URL Spotify sends the browser to, not yet opened."""
    start = client.get(f"{rt.url}/auth/login", params={"return_to": return_to})
    assert start.status_code == 302, start.text
    approved = client.get(start.headers["location"] + f"&fake_user={spotify_user}")
    assert approved.status_code in (302, 303)
    callback = approved.headers["location"]
    assert callback.startswith(f"{rt.url}/auth/callback?")
    return str(callback)


def sign_in(rt: LocalRuntime, spotify_user: str = "demo", return_to: str = "/") -> tuple[str, str, str]:
    """Login -> Spotify -> callback, as a browser follows the redirects (carrying the ``myi_login``
    cookie from /auth/login to /auth/callback); returns (session cookie value, final location,
    callback URL)."""
    with browser() as client:
        callback = start_sign_in(client, rt, spotify_user, return_to)
        done = client.get(callback)
        assert done.status_code == 302, done.text
        cookie = done.cookies.get("myi_session")
        assert cookie, done.headers
        return cookie, done.headers["location"], callback


def session(rt: LocalRuntime, cookie: str) -> httpx.Client:
    """A client that sends the session cookie, as the SPA's fetches do."""
    return httpx.Client(base_url=rt.url, cookies={"myi_session": cookie}, timeout=30)
