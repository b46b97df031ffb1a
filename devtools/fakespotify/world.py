"""The fake Spotify's world: users, a catalog, plays and top lists, in memory and thread-safe.

Objects are rendered the way the Web API's OpenAPI schema describes them (2026: ``/me`` without
``email`` and ``country``).
"""

from __future__ import annotations

import hashlib
import random
import threading
from bisect import insort
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TIME_RANGES = ("short_term", "medium_term", "long_term")


def spotify_id(seed: str) -> str:
    """A stable 22-character base-62 id derived from ``seed``."""
    n = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:17], "big")
    out = []
    for _ in range(22):
        n, r = divmod(n, 62)
        out.append(_BASE62[r])
    return "".join(out)


@dataclass
class FakeUser:
    id: str
    display_name: str | None
    image_url: str | None = None
    product: str = "premium"


@dataclass
class World:
    base_url: str = "https://api.spotify.com/v1"
    users: dict[str, FakeUser] = field(default_factory=dict)
    artists: dict[str, dict[str, Any]] = field(default_factory=dict)
    albums: dict[str, dict[str, Any]] = field(default_factory=dict)
    tracks: dict[str, dict[str, Any]] = field(default_factory=dict)
    plays: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)
    tops: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # ---- building ---------------------------------------------------------------------------
    def add_user(
        self, spotify_id_: str, display_name: str | None = None, image_url: str | None = None
    ) -> str:
        with self.lock:
            self.users[spotify_id_] = FakeUser(spotify_id_, display_name, image_url)
            self.plays.setdefault(spotify_id_, [])
        return spotify_id_

    def add_artist(self, name: str, *, id: str | None = None, genres: tuple[str, ...] = ()) -> str:
        ident = id or spotify_id(f"artist:{name}")
        with self.lock:
            self.artists[ident] = {"name": name, "genres": list(genres), "popularity": 50}
        return ident

    def add_album(
        self, name: str, artist_ids: list[str], *, id: str | None = None, release_date: str = "2020-01-01"
    ) -> str:
        ident = id or spotify_id(f"album:{name}:{','.join(artist_ids)}")
        with self.lock:
            self.albums[ident] = {
                "name": name,
                "artist_ids": list(artist_ids),
                "release_date": release_date,
                "track_ids": [],
            }
        return ident

    def add_track(
        self,
        name: str,
        album_id: str,
        artist_ids: list[str] | None = None,
        *,
        duration_ms: int = 200_000,
        id: str | None = None,
        explicit: bool = False,
    ) -> str:
        with self.lock:
            album = self.albums[album_id]
            artists = list(artist_ids or album["artist_ids"])
            ident = id or spotify_id(f"track:{name}:{album_id}")
            self.tracks[ident] = {
                "name": name,
                "album_id": album_id,
                "artist_ids": artists,
                "duration_ms": duration_ms,
                "explicit": explicit,
                "track_number": len(album["track_ids"]) + 1,
            }
            album["track_ids"].append(ident)
        return ident

    def add_play(self, user: str, track_id: str, played_at: datetime) -> None:
        if track_id not in self.tracks:
            raise KeyError(f"no track {track_id}")
        with self.lock:
            insort(self.plays.setdefault(user, []), (played_at.astimezone(UTC), track_id))

    def set_top(self, user: str, kind: str, time_range: str, ids: list[str]) -> None:
        with self.lock:
            self.tops[(user, kind, time_range)] = list(ids)

    # ---- rendering (OpenAPI shapes) ---------------------------------------------------------
    def _link(self, kind: str, ident: str) -> dict[str, Any]:
        return {
            "external_urls": {"spotify": f"https://open.spotify.com/{kind}/{ident}"},
            "href": f"{self.base_url}/{kind}s/{ident}",
            "id": ident,
            "type": kind,
            "uri": f"spotify:{kind}:{ident}",
        }

    @staticmethod
    def _images(seed: str) -> list[dict[str, Any]]:
        return [
            {"url": f"https://i.scdn.co/image/{spotify_id(seed + str(size))}", "height": size, "width": size}
            for size in (640, 300, 64)
        ]

    def simplified_artist(self, ident: str) -> dict[str, Any]:
        return {**self._link("artist", ident), "name": self.artists[ident]["name"]}

    def artist(self, ident: str) -> dict[str, Any]:
        a = self.artists[ident]
        return {
            **self.simplified_artist(ident),
            "followers": {"href": None, "total": 1000},
            "genres": a["genres"],
            "images": self._images("artist" + ident),
            "popularity": a["popularity"],
        }

    def simplified_album(self, ident: str) -> dict[str, Any]:
        a = self.albums[ident]
        return {
            **self._link("album", ident),
            "album_type": "album" if len(a["track_ids"]) > 3 else "single",
            "total_tracks": len(a["track_ids"]),
            "available_markets": ["DE", "US"],
            "images": self._images("album" + ident),
            "name": a["name"],
            "release_date": a["release_date"],
            "release_date_precision": "day",
            "artists": [self.simplified_artist(x) for x in a["artist_ids"]],
        }

    def album(self, ident: str) -> dict[str, Any]:
        a = self.albums[ident]
        items = [self._simplified_track(t) for t in a["track_ids"]]
        return {
            **self.simplified_album(ident),
            "tracks": {
                "href": f"{self.base_url}/albums/{ident}/tracks?offset=0&limit=50",
                "limit": 50,
                "next": None,
                "offset": 0,
                "previous": None,
                "total": len(items),
                "items": items,
            },
            "copyrights": [{"text": "(C) MYI demo", "type": "C"}],
            "external_ids": {"upc": "000000000000"},
            "genres": [],
            "label": "MYI Demo Records",
            "popularity": 40,
        }

    def _simplified_track(self, ident: str) -> dict[str, Any]:
        t = self.tracks[ident]
        return {
            **self._link("track", ident),
            "artists": [self.simplified_artist(x) for x in t["artist_ids"]],
            "available_markets": ["DE", "US"],
            "disc_number": 1,
            "duration_ms": t["duration_ms"],
            "explicit": t["explicit"],
            "is_playable": True,
            "name": t["name"],
            "preview_url": None,
            "track_number": t["track_number"],
            "is_local": False,
        }

    def track(self, ident: str) -> dict[str, Any]:
        t = self.tracks[ident]
        return {
            **self._simplified_track(ident),
            "album": self.simplified_album(t["album_id"]),
            "external_ids": {"isrc": "QZ" + ident[:10].upper()},
            "popularity": 50,
        }

    def context(self, track_id: str) -> dict[str, Any]:
        """The context a track was played from: its album."""
        link = self._link("album", self.tracks[track_id]["album_id"])
        return {
            "type": "album",
            "href": link["href"],
            "external_urls": link["external_urls"],
            "uri": link["uri"],
        }

    def me(self, user: str) -> dict[str, Any]:
        u = self.users[user]
        return {
            **self._link("user", u.id),
            "display_name": u.display_name,
            "explicit_content": {"filter_enabled": False, "filter_locked": False},
            "followers": {"href": None, "total": 3},
            "images": [{"url": u.image_url, "height": 300, "width": 300}] if u.image_url else [],
            "product": u.product,
        }


