"""The round trip: a history exported as ``extended_json`` and imported into a new account through
the import pipeline (the worker, from the uploaded zip) gives the same statistics: totals, first and
last play, day buckets, top tracks, artists and albums, activity, for all time and for a from/to
window; and ``verify`` finds both accounts exact.

Histories are generated (hypothesis) from every source MYI stores: imports of extended history and
of account data (matched to a known track by name), sync plays whose ``ms_played`` is an estimate
(of a short track, of one with no known duration), sync plays an import made exact, plays known only
by name; and two real downloads of ``../shared/real-exports`` go round as well. What does not survive
the trip is written down as tests of its own at the end.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.paths import REAL_EXPORTS
from myi import aws, users, windows
from myi.imports.worker import WorkerDeps
from myi.ingestion import bulk_ingest, ingest
from myi.plays import ArtistRef, Play, TrackRef
from myi.settings import Settings
from myi.statistics import maintenance, queries
from tests.fixtures.imports import Importer
from tests.fixtures.plays import BASE, api_track, export_track, make_user
from tests.integration import test_exports
from tests.integration.test_exports import Exporter
from tests.integration.test_real_exports import ACCOUNT, EXTENDED, package

exporter = test_exports.exporter  # the export worker on the emulator (a fixture)

# --- the tracks ---------------------------------------------------------------------------------
URI_TRACKS = 6
DURATIONS: dict[int, int | None] = {4: 20_000, 5: None}  # a short track; one whose duration is unknown


def uri_track(n: int) -> TrackRef:
    """A track as a sync knows it (full object); an import has the same one by its URI and names."""
    return api_track(n, duration=DURATIONS.get(n, 200_000))  # type: ignore[arg-type]


def names_only_track(k: int) -> TrackRef:
    """A track no source ever named by URI (account data of a song Spotify no longer has, say)."""
    return TrackRef(name=f"Unsigned Song {k}", spotify_id=None, artists=(ArtistRef(f"Garage Band {k % 2}"),))


def account_uri_track(n: int) -> TrackRef:
    """Account data of a known track: artist and track names only, matched to it by name."""
    return TrackRef(name=f"Track {n}", spotify_id=None, artists=(ArtistRef(f"Artist {n % 3}"),))


# Near one another (merges, same-second and same-minute neighbours), across a day, a month, a year.
OFFSETS_S = [0, 1, 2, 29, 30, 31, 59, 60, 61, 90, 3_600, 86_400, 40 * 86_400, 330 * 86_400]
ZONES = ["UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata"]


@st.composite
def play(draw: st.DrawFn, source: str) -> Play:
    when = BASE + timedelta(seconds=draw(st.sampled_from(OFFSETS_S)) + draw(st.sampled_from([0, 0, 5, -3])))
    if source == "api":
        fraction = timedelta(milliseconds=draw(st.sampled_from([0, 123, 999])))
        return Play(uri_track(draw(st.integers(0, URI_TRACKS - 1))), when + fraction, "api", None)
    ms = draw(st.sampled_from([5_000, 31_000, 120_000, 240_000]))
    if source == "extended":
        n = draw(st.integers(0, URI_TRACKS - 1))
        return Play(export_track(n), when, "extended", ms)
    minute = when.replace(second=0, microsecond=0)
    ms = max(ms, 31_000)  # an import skips account data under 30 s: none is ever stored
    if source == "account":
        return Play(account_uri_track(draw(st.integers(0, URI_TRACKS - 1))), minute, "account", ms)
    return Play(names_only_track(draw(st.integers(0, 2))), minute, "account", ms)


@st.composite
def history(draw: st.DrawFn) -> list[tuple[str, list[list[Play]]]]:
    """Syncs (one page of API plays each) and imports (batches of extended history, or of account
    data: known tracks by name, and tracks known only by name), in any order."""
    steps: list[tuple[str, list[list[Play]]]] = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            steps.append(("sync", [draw(st.lists(play("api"), min_size=1, max_size=8))]))
        else:
            source = draw(st.sampled_from(["extended", "account", "names"]))
            batches = draw(st.lists(st.lists(play(source), min_size=1, max_size=8), min_size=1, max_size=3))
            steps.append(("import", batches))
    return steps


# --- the statistics a listener sees -------------------------------------------------------------------
def seen(conn: psycopg.Connection[Any], user: int, zone: str) -> dict[str, Any]:
    """Everything the statistics routes answer for all time and for two from/to windows (a day and
    a span of months, in the user's zone), with the totals and first and last play of ``GET /me``."""
    now = datetime.now(UTC)
    out: dict[str, Any] = {}
    totals = users.me(conn, user, now=now)
    assert totals is not None
    out["totals"] = totals["totals"]
    tz = ZoneInfo(zone)
    for label, (start, end) in {
        "all": (None, None),
        "day": ("2024-03-01", "2024-03-01"),
        "months": ("2024-02-15", "2024-04-20"),
    }.items():
        window = windows.resolve(range_=None if start else "all", from_=start, to=end, zone=tz, now=now)
        overview = queries.overview(conn, user, window, now=now)
        overview["days"] = json.loads(str(overview["days"]))
        overview.pop("window")
        out[f"overview/{label}"] = overview
        for kind in ("tracks", "artists", "albums"):
            for by in ("plays", "ms_played"):
                top = queries.top(conn, user, kind, window, by=by, limit=100, cursor=None, now=now)  # type: ignore[arg-type]
                out[f"top/{kind}/{by}/{label}"] = top["items"]  # the first 100: real histories have more
        activity = queries.activity(conn, user, window, now=now)
        activity.pop("window")
        out[f"activity/{label}"] = activity
    return out


def events(conn: psycopg.Connection[Any], user: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT track_id, played_at, ms_played FROM listening_events WHERE user_id = %s ORDER BY 2, 1",
        (user,),
    ).fetchall()


def reimported(exporter: Exporter, importer: Importer, user: int, zone: str) -> tuple[int, dict[str, Any]]:
    """Export ``user``, import the download into a new account; that account and its import."""
    _, data = exporter.export(user)
    fresh = make_user(importer.conn, spotify_id=f"fresh-{uuid.uuid4().hex}", timezone=zone)
    job = importer.upload(fresh, data)
    assert job["status"] == "completed", job["error"]
    return fresh, job


def assert_same_statistics(conn: psycopg.Connection[Any], original: int, fresh: int, zone: str) -> None:
    assert maintenance.verify(conn, original) == []
    assert maintenance.verify(conn, fresh) == []
    assert events(conn, fresh) == events(conn, original)
    assert seen(conn, fresh, zone) == seen(conn, original, zone)


@pytest.fixture
def fast_importer(
    db_conn: psycopg.Connection[Any], aws_resources: dict[str, str], settings: Settings
) -> Importer:
    """The import pipeline with the deployed batch size (one transaction for these histories)."""
    s = settings.replace(import_create_limit=1_000_000, import_batch_size=500_000)
    deps = WorkerDeps(settings=s, conn=db_conn, s3=aws.client("s3", s), sqs=aws.client("sqs", s))
    return Importer(deps, db_conn, s)


def seed_catalog(conn: psycopg.Connection[Any]) -> None:
    """The URI tracks are known before any history is stored (a catalog shared with other listeners),
    so account data of them always finds them by name (see the last tests for when it does not)."""
    seeder = make_user(conn, spotify_id=f"seeder-{uuid.uuid4().hex}")
    ingest(
        conn, seeder, [Play(uri_track(n), BASE - timedelta(days=400), "api", None) for n in range(URI_TRACKS)]
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=history(), zone=st.sampled_from(ZONES))
def test_every_generated_history_comes_back_with_the_same_statistics(
    exporter: Exporter,
    fast_importer: Importer,
    db_conn: psycopg.Connection[Any],
    steps: list[tuple[str, list[list[Play]]]],
    zone: str,
) -> None:
    seed_catalog(db_conn)
    original = make_user(db_conn, spotify_id=f"original-{uuid.uuid4().hex}", timezone=zone)
    for kind, batches in steps:
        if kind == "sync":
            ingest(db_conn, original, batches[0])
        else:
            with bulk_ingest(db_conn, original) as bulk:
                for batch in batches:
                    bulk.add(batch)
    fresh, job = reimported(exporter, fast_importer, original, zone)
    stored = len(events(db_conn, original))
    names_only = db_conn.execute(
        "SELECT count(*) FROM listening_events e JOIN tracks t ON t.id = e.track_id "
        "WHERE e.user_id = %s AND t.spotify_id IS NULL",
        (original,),
    ).fetchone()
    assert names_only is not None
    assert job["counts"]["added"] == stored
    # a play known only by name is in the extended history without a URI, and in the account data
    assert job["counts"]["skipped"]["no_track_uri"] == names_only[0]
    assert_same_statistics(db_conn, original, fresh, zone)
    estimated = db_conn.execute(
        "SELECT count(*) FILTER (WHERE is_estimated), count(*) FILTER (WHERE origin = 'api') "
        "FROM listening_events WHERE user_id = %s",
        (fresh,),
    ).fetchone()
    assert estimated == (0, 0)  # what the round trip does not keep: see the tests below


# --- real downloads ------------------------------------------------------------------------------------
@pytest.mark.skipif(not REAL_EXPORTS.is_dir(), reason=f"the real-export corpus is not at {REAL_EXPORTS}")
@pytest.mark.parametrize(
    ("person", "folder", "pattern", "zone"),
    [
        ("efrrowini", EXTENDED, "Streaming_History_*.json", "Asia/Kolkata"),
        ("kevin-warren", ACCOUNT, "StreamingHistory_*.json", "America/New_York"),
    ],
)
def test_a_real_history_comes_back_with_the_same_statistics(
    exporter: Exporter,
    fast_importer: Importer,
    db_conn: psycopg.Connection[Any],
    person: str,
    folder: str,
    pattern: str,
    zone: str,
) -> None:
    """One person's extended history (music videos, episodes, repeats and all), and one person's
    account data (every play known only by name) go round exactly."""
    original = make_user(db_conn, spotify_id=person, timezone=zone)
    job = fast_importer.upload(original, package(person, folder, pattern))
    assert job["status"] == "completed", job["error"]
    fresh, again = reimported(exporter, fast_importer, original, zone)
    assert again["counts"]["added"] == job["counts"]["added"] + job["counts"]["merged"]
    assert again["counts"]["duplicates"] == 0 and again["counts"]["skipped"]["short_play"] == 0
    assert_same_statistics(db_conn, original, fresh, zone)


# --- what does not survive the trip ----------------------------------------------------------------------
def test_estimated_sync_plays_come_back_exact_and_as_imports_so_spotifys_own_record_counts_twice(
    exporter: Exporter,
    fast_importer: Importer,
    db_conn: psycopg.Connection[Any],
) -> None:
    """A sync play is an ``api`` play whose ``ms_played`` is an estimate until Spotify's own download
    confirms it. Exported, it is an extended-history record (``myi_is_estimated: true``, which an
    import does not read): the new account holds it as an exact import play. The statistics are the
    same, but when Spotify's own record of that play comes later (its ``ts`` a few seconds from the
    Web API's time), the original account merges it, and the new one counts a second play."""
    seed_catalog(db_conn)
    original = make_user(db_conn, spotify_id="original")
    synced_at = BASE + timedelta(milliseconds=345)
    ingest(db_conn, original, [Play(uri_track(1), synced_at, "api", None)])
    fresh, _ = reimported(exporter, fast_importer, original, "UTC")
    assert_same_statistics(db_conn, original, fresh, "UTC")
    assert db_conn.execute(
        "SELECT user_id, ms_played, is_estimated, origin FROM listening_events "
        "WHERE user_id IN (%s, %s) ORDER BY user_id",
        (original, fresh),
    ).fetchall() == [(original, 200_000, True, "api"), (fresh, 200_000, False, "extended")]

    spotifys_record = {
        "ts": (synced_at - timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ms_played": 187_000,
        "spotify_track_uri": f"spotify:track:{uri_track(1).spotify_id}",
        "master_metadata_track_name": "Track 1",
        "master_metadata_album_artist_name": "Artist 1",
        "master_metadata_album_album_name": "Album 1",
        "reason_end": "trackdone",
    }
    download = io.BytesIO()
    with zipfile.ZipFile(download, "w") as zf:
        zf.writestr(f"{EXTENDED}/Streaming_History_Audio_2024_0.json", json.dumps([spotifys_record]))
    assert fast_importer.upload(original, download.getvalue())["counts"]["merged"] == 1
    assert fast_importer.upload(fresh, download.getvalue())["counts"]["added"] == 1
    plays = dict(
        db_conn.execute(
            "SELECT user_id, count(*) FROM listening_events WHERE user_id IN (%s, %s) GROUP BY 1",
            (original, fresh),
        ).fetchall()
    )
    assert plays == {original: 1, fresh: 2}


def test_a_play_known_only_by_name_comes_back_as_the_track_that_now_has_its_name(
    exporter: Exporter,
    fast_importer: Importer,
    db_conn: psycopg.Connection[Any],
) -> None:
    """Account data of a song MYI did not know yet made a track known only by name; the same song
    came by URI later (a sync) and became a second track (its plays near the account record's are
    the same plays: the two tracks are one identity to the merge). An import matches account data
    to a known track by its names, a real one first, so the new account credits the play to the
    real track: the same plays and time, one track instead of two."""
    original = make_user(db_conn, spotify_id="original")
    ingest(db_conn, original, [Play(account_uri_track(2), BASE, "account", 150_000)])  # not known yet
    ingest(
        db_conn,
        original,
        [
            Play(uri_track(2), BASE + timedelta(hours=1), "api", None),
            Play(uri_track(2), BASE + timedelta(seconds=20), "api", None),  # the account record's play
        ],
    )
    count = (
        "SELECT count(DISTINCT track_id), count(*), sum(ms_played) FROM listening_events WHERE user_id = %s"
    )
    assert db_conn.execute(count, (original,)).fetchone() == (2, 2, 350_000)
    fresh, job = reimported(exporter, fast_importer, original, "UTC")
    assert job["counts"]["added"] == 2 and job["counts"]["skipped"]["no_track_uri"] == 1
    assert db_conn.execute(count, (fresh,)).fetchone() == (1, 2, 350_000)
    assert maintenance.verify(db_conn, fresh) == []
    before, after = seen(db_conn, original, "UTC"), seen(db_conn, fresh, "UTC")
    assert (after["totals"]["plays"], after["totals"]["ms_played"]) == (2, 350_000)
    assert (before["totals"]["tracks"], after["totals"]["tracks"]) == (2, 1)
