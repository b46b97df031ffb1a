"""Spotify's export formats, recognised by content, and the normalisation of their records.

- Extended streaming history, new (``Streaming_History_Audio_*.json``, ``..._Video_*``) and old
  (``endsong_*.json``): objects with ``ts`` (end of playback, seconds, UTC) and ``ms_played``, the
  track URI and names of track, album artist and album; episodes and audiobook chapters carry
  their own fields instead.
- Account data (``StreamingHistory_music_*.json``, formerly ``StreamingHistory*.json``): objects with
  ``endTime`` (``YYYY-MM-DD HH:MM``, UTC, end of playback), ``artistName``, ``trackName``,
  ``msPlayed``; podcast files carry ``podcastName``/``episodeName`` instead.

Every record becomes a :class:`~myi.plays.Play` or exactly one skip reason; API.md fixes the order:
invalid, audiobook, episode, no_track_uri, incognito, short_play. Rules apply by content, whatever
the file is called: a music video in a ``Streaming_History_Video_*`` file carries its song's track
URI and is a play of that track; a video episode is an ``episode``. An account-data record named
"Unknown Artist" / "Unknown Track" is Spotify's placeholder for something it cannot name (a local
file, removed content): it identifies no track, so it is ``no_track_uri``, not one shared track.

Every field is range-checked here, so that one crafted or damaged record is ``invalid`` instead of
failing its batch: ``ms_played`` fits its column (a PostgreSQL ``integer``); the time of a play lies
between 2006-01-01 (before Spotify) and a day after now; a track URI holds a 22-character base-62
id (:func:`~myi.catalog.spotify_id_from_uri`). Names are kept, shortened: to ``MAX_NAME`` characters,
and further where their catalog key (:func:`~myi.catalog.name_key`, which may expand a character
into many) would not fit an index entry.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from myi.catalog import name_key, spotify_id_from_uri
from myi.plays import AlbumRef, ArtistRef, Play, TrackRef, clean_name

SkipReason = Literal["short_play", "incognito", "episode", "audiobook", "no_track_uri", "invalid"]
SKIP_REASONS: tuple[SkipReason, ...] = (
    "short_play",
    "incognito",
    "episode",
    "audiobook",
    "no_track_uri",
    "invalid",
)
MIN_PLAY_MS = 30_000
MAX_MS = 2**31 - 1  # listening_events.ms_played is an integer
EARLIEST = datetime(2006, 1, 1, tzinfo=UTC)  # Spotify was founded in 2006
FUTURE = timedelta(days=1)  # how far past now a play may lie (clocks are not all right)
MAX_NAME = 1_000  # characters of a name that are kept
MAX_KEY_BYTES = 1_200  # of a name's key: two keys fit one btree entry (at most 2,704 bytes)

# Keys that make a JSON array an export file, whatever it is called.
_EXTENDED_KEYS = {"ts", "ms_played"}
_ACCOUNT_KEYS = {"endTime", "msPlayed"}
# What account data names a play it cannot identify.
_UNKNOWN = ("Unknown Artist", "Unknown Track")


def is_export_record(record: Any) -> bool:
    """Whether a record looks like one of an export file (used on a file's first record)."""
    return isinstance(record, dict) and (record.keys() >= _EXTENDED_KEYS or record.keys() >= _ACCOUNT_KEYS)


def _int(value: Any) -> int | None:
    """An integer field (ijson gives numbers as int or Decimal); bools and fractions are not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return None


def _text(value: Any) -> str | None:
    """A name (see :func:`~myi.plays.clean_name`), at most ``MAX_NAME`` characters; None when blank."""
    if not isinstance(value, str):
        return None
    if len(value) > MAX_NAME:
        value = value[:MAX_NAME]
    value = clean_name(value)
    return value if value.strip() else None


def _fit(name: str) -> str:
    """A name shortened until its catalog key fits ``MAX_KEY_BYTES``. A character keys to at most
    33 UTF-8 bytes (U+FDFA), so names of up to 36 characters always fit and are not looked at."""
    while len(name) > 36 and len(name_key(name).encode()) > MAX_KEY_BYTES:
        name = name[: len(name) * 3 // 4]
    return name


# The latest time a play may have: now and a day, moved on only when a play lies past it.
_latest = datetime.now(UTC) + FUTURE


def _in_range(played_at: datetime) -> bool:
    global _latest
    if played_at < EARLIEST:
        return False
    if played_at > _latest:
        _latest = datetime.now(UTC) + FUTURE
    return played_at <= _latest


def _extended_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)  # "Z" included
    except ValueError:
        return None
    if parsed.tzinfo is UTC:
        return parsed
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _account_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    except ValueError:
        return None


def normalise(record: Any) -> Play | SkipReason:
    """One record of any export format: a play, or why it is not one."""
    if not isinstance(record, dict):
        return "invalid"
    if "ts" in record:
        return _extended(record)
    if "endTime" in record:
        return _account(record)
    return "invalid"


def _extended(r: dict[str, Any]) -> Play | SkipReason:
    played_at = _extended_time(r.get("ts"))
    ms = _int(r.get("ms_played"))
    if played_at is None or ms is None or not 0 <= ms <= MAX_MS or not _in_range(played_at):
        return "invalid"
    uri = r.get("spotify_track_uri")
    track_id = spotify_id_from_uri(uri) if isinstance(uri, str) else None
    if track_id is None and isinstance(uri, str) and uri.startswith("spotify:track:"):
        return "invalid"  # a track URI, but not one of Spotify's ids
    if r.get("audiobook_chapter_uri") or r.get("audiobook_uri") or r.get("audiobook_title"):
        return "audiobook"
    if r.get("spotify_episode_uri") or r.get("episode_name") or r.get("episode_show_name"):
        return "episode"
    if not track_id:
        return "no_track_uri"
    if r.get("incognito_mode") is True:
        return "incognito"
    if ms < MIN_PLAY_MS and r.get("reason_end") != "trackdone":
        return "short_play"
    names = (
        track_id,
        _text(r.get("master_metadata_track_name")),
        _text(r.get("master_metadata_album_artist_name")),
        _text(r.get("master_metadata_album_album_name")),
    )
    track = _TRACKS.get(names)
    if track is None:
        track = _extended_track(*names)
    return Play(track, played_at, "extended", ms)


# A listening history plays the same tracks again and again: their TrackRefs are made once.
_TRACKS: dict[tuple[str | None, ...], TrackRef] = {}
_TRACKS_MAX = 100_000


def _extended_track(
    track_id: str, track_name: str | None, artist_name: str | None, album_name: str | None
) -> TrackRef:
    artists = (ArtistRef(_fit(artist_name)),) if artist_name else ()
    album = AlbumRef(_fit(album_name), artists=artists) if album_name else None
    track = TrackRef(name=_fit(track_name or ""), spotify_id=track_id, artists=artists, album=album)
    if len(_TRACKS) >= _TRACKS_MAX:
        _TRACKS.clear()
    _TRACKS[(track_id, track_name, artist_name, album_name)] = track
    return track


def _account(r: dict[str, Any]) -> Play | SkipReason:
    played_at = _account_time(r.get("endTime"))
    ms = _int(r.get("msPlayed"))
    if played_at is None or ms is None or not 0 <= ms <= MAX_MS or not _in_range(played_at):
        return "invalid"
    if "podcastName" in r or "episodeName" in r:
        return "episode"
    if "audiobookName" in r or "audiobookTitle" in r or "chapterName" in r:
        return "audiobook"
    artist_name, track_name = _text(r.get("artistName")), _text(r.get("trackName"))
    if artist_name is None or track_name is None:
        return "invalid"
    if (artist_name, track_name) == _UNKNOWN:
        return "no_track_uri"
    if ms < MIN_PLAY_MS:
        return "short_play"
    track = TrackRef(name=_fit(track_name), spotify_id=None, artists=(ArtistRef(_fit(artist_name)),))
    return Play(track, played_at, "account", ms)
