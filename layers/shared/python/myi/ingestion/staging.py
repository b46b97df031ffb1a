"""Staging: a batch of plays as rows of the staging tables (pure Python, one pass, no database).

Each artist, album and track of a batch is one row with a small integer key of the batch (``rk``,
``ak``, ``tk``) that the staging tables join on; the catalog statements give them their ids. A row
is a list in the column order of its staging table, so it goes to COPY, or into the JSON document
of a small batch, as it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from myi.catalog import name_key
from myi.plays import AlbumRef, ArtistRef, Play, TrackRef

# Track key -> (track id, its (artist key, name key)): tracks a bulk ingestion has resolved. A
# track's id never changes (tracks are never deleted), so an import keeps this across its
# transactions; the identity of a track (every track of its artist and name) may grow meanwhile,
# so the statements that dedupe and merge against stored plays look it up again.
KnownTracks = dict[tuple[str, ...], tuple[int, tuple[str, str]]]


@dataclass
class Staged:
    """A batch's rows: artists, albums and tracks by their key in the batch (see
    :func:`artist_key`, :func:`track_key`), credits as (entity, artist) -> position, and one row
    per play: (seq, tk, played_at, ms_played, origin, track_id, alt_ids)."""

    artists: dict[tuple[str, ...], list[Any]] = field(default_factory=dict)
    albums: dict[tuple[str, ...], list[Any]] = field(default_factory=dict)
    album_artists: dict[tuple[int, int], int] = field(default_factory=dict)
    tracks: dict[tuple[str, ...], list[Any]] = field(default_factory=dict)
    track_artists: dict[tuple[int, int], int] = field(default_factory=dict)
    plays: list[tuple[Any, ...]] = field(default_factory=list)
    has_full: bool = False  # some track is a full API object (see is_full)

    def extent(self) -> tuple[datetime, datetime, set[str]]:
        """The first and the last ``played_at`` of the plays, and their origins."""
        times = [p[2] for p in self.plays]
        return min(times), max(times), {p[4] for p in self.plays}


def artist_key(a: ArtistRef) -> tuple[str, ...]:
    """An artist's key in a batch: its Spotify id, or its normalised name."""
    return ("s", a.spotify_id) if a.spotify_id else ("p", name_key(a.name))


def is_full(t: TrackRef) -> bool:
    """A full API track object: ids for the track, its album and every artist."""
    return bool(
        t.spotify_id
        and t.album is not None
        and t.album.spotify_id
        and t.artists
        and all(a.spotify_id for a in t.artists)
    )


def track_key(t: TrackRef) -> tuple[str, ...]:
    """A track's key in a batch: its Spotify id, or its normalised artist and name."""
    if t.spotify_id:
        return ("s", t.spotify_id)
    return ("p", name_key(t.artists[0].name if t.artists else ""), name_key(t.name))


def stage(plays: Sequence[Play]) -> Staged:
    """The rows of ``plays``. A track's first record makes its row, and a later full object
    replaces a partial one (credits included); a later record only fills a missing duration.
    An API play's ``ms_played`` is left out: it is the track's duration, known after the catalog."""
    st = Staged()

    def artist(a: ArtistRef) -> int:
        key = artist_key(a)
        row = st.artists.get(key)
        if row is None:
            row = [len(st.artists), a.spotify_id, a.name, name_key(a.name), a.image_url]
            st.artists[key] = row
        elif a.image_url and not row[4]:
            row[4] = a.image_url
        return int(row[0])

    def album(al: AlbumRef, fallback_artists: tuple[ArtistRef, ...]) -> int:
        credited = al.artists or fallback_artists[:1]
        akey = name_key(credited[0].name) if credited else ""
        key: tuple[str, ...] = ("s", al.spotify_id) if al.spotify_id else ("p", akey, name_key(al.name))
        row = st.albums.get(key)
        if row is None:
            row = [
                len(st.albums),
                al.spotify_id,
                al.name,
                name_key(al.name),
                akey,
                al.image_url,
                al.release_date,
            ]
            st.albums[key] = row
            for pos, a in enumerate(credited):
                st.album_artists.setdefault((row[0], artist(a)), pos)
        elif al.image_url and not row[5]:
            row[5] = al.image_url
        return int(row[0])

    for seq, play in enumerate(plays):
        t: TrackRef = play.track
        full = is_full(t)
        key = track_key(t)
        akey = key[1] if len(key) == 3 else name_key(t.artists[0].name if t.artists else "")
        row = st.tracks.get(key)
        if row is None or (full and not row[8]):
            tk = row[0] if row is not None else len(st.tracks)
            ak = album(t.album, t.artists) if t.album is not None and t.album.name else None
            row = [tk, t.spotify_id, t.name, name_key(t.name), akey, t.duration_ms, t.explicit, ak, full]
            st.tracks[key] = row
            if full:
                st.has_full = True
                for stale in [k for k in st.track_artists if k[0] == tk]:
                    del st.track_artists[stale]
            for pos, a in enumerate(t.artists):
                st.track_artists.setdefault((tk, artist(a)), pos)
        elif row[5] is None and t.duration_ms is not None:
            row[5] = t.duration_ms
        ms = play.ms_played if play.origin != "api" else None
        st.plays.append((seq, row[0], play.played_at, ms, play.origin, None, None))
    return st


def stage_checked(plays: Sequence[Play]) -> Staged:
    """:func:`stage`, after checking that every ``played_at`` is timezone-aware."""
    for play in plays:
        if play.played_at.tzinfo is None:
            raise ValueError("played_at must be timezone-aware")
    return stage(plays)


def stage_document(st: Staged) -> str:
    """Every staging table's rows as one JSON document, as a small batch's staging statement reads
    them (see myi.ingestion.batch): an array per table (artists, albums, album credits, tracks,
    track credits, plays), of arrays in the order of its columns. Serialising the rows as JSON
    costs a fraction of what binding an array per column does."""
    return json.dumps(
        [
            list(st.artists.values()),
            list(st.albums.values()),
            [(ak, rk, pos) for (ak, rk), pos in st.album_artists.items()],
            list(st.tracks.values()),
            [(tk, rk, pos) for (tk, rk), pos in st.track_artists.items()],
            [(p[0], p[1], p[2].isoformat(), p[3], p[4]) for p in st.plays],
        ]
    )
