"""The journey of the SPA, through the local runtime's HTTP surface with every pipeline running: two
users sign in, one imports a download, both sync; the statistics match figures computed here from
the generated data; neither sees the other; logout and DELETE /me end it."""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest

from devtools.fakespotify import FakeSpotify
from devtools.synthetic import extended_records, world_catalog, write_json_array
from myi.users import iso
from tests.e2e.conftest import print_log_on_failure, session, sign_in
from tests.fixtures.local_runtime import LocalRuntime

log_on_failure = pytest.fixture(autouse=True)(print_log_on_failure)


def is_play(record: dict[str, Any]) -> bool:
    """API.md's rules, written out again: a music record with a track URI, not incognito, at least
    30 s or played to its end."""
    return (
        bool(record.get("spotify_track_uri"))
        and not record.get("audiobook_chapter_uri")
        and not record.get("incognito_mode")
        and (record["ms_played"] >= 30_000 or record.get("reason_end") == "trackdone")
    )


def upload(client: httpx.Client, data: bytes) -> dict[str, Any]:
    created = client.post("/me/imports", json={"filename": "my_spotify_data.zip", "size_bytes": len(data)})
    assert created.status_code == 201, created.text
    form = created.json()["upload"]
    sent = httpx.post(form["url"], data=form["fields"], files={"file": ("my_spotify_data.zip", data)})
    assert sent.status_code in (200, 201, 204), sent.text
    return dict(created.json()["import"])


def test_two_users_import_sync_see_only_their_own_statistics_and_leave(
    runtime: LocalRuntime, fake: FakeSpotify
) -> None:
    world = fake.world
    demo_plays = world.plays["demo"]
    # The download ends an hour before the first play the fake Spotify holds; the sync brings the
    # latest 50 of those (recently-played holds no more).
    cut = demo_plays[0][0] - timedelta(hours=1)
    records = list(
        extended_records(6000, tracks=world_catalog(world), start=cut - timedelta(days=300), seed=9)
    )
    records = [r for r in records if r["ts"] < cut.strftime("%Y-%m-%dT%H:%M:%SZ")]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf, zf.open("Spotify Extended Streaming History/h_0.json", "w") as f:
        write_json_array(f, records)

    demo_cookie, _, _ = sign_in(runtime, "demo")
    ana_cookie, _, _ = sign_in(runtime, "ana")
    with session(runtime, demo_cookie) as demo, session(runtime, ana_cookie) as ana:
        job = upload(demo, buffer.getvalue())
        runtime.drain(timeout_s=180)
        done = demo.get(f"/me/imports/{job['id']}").json()
        assert done["status"] == "completed", done
        assert ana.get(f"/me/imports/{job['id']}").status_code == 404

        fired = runtime.run_schedule("sync-fanout")
        assert fired.status_code == 200, fired.text
        runtime.drain(timeout_s=180)

        # Independently: the imported plays, distinct by track and end time, and the latest 50
        # plays at Spotify, all newer than the download.
        imported = {(r["spotify_track_uri"].split(":")[-1], r["ts"]) for r in records if is_play(r)}
        fresh = [(t, at) for at, t in demo_plays[-50:]]
        expected = Counter(t for t, _ in imported) + Counter(t for t, _ in fresh)
        assert done["counts"]["added"] + done["counts"]["duplicates"] == sum(1 for r in records if is_play(r))
        assert done["counts"]["added"] == len(imported)

        me = demo.get("/me").json()
        assert me["totals"]["plays"] == sum(expected.values())
        overview = demo.get("/me/stats/overview", params={"range": "all"}).json()
        assert overview["plays"] == sum(expected.values()) and overview["tracks"] == len(expected)
        top = demo.get("/me/stats/top/tracks", params={"limit": 10}).json()["items"]
        spotify_ids = [item["spotify_id"] for item in top]
        assert [expected[s] for s in spotify_ids] == sorted(expected.values(), reverse=True)[:10]
        assert [item["plays"] for item in top] == [expected[s] for s in spotify_ids]
        names = {t: world.tracks[t]["name"] for t in expected}
        assert [item["name"] for item in top] == [names[s] for s in spotify_ids]
        history = demo.get("/me/history", params={"limit": 5}).json()["items"]
        newest = sorted(fresh, key=lambda p: p[1], reverse=True)[:5]
        assert [h["track"]["spotify_id"] for h in history] == [t for t, _ in newest]
        assert all(h["source"] == "api" and h["is_estimated"] for h in history)

        ana_me = ana.get("/me").json()
        assert ana_me["totals"]["plays"] == min(50, len(world.plays["ana"]))
        ana_history = {
            (h["track"]["spotify_id"], h["played_at"]) for h in ana.get("/me/history").json()["items"]
        }
        ana_at_spotify = {(t, iso(at)) for at, t in world.plays["ana"][-50:]}
        assert ana_history <= ana_at_spotify
        assert ana.get("/me/imports").json()["items"] == []

        assert demo.post("/auth/logout").status_code == 204
        assert demo.get("/me").status_code == 401
        again, _, _ = sign_in(runtime, "demo")
        with session(runtime, again) as back:
            assert back.get("/me").json()["totals"]["plays"] == sum(expected.values())
            assert back.delete("/me").status_code == 204
            assert back.get("/me").status_code == 401
        fresh_start, _, _ = sign_in(runtime, "demo")
        with session(runtime, fresh_start) as newcomer:
            assert newcomer.get("/me").json()["totals"]["plays"] == 0
        assert ana.get("/me").json()["totals"]["plays"] == ana_me["totals"]["plays"]
