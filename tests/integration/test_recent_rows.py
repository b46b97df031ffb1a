"""Recent rows (grain 3): the last four weeks answered from one row per item, equal to what the
events say, before and after the recent floor moves on, and exact under further ingestion."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from myi.ingestion import USER_LOCK_CLASS, ingest
from myi.plays import Play
from myi.settings import Settings
from myi.statistics import maintenance
from tests.fixtures.api import ApiClient, signed_in
from tests.fixtures.plays import extended_play, make_user
from tests.integration.test_api_routes import assert_ranked, expected_top, walk

Conn = psycopg.Connection[Any]

KINDS = {
    "tracks": lambda p: [p.track.name],
    "artists": lambda p: [a.name for a in p.track.artists],
    "albums": lambda p: [p.track.album.name] if p.track.album else [],
}


def listening(now: datetime, days: int, count: int, seed: int) -> list[Play]:
    """``count`` plays over the ``days`` before ``now``, none within an hour of four weeks ago (a
    window resolved a little later must see the same plays); every album has one artist."""
    rng = random.Random(seed)
    edge = now - timedelta(days=28)
    plays: list[Play] = []
    while len(plays) < count:
        when = now - timedelta(seconds=rng.randrange(60, days * 86_400))
        if abs((when - edge).total_seconds()) < 3600:
            continue
        n = 9000 + rng.randrange(40)  # tracks of this module only: the catalog outlives tests
        plays.append(
            extended_play(
                n,
                when.replace(microsecond=0),
                rng.choice([30_000, 120_000, 200_000]),
                artist=n % 11 % 7,
                album=n % 11,
            )
        )
    return plays


def assert_window(api: ApiClient, plays: list[Play], lo: datetime, hi: datetime, **window: str) -> None:
    inside = [p for p in plays if lo <= p.played_at < hi]
    for kind, key in KINDS.items():
        for by in ("plays", "ms_played"):
            got = walk(api, f"/me/stats/top/{kind}", by=by, limit=7, **window)
            assert_ranked(got, by)
            want = expected_top(inside, key, by)
            assert sorted((i["name"], i["plays"], i["ms_played"]) for i in got) == sorted(want), (kind, by)
    overview = api.get("/me/stats/overview", **window).body
    assert (overview["plays"], overview["ms_played"]) == (len(inside), sum(p.ms_played or 0 for p in inside))
    assert overview["tracks"] == len({p.track.name for p in inside})
    assert overview["artists"] == len({a.name for p in inside for a in p.track.artists})
    assert overview["albums"] == len({p.track.album.name for p in inside if p.track.album})


def recent_rows(conn: Conn, user: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM stat_track WHERE user_id = %s AND grain = 3 AND plays > 0", (user,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def floor_of(conn: Conn, user: int) -> datetime:
    row = conn.execute("SELECT recent_floor FROM users WHERE id = %s", (user,)).fetchone()
    assert row is not None
    return row[0]


def test_four_weeks_come_from_the_recent_rows_before_and_after_the_floor_moves(
    db_conn: Conn, api_settings: Settings
) -> None:
    now = datetime.now(UTC)
    user = make_user(db_conn, "recent")
    other = make_user(db_conn, "neighbour")
    api = signed_in(db_conn, api_settings, user)
    plays = listening(now, 40, 500, seed=3)
    ingest(db_conn, user, plays)
    ingest(db_conn, other, listening(now, 40, 200, seed=4))
    floor = floor_of(db_conn, user)
    assert recent_rows(db_conn, user) == len({p.track.name for p in plays if p.played_at >= floor})

    four_weeks = (now - timedelta(days=28), now + timedelta(days=1))
    assert_window(api, plays, *four_weeks, range_="4w")
    days = {
        "from_": (now - timedelta(days=20)).date().isoformat(),
        "to": (now - timedelta(days=2)).date().isoformat(),
    }
    lo = datetime.fromisoformat(days["from_"]).replace(tzinfo=UTC)
    hi = datetime.fromisoformat(days["to"]).replace(tzinfo=UTC) + timedelta(days=1)
    assert_window(api, plays, lo, hi, **days)

    # Three days on, the floor passes the start of the window above's four weeks: those are
    # answered from the months and edges again, the calendar window still from the recent rows.
    later = now + timedelta(days=3)
    assert maintenance.advance_recent(db_conn, now=later) == {
        "recent_floors_moved": 2,
        "recent_floors_busy": 0,
    }
    assert floor_of(db_conn, user) == later - maintenance.RECENT_SPAN
    assert maintenance.verify(db_conn, user) == [] and maintenance.verify(db_conn, other) == []
    assert recent_rows(db_conn, user) == len(
        {p.track.name for p in plays if p.played_at >= later - maintenance.RECENT_SPAN}
    )
    assert_window(api, plays, *four_weeks, range_="4w")
    assert_window(api, plays, lo, hi, **days)
    # A second run the same day has nothing to move.
    assert maintenance.advance_recent(db_conn, now=later) == {
        "recent_floors_moved": 0,
        "recent_floors_busy": 0,
    }

    # Plays ingested afterwards on both sides of the new floor keep every statistic exact.
    more = listening(now, 30, 120, seed=5)
    ingest(db_conn, user, more)
    assert maintenance.verify(db_conn, user) == []
    assert_window(api, plays + more, lo, hi, **days)


def test_a_user_whose_ingestion_holds_the_lock_is_left_for_the_next_run(
    db_conn: Conn, database_url: str
) -> None:
    user = make_user(db_conn, "busy")
    ingest(db_conn, user, listening(datetime.now(UTC), 30, 50, seed=6))
    before = floor_of(db_conn, user)
    with psycopg.connect(database_url) as holder, holder.transaction():
        holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", (USER_LOCK_CLASS, user))
        later = datetime.now(UTC) + timedelta(days=2)
        assert maintenance.advance_recent(db_conn, now=later) == {
            "recent_floors_moved": 0,
            "recent_floors_busy": 1,
        }
    assert floor_of(db_conn, user) == before
    assert maintenance.advance_recent(db_conn, now=later)["recent_floors_moved"] == 1
    assert maintenance.verify(db_conn, user) == []
