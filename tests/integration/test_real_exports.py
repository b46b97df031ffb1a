"""Real Spotify downloads (``../shared/real-exports``, five people's published data) through the
import worker, checked against expectations computed here from the raw JSON with the standard
library alone: the rules of API.md and DESIGN.md written out again, not MYI's normalisers.

Each person's files are zipped the way Spotify ships them (``Spotify Extended Streaming History/``,
``Spotify Account Data/`` or, for a 2020 package, ``MyData/``). Every package must import with
counts that add up per skip reason, the right plays, milliseconds and distinct tracks, import a
second time as nothing but duplicates, and leave statistics that ``verify`` finds exact.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from devtools.paths import REAL_EXPORTS as CORPUS
from myi.statistics import maintenance
from tests.fixtures.imports import Importer
from tests.fixtures.plays import make_user

pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"the real-export corpus is not beside the repository ({CORPUS})"
)

EXTENDED = "Spotify Extended Streaming History"
ACCOUNT = "Spotify Account Data"
# person -> packages, each (folder in the zip, files of the person's folder)
PACKAGES: dict[str, list[tuple[str, str]]] = {
    "efrrowini": [(EXTENDED, "Streaming_History_*.json")],
    "pikachuaaaa": [(EXTENDED, "Streaming_History_*.json")],
    "kevin-warren": [(ACCOUNT, "StreamingHistory_*.json")],
    "anniesidd": [("MyData", "MyData/StreamingHistory*.json"), (ACCOUNT, "StreamingHistory_*.json")],
    "zoetrev": [(ACCOUNT, "StreamingHistory_*.json")],
}
SKIPS = ("short_play", "incognito", "episode", "audiobook", "no_track_uri", "invalid")


def package(person: str, folder: str, pattern: str) -> bytes:
    """The files as one Spotify download: a deflated zip, one folder, files in name order."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((CORPUS / person).glob(pattern)):
            zf.write(path, f"{folder}/{path.name}")
    return out.getvalue()


# --- the expectations: API.md's rules over the raw records --------------------------------------
_SYMBOLS = re.compile(r"[\W_]+")
_TRACK_URI = re.compile(r"^spotify:track:[0-9A-Za-z]{22}$")
EARLIEST = datetime(2006, 1, 1, tzinfo=UTC)