def demo_world(seed: int = 0, *, now: datetime | None = None) -> World:
    """A small, deterministic world: ``demo`` (Demo Listener), ``ana`` and ``mika``; 20 artists, 40
    albums, 200 tracks; a few hundred plays over the last ten days each; top lists."""
    rng = random.Random(seed)
    world = World()
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    world.add_user("demo", "Demo Listener", "https://i.scdn.co/image/demo-listener")
    world.add_user("ana", "Ana")
    world.add_user("mika", "Mika")
    first = [
        "Velvet",
        "Neon",
        "Paper",
        "Silver",
        "Quiet",
        "Electric",
        "Golden",
        "Midnight",
        "Crystal",
        "Wild",
    ]
    second = [
        "Harbor",
        "Owls",
        "Engines",
        "Lanterns",
        "Tides",
        "Foxes",
        "Gardens",
        "Signals",
        "Rivers",
        "Machines",
    ]
    words = [
        "Light",
        "Summer",
        "Echo",
        "Stone",
        "Ocean",
        "Fire",
        "Dream",
        "Road",
        "Heart",
        "Sky",
        "Rain",
        "Glass",
    ]
    artists = [
        world.add_artist(f"{first[i % 10]} {second[(i * 3) % 10]}", genres=("indie",)) for i in range(20)
    ]
    tracks: list[str] = []
    for a in range(40):
        artist = artists[a % 20]
        album = world.add_album(
            f"{rng.choice(words)} {rng.choice(words)} {a}",
            [artist],
            release_date=f"{2005 + a % 20}-0{1 + a % 9}-15",
        )
        for t in range(5):
            credits = [artist] if t % 4 else [artist, artists[(a + 7) % 20]]
            tracks.append(
                world.add_track(
                    f"{rng.choice(words)} {rng.choice(words)} {a}.{t}",
                    album,
                    credits,
                    duration_ms=rng.randint(150_000, 320_000),
                    explicit=rng.random() < 0.1,
                )
            )
    for n, user in enumerate(("demo", "ana", "mika")):
        favourites = rng.sample(tracks, 40)
        at = now - timedelta(days=10)
        while at < now - timedelta(minutes=5):
            track = rng.choice(favourites) if rng.random() < 0.7 else rng.choice(tracks)
            at += timedelta(
                milliseconds=world.tracks[track]["duration_ms"] + rng.randint(0, 40) * 60_000 * (n + 1)
            )
            if at < now:
                world.add_play(user, track, at)
        for term in TIME_RANGES:
            world.set_top(user, "tracks", term, rng.sample(favourites, 20))
            world.set_top(user, "artists", term, rng.sample(artists, 10))
    return world
