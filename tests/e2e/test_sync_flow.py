"""Sync through the local runtime: a signed-in user's plays at Spotify appear after the fan-out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from devtools.fakespotify import FakeSpotify
from tests.e2e.conftest import print_log_on_failure, session, sign_in
from tests.fixtures.local_runtime import LocalRuntime

log_on_failure = pytest.fixture(autouse=True)(print_log_on_failure)


def test_plays_at_spotify_appear_after_the_fanout_and_a_drain(runtime: LocalRuntime) -> None:
    cookie, _, _ = sign_in(runtime, "ana")
    with session(runtime, cookie) as client:
        assert client.get("/me").json()["totals"]["plays"] == 0
        fired = runtime.run_schedule("sync-fanout")
        assert fired.status_code == 200, fired.text
        runtime.drain(timeout_s=90)
        me = client.get("/me").json()
        assert me["totals"]["plays"] == 50 and me["last_synced_at"] is not None
        assert me["spotify_connection"] == "ok"
        assert me["sync"]["status"] == "ok" and me["sync"]["last_synced_at"] == me["last_synced_at"]
        assert me["sync"]["next_sync_at"] is not None and me["sync"]["possible_gaps"] == 0


def test_a_manual_sync_is_queued_and_limited(runtime: LocalRuntime) -> None:
    cookie, _, _ = sign_in(runtime, "mika")
    with session(runtime, cookie) as client:
        first = client.post("/me/sync")
        assert first.status_code == 202 and first.json() == {"queued": True}
        second = client.post("/me/sync")
        assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limited"
        assert int(second.headers["retry-after"]) >= 1
        runtime.drain(timeout_s=90)
        assert client.get("/me").json()["totals"]["plays"] == 50


def test_spotify_top_lists_are_served_at_once_and_refreshed_in_the_background(runtime: LocalRuntime) -> None:
    cookie, _, _ = sign_in(runtime, "demo")
    with session(runtime, cookie) as client:
        first = client.get("/me/spotify-top/tracks", params={"term": "short_term"})
        assert first.status_code == 200 and first.json() == {
            "term": "short_term",
            "refreshed_at": None,
            "items": [],
        }
        runtime.drain(timeout_s=60)
        later = client.get("/me/spotify-top/tracks", params={"term": "short_term"}).json()
        assert later["refreshed_at"] is not None and len(later["items"]) == 20
        assert later["items"][0]["rank"] == 1 and later["items"][0]["artists"]
        assert client.get("/me/spotify-top/albums").status_code == 400
        assert client.get("/me/spotify-top/artists", params={"term": "forever"}).status_code == 400


# --- the cadence contract through the runtime (SYNC_COOLDOWN_SECONDS = SYNC_MAX_INTERVAL_SECONDS = 0)
def listener(fake: FakeSpotify, runtime: LocalRuntime, name: str, plays: int) -> tuple[str, list[str]]:
    """A Spotify user of this test's own with ``plays`` recent plays, signed in to MYI."""
    fake.world.add_user(name)
    tracks = list(fake.world.tracks)
    start = datetime.now(UTC) - timedelta(hours=1)
    for i in range(plays):
        fake.world.add_play(name, tracks[i], start + timedelta(minutes=i))
    cookie, _, _ = sign_in(runtime, name)
    return cookie, tracks


def only_active(name: str, runtime: LocalRuntime) -> None:
    """Every other user of the runtime last seen long ago: not synced any more."""
    with psycopg.connect(runtime.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE users SET last_seen_at = now() - interval '90 days' WHERE spotify_id <> %s", (name,)
        )


def round_(runtime: LocalRuntime) -> None:
    """One fan-out, and everything it started run to the end."""
    assert runtime.run_schedule("sync-fanout").status_code == 200
    runtime.drain(timeout_s=90)


def me(client: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/me").json()
    return body


def test_every_round_fetches_what_is_new_and_the_me_document_says_so(
    runtime: LocalRuntime, fake: FakeSpotify
) -> None:
    cookie, tracks = listener(fake, runtime, "cadence-every-round", 20)
    with session(runtime, cookie) as client:
        round_(runtime)
        assert me(client)["totals"]["plays"] == 20
        later = datetime.now(UTC) - timedelta(minutes=30)  # after the listener's first plays
        for n in (1, 2):
            for i in range(10):
                later += timedelta(seconds=40)
                fake.world.add_play("cadence-every-round", tracks[50 + i], later)
            round_(runtime)
            body = me(client)
            assert body["totals"]["plays"] == 20 + 10 * n
            assert body["sync"]["status"] == "ok" and body["sync"]["possible_gaps"] == 0


def test_a_sync_that_failed_at_spotify_is_retried_by_the_next_round(
    runtime: LocalRuntime, fake: FakeSpotify
) -> None:
    cookie, tracks = listener(fake, runtime, "cadence-retry", 12)
    with session(runtime, cookie) as client:
        round_(runtime)
        assert me(client)["totals"]["plays"] == 12
        for i in range(3):
            fake.world.add_play(
                "cadence-retry", tracks[90 + i], datetime.now(UTC) - timedelta(seconds=10 - i)
            )
        # Spotify down for two syncs (three tries each). (Its token endpoint answering 503 is
        # tested in tests/integration/test_sync.py: here the enrichment worker's app tokens could
        # take those answers.)
        only_active("cadence-retry", runtime)  # the others' syncs would take the failures
        fake.inject("/v1/me/player/recently-played", status=503, times=2 * 3)
        round_(runtime)
        round_(runtime)
        body = me(client)
        assert body["totals"]["plays"] == 12 and body["sync"]["status"] == "paused"
        assert body["spotify_connection"] == "ok"
        round_(runtime)  # Spotify is back
        body = me(client)
        assert body["totals"]["plays"] == 15 and body["sync"]["status"] == "ok"


def test_a_revoked_grant_shows_as_reconnect_required_within_three_rounds(
    runtime: LocalRuntime, fake: FakeSpotify
) -> None:
    cookie, _ = listener(fake, runtime, "cadence-revoked", 5)
    with session(runtime, cookie) as client:
        round_(runtime)
        assert me(client)["totals"]["plays"] == 5
        fake.revoke("cadence-revoked")
        fake.expire_access_tokens()
        for _ in range(3):
            round_(runtime)
        body = me(client)
        assert body["spotify_connection"] == "reconnect_required"
        assert body["sync"]["status"] == "reconnect_required" and body["sync"]["next_sync_at"] is None
