"""How a stored play is written in each export format, and how the files of a download are split.

``extended_json``: Spotify's extended streaming history, as Spotify writes it (``[`` then one object
per play indented by two spaces, keys in Spotify's order, non-ASCII text as it is):

- ``Spotify Extended Streaming History/Streaming_History_Audio_<years>_<n>.json``: every play, oldest
  first. Files are cut as Spotify cuts them: in time order, a file ends once it holds
  ``MAX_RECORDS`` plays or ``MAX_BYTES`` bytes, and is named by the years (in the listener's time
  zone) of its first and last play, ``2019-2020`` or ``2023``, with a running number ``n`` from 0.
  A history without plays is one empty file of the current year.
- Each object has the 23 keys of Spotify's current format plus ``myi_is_estimated``: ``ts`` (the
  end of playback, UTC), ``ms_played``, the track, album artist and album names and the track URI
  from the catalog (a play known only by name has its names and a null URI); every other key is
  null, except ``reason_end``, which is ``"trackdone"`` for a stored play under 30 s (a sync play of
  a short track, or one whose duration is unknown, estimated at 0 ms): Spotify's own rule for a
  short record that is a play, without which an import would skip it as ``short_play``.
- ``ts`` is ``YYYY-MM-DDTHH:MM:SSZ`` as in Spotify's files; a time MYI holds with a fraction of a
  second (a sync play: the Web API gives milliseconds) keeps it (``...:SS.mmmZ``, ISO 8601 like the
  rest), so that the first and last play and every time survive a round trip exactly.
- The album artist is the track's first credited artist (the album's first artist when the track has
  none), the artist an import of the record credits the track to.
- ``Spotify Account Data/StreamingHistory_music_<k>.json``: the plays known only by name once more,
  in the account-data format (``endTime`` to the minute, ``artistName``, ``trackName``,
  ``msPlayed``), at most ``MAX_ACCOUNT_RECORDS`` per file. A record without a track URI is not a
  play to an importer (MYI counts it as ``no_track_uri``), so without these files those plays would
  not come back; Spotify's own download holds both packages side by side in the same way.

``csv``: ``myi_listening_history.csv``, one row per play, oldest first, RFC 4180 (comma, ``"``
quoting, CRLF), UTF-8: ``played_at`` (ISO 8601 UTC with milliseconds, as the API writes times),
``ms_played``, ``track``, ``artists`` (every credited artist, in credit order, joined by ``"; "``),
``album``, ``spotify_track_id`` (empty for a play known only by name), ``source`` (``api`` or
``import``), ``is_estimated`` (``true``/``false``). Names are written as they are: a name that
starts with ``=`` (Ed Sheeran's album) stays so, and is a formula to a spreadsheet that opens the
file unasked.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Literal

Format = Literal["extended_json", "csv"]
FORMATS: tuple[Format, ...] = ("extended_json", "csv")

DOWNLOAD_NAME = "my_spotify_data.zip"
EXTENDED_FOLDER = "Spotify Extended Streaming History"
ACCOUNT_FOLDER = "Spotify Account Data"
CSV_NAME = "myi_listening_history.csv"
MAX_RECORDS = 15_000  # plays per extended-history file (Spotify's files hold about as many)
MAX_BYTES = 12_000_000  # bytes of JSON per extended-history file (about 12 MB, as Spotify's)
MAX_ACCOUNT_RECORDS = 10_000  # plays per account-data file
SHORT_MS = 30_000  # an import skips a record under this unless it ended with "trackdone"

# The keys of Spotify's extended streaming history (its current 23, in its order).
EXTENDED_KEYS = (
    "ts",
    "platform",
    "ms_played",
    "conn_country",
    "ip_addr",
    "master_metadata_track_name",
    "master_metadata_album_artist_name",
    "master_metadata_album_album_name",
    "spotify_track_uri",
    "episode_name",
    "episode_show_name",
    "spotify_episode_uri",
    "audiobook_title",
    "audiobook_uri",
    "audiobook_chapter_uri",
    "audiobook_chapter_title",
    "reason_start",
    "reason_end",
    "shuffle",
    "skipped",
    "offline",
    "offline_timestamp",
    "incognito_mode",
)
ESTIMATED_KEY = "myi_is_estimated"
_TRACK_KEYS = EXTENDED_KEYS[5:9]


def _nulls(keys: tuple[str, ...]) -> str:
    return "".join(f'    "{k}": null,\n' for k in keys)


# A record is RECORD_HEAD % (ts, ms) + the track's fragment + RECORD_TAILS[short, estimated]; the track's part
# is rendered once per track (Track.fragment), the rest is constant text.
RECORD_HEAD = '  {\n    "ts": "%s",\n    "platform": null,\n    "ms_played": %d,\n' + _nulls(
    EXTENDED_KEYS[3:5]
)
RECORD_TAILS = {
    (short, estimated): _nulls(EXTENDED_KEYS[9:17])
    + f'    "reason_end": {json.dumps("trackdone") if short else "null"},\n'
    + _nulls(EXTENDED_KEYS[18:22])
    + f'    "incognito_mode": null,\n    "{ESTIMATED_KEY}": {"true" if estimated else "false"}\n  }}'
    for short in (False, True)
    for estimated in (False, True)
}
_ACCOUNT = (
    '  {\n    "endTime" : "%s",\n    "artistName" : %s,\n    "trackName" : %s,\n    "msPlayed" : %d\n  }'
)
CSV_COLUMNS = (
    "played_at",
    "ms_played",
    "track",
    "artists",
    "album",
    "spotify_track_id",
    "source",
    "is_estimated",
)
ARTIST_SEPARATOR = "; "


def _json(value: str | None) -> str:
    """A JSON value as ``json.dumps(value, ensure_ascii=False)`` writes it (text as it is)."""
    return "null" if value is None else encode_basestring(value)


@dataclass(frozen=True, slots=True)
class Track:
    """What the export writes of a track, rendered once per track."""

    spotify_id: str | None
    name: str | None
    artists: tuple[str, ...]  # credited, in credit order
    album: str | None
    album_artist: str | None  # the record's album artist: first credit, else the album's first artist
    fragment: str  # the four track keys of an extended record, as JSON lines
    size: int  # the fragment's UTF-8 bytes

    @classmethod
    def of(
        cls,
        spotify_id: str | None,
        name: str | None,
        artists: tuple[str, ...],
        album: str | None,
        album_first_artist: str | None,
    ) -> Track:
        name = name or None
        album_artist = artists[0] if artists else album_first_artist
        uri = f"spotify:track:{spotify_id}" if spotify_id else None
        values = (name, album_artist, album, uri)
        fragment = "".join(f'    "{k}": {_json(v)},\n' for k, v in zip(_TRACK_KEYS, values, strict=True))
        return cls(
            spotify_id,
            name,
            artists,
            album,
            album_artist,
            fragment,
            len(fragment.encode()),
        )

    @property
    def names_only(self) -> bool:
        return self.spotify_id is None


# A play's time comes from the database as "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, microseconds: the
# exact stored value, also the keyset a continuation resumes after).
KEY_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def extended_ts(key: str) -> str:
    """Spotify's ``ts``; the fraction of a second only where the stored time has one."""
    if key.endswith(".000000Z"):
        return key[:19] + "Z"
    if key.endswith("000Z"):
        return key[:23] + "Z"
    return key


