"""The statistics routes on real data ingested through the ingestion core: windows, zones, ties,
pagination, empty accounts, bad parameters, 401s and isolation between users."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from infra.wiring import WIRING
from myi.ingestion import ingest
from myi.plays import Play
from myi.settings import Settings
from tests.fixtures.api import ApiClient, signed_in
from tests.fixtures.plays import extended_play, make_user

Conn = psycopg.Connection[Any]


def play(n: int, when: datetime, ms: int, *, artist: int | None = None, album: int | None = None) -> Play:
    return extended_play(n, when, ms, artist=artist, album=album)


def names(items: list[dict[str, Any]]) -> list[str]:
    return [i["name"] for i in items]


def walk(client: ApiClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged list, following ``next``."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        reply = client.get(path, **params, **({"cursor": cursor} if cursor else {}))
        assert reply.status == 200, reply.body
        items.extend(reply.body["items"])
        cursor = reply.body["next"]
        if cursor is None:
            return items
    raise AssertionError("the cursor never ended")


def expected_top(plays: list[Play], key: Any, by: str) -> list[tuple[str, int, int]]:
    """Independently: (name, plays, ms_played) per entity, sorted as API.md says except the final
    id tie-break, which the test checks separately."""
    agg: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for p in plays:
        for k in key(p):
            agg[k][0] += 1
            agg[k][1] += p.ms_played or 0
    rows = [(k, v[0], v[1]) for k, v in agg.items()]
    if by == "plays":
        rows.sort(key=lambda r: (-r[1], -r[2]))
    else:
        rows.sort(key=lambda r: (-r[2], -r[1]))
    return rows


def assert_ranked(items: list[dict[str, Any]], by: str) -> None:
    other = "ms_played" if by == "plays" else "plays"
    keys = [(-i[by], -i[other], int(i["id"])) for i in items]
    assert keys == sorted(keys)
    assert [i["rank"] for i in items] == list(range(1, len(items) + 1))


@pytest.fixture
def alice(db_conn: Conn, api_settings: Settings) -> tuple[int, ApiClient]:
    user = make_user(db_conn, "alice")
    return user, signed_in(db_conn, api_settings, user)


# --- overview and windows --------------------------------------------------------------------------


def test_an_empty_account_answers_zeros_and_empty_lists(alice: tuple[int, ApiClient]) -> None:
    _, api = alice
    overview = api.get("/me/stats/overview")
    assert overview.status == 200
    body = overview.body
    assert (body["plays"], body["ms_played"], body["tracks"], body["artists"], body["albums"]) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert body["days"] == [] and body["window"]["from"] == body["window"]["to"]
    for kind in ("tracks", "artists", "albums"):
        top = api.get(f"/me/stats/top/{kind}", range_="4w")
        assert top.status == 200 and top.body["items"] == [] and top.body["next"] is None
    activity = api.get("/me/stats/activity").body
    assert len(activity["hours"]) == 24 and len(activity["weekdays"]) == 7
    assert activity["heatmap"] == [[0] * 24 for _ in range(7)]
    assert api.get("/me/history").body == {"items": [], "next": None}


def test_the_overview_of_all_time_counts_every_play_once_per_day(
    db_conn: Conn, alice: tuple[int, ApiClient]
) -> None:
    user, api = alice
    base = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    plays = [play(n % 7, base + timedelta(hours=9 * n), 60_000 + n) for n in range(40)]
    ingest(db_conn, user, plays)
    body = api.get("/me/stats/overview", range_="all").body
    assert body["plays"] == 40 and body["ms_played"] == sum(p.ms_played or 0 for p in plays)
    assert (
        body["tracks"] == 7
        and body["artists"] == 3
        and body["albums"] == len({(n % 3, n % 4) for n in range(7)})
    )
    per_day: dict[str, int] = defaultdict(int)
    for p in plays:
        per_day[p.played_at.date().isoformat()] += 1
    assert [(d["date"], d["plays"]) for d in body["days"]] == sorted(per_day.items())
    assert body["window"]["from"] == "2024-05-01T10:00:00.000Z"


def test_a_rolling_window_counts_only_the_plays_inside_it(
    db_conn: Conn, alice: tuple[int, ApiClient]
) -> None:
    user, api = alice
    now = datetime.now(UTC)
    inside = [play(1, now - timedelta(days=2), 100_000), play(2, now - timedelta(days=27, hours=23), 50_000)]
    outside = [play(1, now - timedelta(days=28, hours=1), 70_000), play(3, now - timedelta(days=90), 70_000)]
    ingest(db_conn, user, inside + outside)
    four = api.get("/me/stats/overview", range_="4w").body
    assert (four["plays"], four["ms_played"], four["tracks"]) == (2, 150_000, 2)
    assert sum(d["plays"] for d in four["days"]) == 2
    window_from = datetime.fromisoformat(four["window"]["from"].replace("Z", "+00:00"))
    assert abs((window_from - (now - timedelta(days=28))).total_seconds()) < 60
    top = api.get("/me/stats/top/tracks", range_="4w").body
    assert names(top["items"]) == ["Track 1", "Track 2"]
    assert api.get("/me/stats/overview", range_="6m").body["plays"] == 4


@pytest.mark.parametrize("recent", [False, True], ids=["months-and-edges", "recent-rows"])
def test_whole_months_and_edges_give_the_same_figures_as_the_events(
    db_conn: Conn, alice: tuple[int, ApiClient], recent: bool
) -> None:
    """Either from the months and edges, or (every play kept in the recent rows) from the recent
    rows less long strips on both sides of each window."""
    user, api = alice
    if recent:
        db_conn.execute("UPDATE users SET recent_floor = '2023-01-01' WHERE id = %s", (user,))
    rng = random.Random(7)
    start = datetime(2023, 11, 20, tzinfo=UTC)
    plays = []
    for i in range(600):
        when = start + timedelta(minutes=rng.randrange(0, 60 * 24 * 200)) + timedelta(seconds=i % 60)
        plays.append(play(rng.randrange(25), when, rng.choice([30_000, 120_000, 200_000])))
    ingest(db_conn, user, plays)
    windows = [("2023-12-01", "2024-02-29"), ("2023-12-14", "2024-03-03"), ("2024-01-05", "2024-01-05")]
    for first, last in windows:
        lo = datetime.fromisoformat(first).replace(tzinfo=UTC)
        hi = datetime.fromisoformat(last).replace(tzinfo=UTC) + timedelta(days=1)
        inside = [p for p in plays if lo <= p.played_at < hi]
        for kind, key in (
            ("tracks", lambda p: [p.track.name]),
            ("artists", lambda p: [a.name for a in p.track.artists]),
        ):
            for by in ("plays", "ms_played"):
                got = walk(api, f"/me/stats/top/{kind}", from_=first, to=last, by=by, limit=7)
                assert_ranked(got, by)
                want = expected_top(inside, key, by)
                assert sorted((i["name"], i["plays"], i["ms_played"]) for i in got) == sorted(want)
        overview = api.get("/me/stats/overview", from_=first, to=last).body
        assert overview["plays"] == len(inside)
        assert overview["tracks"] == len({p.track.name for p in inside})
        assert overview["window"] == {
            "from": f"{first}T00:00:00.000Z",
            "to": hi.strftime("%Y-%m-%dT00:00:00.000Z"),
        }
        activity = api.get("/me/stats/activity", from_=first, to=last).body
        assert sum(h["plays"] for h in activity["hours"]) == len(inside)


def test_days_hours_and_weekdays_follow_the_users_zone_across_a_daylight_saving_change(
    db_conn: Conn, api_settings: Settings
) -> None:
    user = make_user(db_conn, "berlin", timezone="Europe/Berlin")
    api = signed_in(db_conn, api_settings, user)
    # 2025-03-30: clocks in Berlin go from 02:00 CET to 03:00 CEST; the day has 23 hours.
    plays = [
        play(1, datetime(2025, 3, 29, 22, 59, tzinfo=UTC), 60_000),  # 23:59 CET on the 29th
        play(2, datetime(2025, 3, 29, 23, 30, tzinfo=UTC), 60_000),  # 00:30 CET on the 30th
        play(3, datetime(2025, 3, 30, 1, 30, tzinfo=UTC), 60_000),  # 03:30 CEST on the 30th
        play(4, datetime(2025, 3, 30, 21, 59, tzinfo=UTC), 60_000),  # 23:59 CEST on the 30th
        play(5, datetime(2025, 3, 30, 22, 0, tzinfo=UTC), 60_000),  # 00:00 CEST on the 31st
    ]
    ingest(db_conn, user, plays)
    day = api.get("/me/stats/overview", from_="2025-03-30", to="2025-03-30").body
    assert day["plays"] == 3 and day["days"] == [{"date": "2025-03-30", "plays": 3, "ms_played": 180_000}]
    assert day["window"] == {"from": "2025-03-29T23:00:00.000Z", "to": "2025-03-30T22:00:00.000Z"}
    everything = api.get("/me/stats/overview").body
    assert [(d["date"], d["plays"]) for d in everything["days"]] == [
        ("2025-03-29", 1),
        ("2025-03-30", 3),
        ("2025-03-31", 1),
    ]
    activity = api.get("/me/stats/activity", from_="2025-03-30", to="2025-03-30").body
    assert [h for h, v in enumerate(activity["hours"]) if v["plays"]] == [0, 3, 23]
    assert activity["weekdays"][6]["plays"] == 3 and activity["heatmap"][6][3] == 1  # Sunday


def test_a_new_time_zone_moves_every_day_and_hour_of_the_history(
    db_conn: Conn, alice: tuple[int, ApiClient]
) -> None:
    user, api = alice
    ingest(db_conn, user, [play(1, datetime(2024, 7, 1, 2, 30, tzinfo=UTC), 90_000)])
    assert api.get("/me/stats/overview").body["days"][0]["date"] == "2024-07-01"
    changed = api.request("PATCH", "/me", body={"timezone": "America/New_York"})
    assert changed.status == 200 and changed.body["timezone"] == "America/New_York"
    assert api.get("/me/stats/overview").body["days"][0]["date"] == "2024-06-30"
    hours = api.get("/me/stats/activity").body["hours"]
    assert hours[22]["plays"] == 1  # 02:30 UTC is 22:30 EDT
    bad = api.request("PATCH", "/me", body={"timezone": "Mars/Olympus_Mons"})
    assert bad.status == 400 and bad.error_code == "invalid_request"
    assert api.get("/me").body["timezone"] == "America/New_York"


# --- top lists -------------------------------------------------------------------------------------


def test_ties_are_broken_by_the_other_measure_then_by_id(db_conn: Conn, alice: tuple[int, ApiClient]) -> None:
    user, api = alice
    at = datetime(2024, 2, 1, tzinfo=UTC)
    ingest(
        db_conn,
        user,
        [
            play(1, at, 100_000),
            play(2, at + timedelta(minutes=5), 300_000),
            play(3, at + timedelta(minutes=10), 300_000),
            play(3, at + timedelta(minutes=15), 1_000),
        ],
    )
    by_plays = api.get("/me/stats/top/tracks").body
    assert names(by_plays["items"]) == ["Track 3", "Track 2", "Track 1"]
    by_time = api.get("/me/stats/top/tracks", by="ms_played").body
    assert names(by_time["items"]) == ["Track 3", "Track 2", "Track 1"]
    ingest(db_conn, user, [play(4, at + timedelta(minutes=20), 300_000)])
    tied = api.get("/me/stats/top/tracks", by="ms_played").body["items"]
    assert names(tied)[1:3] in (["Track 2", "Track 4"], ["Track 4", "Track 2"])
    assert int(tied[1]["id"]) < int(tied[2]["id"])
    assert tied[0]["artists"] == [{"id": tied[0]["artists"][0]["id"], "name": "Artist 0"}]


def test_a_play_counts_once_for_every_credited_artist_and_albums_carry_their_artists(
    db_conn: Conn, alice: tuple[int, ApiClient]
) -> None:
    from myi.plays import AlbumRef, ArtistRef, TrackRef

    user, api = alice
    a, b = ArtistRef("Duo A", "artA0000000000000000"), ArtistRef("Duo B", "artB0000000000000000")
    album = AlbumRef("Together", "albT0000000000000000", artists=(a,))
    track = TrackRef("Both", "trkBoth0000000000000", (a, b), album, duration_ms=180_000)
    ingest(db_conn, user, [Play(track, datetime(2024, 4, 1, tzinfo=UTC), "extended", 170_000)])
    artists = api.get("/me/stats/top/artists").body["items"]
    assert sorted((i["name"], i["plays"]) for i in artists) == [("Duo A", 1), ("Duo B", 1)]
    assert all("artists" not in i or i["artists"] is None for i in artists)
    albums = api.get("/me/stats/top/albums").body["items"]
    assert [(i["name"], [x["name"] for x in i["artists"]]) for i in albums] == [("Together", ["Duo A"])]
    assert albums[0]["spotify_id"] == "albT0000000000000000"


def test_deep_pagination_walks_the_whole_list_once_in_order(
    db_conn: Conn, alice: tuple[int, ApiClient]
) -> None:
    user, api = alice
    rng = random.Random(3)
    base = datetime(2022, 1, 1, tzinfo=UTC)
    plays = [
        play(rng.randrange(230), base + timedelta(minutes=7 * i), rng.choice([1_000, 2_000]))
        for i in range(3000)
    ]
    ingest(db_conn, user, plays)
    for by in ("plays", "ms_played"):
        paged = walk(api, "/me/stats/top/tracks", by=by, limit=9)
        assert_ranked(paged, by)
        whole = walk(api, "/me/stats/top/tracks", by=by, limit=100)
        assert [(i["id"], i["rank"]) for i in paged] == [(i["id"], i["rank"]) for i in whole]
        assert len(paged) == len({p.track.name for p in plays})
    history = walk(api, "/me/history", limit=37)
    assert len(history) == 3000
    stamps = [h["played_at"] for h in history]
    assert stamps == sorted(stamps, reverse=True)


def test_history_lists_plays_newest_first_with_track_artists_and_album(
    db_conn: Conn, alice: tuple[int, ApiClient]
) -> None:
    user, api = alice
    at = datetime(2025, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    ingest(
        db_conn, user, [play(1, at, 42_000), play(2, at, 43_000), play(3, at - timedelta(hours=1), 44_000)]
    )
    first = api.get("/me/history", limit=2).body
    assert [i["played_at"] for i in first["items"]] == ["2025-01-02T03:04:05.678Z"] * 2
    second = api.get("/me/history", limit=2, cursor=first["next"]).body
    assert names([i["track"] for i in second["items"]]) == ["Track 3"] and second["next"] is None
    item = second["items"][0]
    assert item["ms_played"] == 44_000 and item["is_estimated"] is False and item["source"] == "import"
    assert item["track"]["artists"][0]["name"] == "Artist 0"
    assert item["track"]["album"]["name"] == "Album 3"
    ids = {i["track"]["name"]: int(i["track"]["id"]) for i in first["items"]}
    assert [i["track"]["name"] for i in first["items"]] == sorted(ids, key=lambda n: -ids[n])


# --- errors and isolation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/me/stats/overview", {"range": "2w"}, "range"),
        ("/me/stats/overview", {"from": "2024-01-01"}, "to"),
        ("/me/stats/overview", {"to": "2024-01-01"}, "from"),
        ("/me/stats/overview", {"from": "2024-13-01", "to": "2024-12-31"}, "from"),
        ("/me/stats/activity", {"from": "2024-02-01", "to": "2024-01-01"}, "to"),
        ("/me/stats/activity", {"from": "yesterday", "to": "2024-01-01"}, "from"),
        ("/me/stats/top/tracks", {"limit": "0"}, "limit"),
        ("/me/stats/top/tracks", {"limit": "101"}, "limit"),
        ("/me/stats/top/tracks", {"by": "skips"}, "by"),
        ("/me/stats/top/songs", {}, "kind"),
        ("/me/stats/top/artists", {"cursor": "not-a-cursor"}, "cursor"),
        ("/me/history", {"cursor": "eyJhdCI6ICJ4In0"}, "cursor"),
        ("/me/history", {"limit": "many"}, "limit"),
    ],
)
def test_a_bad_parameter_is_400_naming_it(
    alice: tuple[int, ApiClient], path: str, params: dict[str, str], parameter: str
) -> None:
    _, api = alice
    reply = api.request("GET", path, params=params)
    assert reply.status == 400, reply.body
    assert reply.error_code == "invalid_request" and parameter in reply.body["error"]["message"]


def test_a_cursor_of_another_list_is_refused(db_conn: Conn, alice: tuple[int, ApiClient]) -> None:
    user, api = alice
    ingest(
        db_conn,
        user,
        [play(n, datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=n), 1_000) for n in range(5)],
    )
    cursor = api.get("/me/stats/top/tracks", limit=2).body["next"]
    assert cursor is not None
    assert api.get("/me/stats/top/artists", cursor=cursor).status == 400
    assert api.get("/me/stats/top/tracks", cursor=cursor, by="ms_played").status == 400


def test_every_user_route_answers_401_without_a_live_session(api_settings: Settings) -> None:
    anonymous = ApiClient(api_settings)
    expired = ApiClient(api_settings, cookie="x" * 43)
    for route, fn in WIRING.routes():
        if fn.name != "api" or not route.path.startswith("/me"):
            continue
        path = route.path.replace("{kind}", "tracks").replace("{id}", "0" * 8)
        for client in (anonymous, expired):
            reply = client.request(route.method, path, params={"limit": "0"})
            assert reply.status == 401, (route, reply.body)
            assert reply.error_code == "unauthenticated"


def test_no_route_of_one_user_reveals_anything_of_another(
    db_conn: Conn, api_settings: Settings, alice: tuple[int, ApiClient]
) -> None:
    _, api = alice
    bob = make_user(db_conn, "bob")
    ingest(
        db_conn,
        bob,
        [play(n, datetime(2024, 6, 1, tzinfo=UTC) + timedelta(hours=n), 5_000) for n in range(9)],
    )
    job = db_conn.execute(
        "INSERT INTO import_jobs (id, user_id, filename, object_key, size_bytes, status)"
        " VALUES (gen_random_uuid(), %s, 'b.zip', 'k', 10, 'completed') RETURNING id",
        (bob,),
    ).fetchone()
    assert job is not None
    for rng in ("all", "1y", "4w"):
        overview = api.get("/me/stats/overview", range_=rng).body
        assert overview["plays"] == 0 and overview["days"] == []
        for kind in ("tracks", "artists", "albums"):
            assert api.get(f"/me/stats/top/{kind}", range_=rng).body["items"] == []
        assert api.get("/me/stats/activity", range_=rng).body["heatmap"] == [[0] * 24 for _ in range(7)]
    assert api.get("/me/history").body["items"] == []
    assert api.get("/me/imports").body["items"] == []
    assert api.request("GET", f"/me/imports/{job[0]}").status == 404
    assert api.get("/me").body["totals"]["plays"] == 0
    # Bob's own cursor opens nothing of his for Alice: a cursor is signed for the user it was made for.
    bob_api = signed_in(db_conn, api_settings, bob)
    cursor = bob_api.get("/me/history", limit=3).body["next"]
    assert cursor is not None and api.get("/me/history", cursor=cursor).error_code == "invalid_request"


def test_deleting_the_account_removes_everything_and_the_session(
    db_conn: Conn, alice: tuple[int, ApiClient]
) -> None:
    from myi import aws
    from myi.exports import jobs as export_jobs
    from myi.settings import get_settings

    user, api = alice
    other = make_user(db_conn, "stays")
    ingest(db_conn, user, [play(1, datetime(2024, 1, 1, tzinfo=UTC), 1_000)])
    # Export files: one written, one upload under way, and another user's, which stays.
    settings = get_settings()
    s3, bucket = aws.client("s3", settings), export_jobs.ExportConfig.from_settings(settings).bucket
    for owner in (user, other):
        s3.put_object(
            Bucket=bucket, Key=f"{export_jobs.user_prefix(owner)}done/my_spotify_data.zip", Body=b"z"
        )
    s3.create_multipart_upload(Bucket=bucket, Key=f"{export_jobs.user_prefix(user)}open/my_spotify_data.zip")
    db_conn.execute(
        "INSERT INTO exports (id, user_id, format, object_key) VALUES (gen_random_uuid(), %s, 'csv', 'k')",
        (user,),
    )
    gone = api.request("DELETE", "/me")
    assert gone.status == 204
    assert any(c.startswith("myi_session=;") or "Max-Age=0" in c for c in gone.cookies)
    for table in ("listening_events", "stat_user", "stat_track", "sessions", "exports"):
        row = db_conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None and row[0] == 0, table
    assert db_conn.execute("SELECT id FROM users").fetchall() == [(other,)]
    assert api.get("/me").status == 401
    assert db_conn.execute("SELECT count(*) FROM tracks").fetchone() == (1,)
    left = s3.list_objects_v2(Bucket=bucket, Prefix=export_jobs.EXPORT_PREFIX).get("Contents", [])
    assert [o["Key"] for o in left] == [f"{export_jobs.user_prefix(other)}done/my_spotify_data.zip"]
    under_way = s3.list_multipart_uploads(Bucket=bucket, Prefix=export_jobs.user_prefix(user))
    assert under_way.get("Uploads", []) == []
    s3.delete_object(Bucket=bucket, Key=left[0]["Key"])


def test_the_window_echo_of_a_calendar_range_is_in_the_users_zone(
    db_conn: Conn, api_settings: Settings
) -> None:
    user = make_user(db_conn, "tokyo", timezone="Asia/Tokyo")
    api = signed_in(db_conn, api_settings, user)
    body = api.get("/me/stats/overview", from_="2024-01-01", to="2024-01-31").body
    start = datetime(2024, 1, 1, tzinfo=ZoneInfo("Asia/Tokyo")).astimezone(UTC)
    assert body["window"]["from"] == start.strftime("%Y-%m-%dT%H:%M:%S.000Z") == "2023-12-31T15:00:00.000Z"
    assert date.fromisoformat(body["window"]["to"][:10]) == date(2024, 1, 31)


def test_deleting_the_account_is_retryable_when_the_files_cannot_be_deleted(
    db_conn: Conn, alice: tuple[int, ApiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    from myi import aws, uploads
    from myi.settings import get_settings

    user, api = alice
    settings = get_settings()
    key = f"{uploads.user_prefix(user)}job/upload"
    aws.client("s3", settings).put_object(Bucket=settings.import_bucket, Key=key, Body=b"{}")
    ingest(db_conn, user, [play(1, datetime(2024, 1, 1, tzinfo=UTC), 1_000)])
    monkeypatch.setenv("IMPORT_BUCKET", "no-such-bucket")
    get_settings.cache_clear()
    failed = api.request("DELETE", "/me")
    assert failed.status == 503 and failed.error_code == "unavailable" and "retry-after" in failed.headers
    assert db_conn.execute("SELECT count(*) FROM listening_events").fetchone() == (1,)
    assert api.get("/me").status == 200
    monkeypatch.undo()
    get_settings.cache_clear()
    assert api.request("DELETE", "/me").status == 204
    listed = aws.client("s3", settings).list_objects_v2(Bucket=settings.import_bucket, Prefix=key)
    assert listed.get("KeyCount", 0) == 0
    assert db_conn.execute("SELECT count(*) FROM users").fetchone() == (0,)
