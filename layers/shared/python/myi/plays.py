"""The normalised play: what every source (sync, imports) hands to the ingestion core."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

# api: recently-played (ms_played unknown, estimated from the duration);
# extended: the extended streaming history export (second precision, track URI, names);
# account: the account-data export (minute precision, names only).
Origin = Literal["api", "extended", "account"]


def clean_name(value: str) -> str:
    """A name as PostgreSQL text can hold it: without NUL characters. Every source applies it to
    the names it reads (a NUL would fail the whole batch it came in)."""
    return value.replace("\x00", "") if "\x00" in value else value


@dataclass(frozen=True, slots=True)
class ArtistRef:
    name: str
    spotify_id: str | None = None
    image_url: str | None = None


@dataclass(frozen=True, slots=True)
class AlbumRef:
    name: str
    spotify_id: str | None = None
    artists: tuple[ArtistRef, ...] = ()
    image_url: str | None = None
    release_date: str | None = None


@dataclass(frozen=True, slots=True)
class TrackRef:
    """A track as the source knows it.

    API plays bring full objects (ids for track, artists and album). Extended-history records bring
    the track id with names of the album artist and album only; account-data records bring only the
    artist and track names. ``artists`` are the credited artists, first is the main one.
    """

    name: str
    spotify_id: str | None
    artists: tuple[ArtistRef, ...]
    album: AlbumRef | None = None
    duration_ms: int | None = None
    explicit: bool | None = None


@dataclass(frozen=True, slots=True)
class Play:
    track: TrackRef
    played_at: datetime  # end of playback, timezone-aware UTC
    origin: Origin
    ms_played: int | None  # None for API plays

    @property
    def source(self) -> Literal["api", "import"]:
        return "api" if self.origin == "api" else "import"
