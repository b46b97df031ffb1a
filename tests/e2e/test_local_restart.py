"""A restart of the local runtime on the same database keeps the token-key ring, so the grants stored
before it still sync."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools import embedded
from devtools.fakespotify import FakeSpotify
from tests.e2e.conftest import session, sign_in
from tests.fixtures.local_runtime import LocalRuntime, start_local_runtime, stop_local_runtime


@pytest.fixture
def database_url() -> Iterator[str]:
    pg = embedded.start_postgres("pg-test")
    url = pg.create_database()
    yield url
    pg.drop_database(url)


def start(fake: FakeSpotify, database_url: str, key_file: Path, log: Path) -> LocalRuntime:
    return start_local_runtime(
        database_url,
        log,
        {
            "SPOTIFY_ACCOUNTS_URL": fake.accounts_url,
            "SPOTIFY_API_URL": fake.api_url,
            "SPOTIFY_CLIENT_ID": fake.client_id,
            "SPOTIFY_CLIENT_SECRET": fake.client_secret,
            "SYNC_MAX_DELAY_SECONDS": "1",
            "MYI_LOCAL_KEY_FILE": str(key_file),
        },
    )


def test_grants_stored_before_a_restart_still_sync_after_it(
    fake: FakeSpotify, database_url: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "local" / "token-key.json"
    name = "restarted"
    fake.world.add_user(name)
    tracks = list(fake.world.tracks)
    first = start(fake, database_url, key_file, tmp_path / "first.log")
    try:
        cookie, _, _ = sign_in(first, name)
    finally:
        stop_local_runtime(first)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    start_at = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(7):
        fake.world.add_play(name, tracks[i], start_at + timedelta(minutes=i))
    second = start(fake, database_url, key_file, tmp_path / "second.log")
    try:
        with session(second, cookie) as client:
            assert client.get("/me").json()["spotify_connection"] == "ok"
            assert second.run_schedule("sync-fanout").status_code == 200
            second.drain(timeout_s=90)
            body = client.get("/me").json()
            assert body["spotify_connection"] == "ok", second.log()
            assert body["totals"]["plays"] == 7, second.log()
    finally:
        stop_local_runtime(second)
