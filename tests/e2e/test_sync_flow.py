"""Sync through the local runtime: a signed-in user's plays at Spotify appear after the fan-out."""

from __future__ import annotations

import pytest

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