def normalised(name: str) -> str:
    """DESIGN.md's name matching: accents, case and punctuation do not count; a name of symbols
    only is itself."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    key = " ".join(_SYMBOLS.sub(" ", plain.casefold()).split())
    return key or " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def _tomorrow() -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _name(value: Any) -> str | None:
    return value.replace("\x00", "") if isinstance(value, str) and value.strip() else None


def classify(record: Any) -> tuple[str, Any, int]:
    """('play', identity of the play, ms) or (skip reason, None, 0), by API.md's first rule that
    applies. A play's identity is its track (URI, or normalised artist and track names) and its
    end time, as stored."""
    if not isinstance(record, dict):
        return "invalid", None, 0
    if "ts" in record:
        ms = _whole(record.get("ms_played"))
        try:
            ended = datetime.fromisoformat(record["ts"]) if isinstance(record["ts"], str) else None
        except ValueError:
            ended = None
        if ended is not None and ended.tzinfo is None:
            ended = ended.replace(tzinfo=UTC)
        if ended is None or ms is None or not 0 <= ms < 2**31 or not EARLIEST <= ended <= _tomorrow():
            return "invalid", None, 0
        if any(record.get(k) for k in ("audiobook_chapter_uri", "audiobook_uri", "audiobook_title")):
            return "audiobook", None, 0
        if any(record.get(k) for k in ("spotify_episode_uri", "episode_name", "episode_show_name")):
            return "episode", None, 0
        uri = record.get("spotify_track_uri")
        if isinstance(uri, str) and uri.startswith("spotify:track:") and not _TRACK_URI.match(uri):
            return "invalid", None, 0
        if not isinstance(uri, str) or not _TRACK_URI.match(uri):
            return "no_track_uri", None, 0
        if record.get("incognito_mode") is True:
            return "incognito", None, 0
        if ms < 30_000 and record.get("reason_end") != "trackdone":
            return "short_play", None, 0
        return "play", (uri, ended), ms
    if "endTime" in record:
        ms = _whole(record.get("msPlayed"))
        try:
            ended = datetime.strptime(record["endTime"], "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        except (TypeError, ValueError):
            ended = None
        if ended is None or ms is None or not 0 <= ms < 2**31 or not EARLIEST <= ended <= _tomorrow():
            return "invalid", None, 0
        if "podcastName" in record or "episodeName" in record:
            return "episode", None, 0
        if "audiobookName" in record or "chapterName" in record:
            return "audiobook", None, 0
        artist, track = _name(record.get("artistName")), _name(record.get("trackName"))
        if artist is None or track is None:
            return "invalid", None, 0
        if (artist, track) == ("Unknown Artist", "Unknown Track"):
            return "no_track_uri", None, 0
        if ms < 30_000:
            return "short_play", None, 0
        return "play", ((normalised(artist), normalised(track)), ended), ms
    return "invalid", None, 0


@dataclass
class Expected:
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    plays: dict[Any, int] = field(default_factory=dict)  # identity -> ms of the first record read
    repeats: int = 0  # plays already read with the same track and end time
    albums: dict[str, str | None] = field(default_factory=dict)  # URI -> album of its first play

    def read(self, data: bytes) -> Expected:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for name in zf.namelist():
                for record in json.loads(zf.read(name)):
                    self.records += 1
                    kind, identity, ms = classify(record)
                    if kind != "play":
                        self.skipped[kind] += 1
                    elif identity in self.plays:
                        self.repeats += 1
                    else:
                        self.plays[identity] = ms
                    if kind == "play" and "ts" in record:
                        self.albums.setdefault(
                            identity[0], _name(record.get("master_metadata_album_album_name"))
                        )
        return self

    @property
    def tracks(self) -> set[Any]:
        return {track for track, _ in self.plays}


# --- what MYI stored ---------------------------------------------------------------------------
def stored(conn: psycopg.Connection[Any], user: int) -> tuple[int, int, set[Any]]:
    plays, ms = conn.execute(
        "SELECT count(*), COALESCE(sum(ms_played), 0) FROM listening_events WHERE user_id = %s", (user,)
    ).fetchone() or (0, 0)
    rows = conn.execute(
        """
        SELECT DISTINCT t.spotify_id, t.artist_key, t.name_key FROM listening_events e
          JOIN tracks t ON t.id = e.track_id WHERE e.user_id = %s
        """,
        (user,),
    ).fetchall()
    tracks = {f"spotify:track:{sid}" if sid else (artist, name) for sid, artist, name in rows}
    return int(plays), int(ms), tracks


@pytest.mark.parametrize("person", sorted(PACKAGES))
def test_a_real_download_imports_exactly_and_a_second_time_as_duplicates(
    person: str, importer: Importer, db_conn: psycopg.Connection[Any]
) -> None:
    user = make_user(db_conn)
    expected = Expected()
    for folder, pattern in PACKAGES[person]:
        data = package(person, folder, pattern)
        upload = Expected().read(data)
        expected.read(data)
        job = importer.upload(user, data)
        assert job["status"] == "completed", job["error"]
        counts = job["counts"]
        assert job["progress"]["records_read"] == upload.records
        assert {k: counts["skipped"][k] for k in SKIPS} == {k: upload.skipped[k] for k in SKIPS}
        assert counts["merged"] == 0  # one source per package: nothing to merge with
        assert counts["added"] + counts["duplicates"] + sum(counts["skipped"].values()) == upload.records

    plays, ms, tracks = stored(db_conn, user)
    assert plays == len(expected.plays)
    assert ms == sum(expected.plays.values())
    assert tracks == expected.tracks
    albums = {
        uri: normalised(album) if album else None
        for uri, album in db_conn.execute(
            "SELECT 'spotify:track:' || t.spotify_id, a.name FROM tracks t "
            "LEFT JOIN albums a ON a.id = t.album_id WHERE t.spotify_id IS NOT NULL"
        ).fetchall()
    }
    first = {uri: normalised(album) if album else None for uri, album in expected.albums.items()}
    assert albums == first  # a URI whose records disagree keeps its first play's album
    assert maintenance.verify(db_conn, user) == []

    for folder, pattern in PACKAGES[person]:
        again = importer.upload(user, package(person, folder, pattern))
        assert again["status"] == "completed", again["error"]
        plays_in_it = again["progress"]["records_read"] - sum(again["counts"]["skipped"].values())
        assert again["counts"]["added"] == again["counts"]["merged"] == 0
        assert again["counts"]["duplicates"] == plays_in_it
    assert stored(db_conn, user) == (plays, ms, tracks)
    assert maintenance.verify(db_conn, user) == []


def test_albums_named_only_by_symbols_stay_apart(
    importer: Importer, db_conn: psycopg.Connection[Any]
) -> None:
    """Two different albums of one artist named ``=`` and ``÷`` (as in a real history) are two
    albums, and a band called ``!!!`` keeps its name as its key."""
    user = make_user(db_conn)
    records = [
        {
            "ts": f"2024-01-0{day}T10:00:00Z",
            "ms_played": 200_000,
            "spotify_track_uri": f"spotify:track:{uri}",
            "master_metadata_track_name": track,
            "master_metadata_album_artist_name": artist,
            "master_metadata_album_album_name": album,
            "reason_end": "trackdone",
            "incognito_mode": False,
        }
        for day, (uri, track, artist, album) in enumerate(
            [
                ("0000000000000000000001", "Shivers", "Ed Sheeran", "="),
                ("0000000000000000000002", "Perfect", "Ed Sheeran", "÷"),
                ("0000000000000000000003", "Even When/The Best", "!!!", "Wallop"),
                ("0000000000000000000004", "Bad Habits", "Ed Sheeran", "="),
            ],
            start=1,
        )
    ]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(f"{EXTENDED}/Streaming_History_Audio_2024.json", json.dumps(records))
    job = importer.upload(user, out.getvalue())
    assert job["status"] == "completed", job["error"]
    albums = db_conn.execute("SELECT name, name_key FROM albums ORDER BY name").fetchall()
    assert albums == [("=", "="), ("Wallop", "wallop"), ("÷", "÷")]
    artists = db_conn.execute("SELECT name, name_key FROM artists ORDER BY name").fetchall()
    assert artists == [("!!!", "!!!"), ("Ed Sheeran", "ed sheeran")]
    assert maintenance.verify(db_conn, user) == []