def extended_record(key: str, ms_played: int, estimated: bool, track: Track) -> str:
    return (
        RECORD_HEAD % (extended_ts(key), ms_played)
        + track.fragment
        + RECORD_TAILS[ms_played < SHORT_MS, estimated]
    )


def account_record(key: str, ms_played: int, track: Track) -> str:
    """The account-data record of a play known only by name (to the minute, as account data is)."""
    return _ACCOUNT % (f"{key[:10]} {key[11:16]}", _json(track.album_artist), _json(track.name), ms_played)


def extended_name(first_year: int, last_year: int, number: int) -> str:
    years = str(first_year) if first_year == last_year else f"{first_year}-{last_year}"
    return f"{EXTENDED_FOLDER}/Streaming_History_Audio_{years}_{number}.json"


def account_name(number: int) -> str:
    return f"{ACCOUNT_FOLDER}/StreamingHistory_music_{number}.json"


class CsvRows:
    """CSV text of plays, gathered until taken."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer)

    def header(self) -> None:
        self._writer.writerow(CSV_COLUMNS)

    def add(self, key: str, ms_played: int, estimated: bool, origin: str, track: Track) -> None:
        self._writer.writerow(
            (
                key[:23] + "Z",
                ms_played,
                track.name or "",
                ARTIST_SEPARATOR.join(track.artists),
                track.album or "",
                track.spotify_id or "",
                "api" if origin == "api" else "import",
                "true" if estimated else "false",
            )
        )

    def take(self) -> bytes:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text.encode()
