"""The Spotify client every worker uses: one shared rate budget, retries, typed results.

- Every request first takes one unit of the app's budget (``SPOTIFY_RATE_BUDGET`` requests per
  ``SPOTIFY_RATE_WINDOW_SECONDS``, a DynamoDB counter shared by all workers), and is refused at once
  while a 429 pause is in force. A 429 from Spotify pauses everyone for its ``Retry-After``; the
  caller gets :class:`~myi.spotify.errors.SpotifyRateLimited` and retries later through its queue
  (never a busy loop). Taking a unit is one conditional DynamoDB update (the pause is part of its
  condition; a worker reads the pause item itself once per window).
- 5xx and network errors are retried with jittered exponential back-off, a few times.
- A 401 leads to one token refresh and one retry.
- Batch catalog reads are used only when ``SPOTIFY_BATCH_READS`` says the app may.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from myi.plays import AlbumRef, ArtistRef, TrackRef, clean_name
from myi.ratelimit import RateLimiter
from myi.settings import Settings
from myi.spotify.accounts import AccountsClient
from myi.spotify.errors import (
    SpotifyBadResponse,
    SpotifyRateLimited,
    SpotifyUnauthorized,
    SpotifyUnavailable,
)
from myi.spotify.webapi import WebApi

BUDGET_KEY = "spotify-app"
RETRIES = 3

# A token source: called with force=True after a 401 to get a fresh token.
TokenSource = Callable[[bool], str]


class Budget:
    """The app's shared request budget and its 429 pause."""

    def __init__(self, settings: Settings, limiter: RateLimiter, *, key: str = BUDGET_KEY) -> None:
        self._limiter = limiter
        self._key = key
        self._limit = settings.spotify_rate_budget
        self._window = settings.spotify_rate_window_s

    def acquire(self) -> None:
        # Spotify's limit is a rolling window per app: so is the budget all workers share.
        decision = self._limiter.take(
            self._key, limit=self._limit, window_s=self._window, rolling=True, pausable=True
        )
        if not decision.allowed:
            raise SpotifyRateLimited(
                "Spotify asked MYI to wait"
                if decision.paused
                else "MYI's Spotify request budget is spent for now",
                status=429,
                retry_after_s=decision.retry_after_s,
            )

    def pause(self, seconds: float) -> None:
        self._limiter.block(self._key, seconds=max(1.0, seconds), window_s=self._window)


@dataclass(frozen=True)
class PlayedTrack:
    track: TrackRef
    played_at: datetime


def _text(value: Any) -> str:
    """A string of a Web API object, as PostgreSQL can store it (TypeError when not a string)."""
    if not isinstance(value, str):
        raise TypeError(value)
    return clean_name(value)


def image_url(obj: dict[str, Any]) -> str | None:
    """The URL of an object's first (largest) image, if it has one."""
    images = obj.get("images") or []
    url = images[0].get("url") if images else None
    return clean_name(url) if isinstance(url, str) else None


def artist_ref(obj: dict[str, Any]) -> ArtistRef:
    """A Web API artist object (simplified or full) as an :class:`ArtistRef` (without an id when
    it has none, as a provisional artist)."""
    try:
        ident = obj.get("id")
        return ArtistRef(_text(obj["name"]), _text(ident) if ident else None, image_url=image_url(obj))
    except (KeyError, TypeError, IndexError, AttributeError):
        raise SpotifyBadResponse("Spotify sent an artist object MYI cannot read") from None


def track_ref(obj: dict[str, Any]) -> TrackRef:
    """A Web API track object as a full :class:`TrackRef` (ids for track, artists and album)."""
    try:
        album = obj.get("album")
        album_ref = None
        if album and album.get("id"):
            album_ref = AlbumRef(
                _text(album["name"]),
                album["id"],
                tuple(artist_ref(a) for a in album.get("artists") or []),
                image_url=image_url(album),
                release_date=album.get("release_date"),
            )
        return TrackRef(
            name=_text(obj["name"]),
            spotify_id=obj["id"],
            artists=tuple(artist_ref(a) for a in obj.get("artists") or []),
            album=album_ref,
            duration_ms=int(obj["duration_ms"]) if obj.get("duration_ms") is not None else None,
            explicit=obj.get("explicit"),
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise SpotifyBadResponse("Spotify sent a track object MYI cannot read") from None


def _played_at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class SpotifyClient:
    def __init__(
        self,
        settings: Settings,
        budget: Budget,
        *,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._http = http or httpx.Client(timeout=settings.spotify_timeout_s)
        self._api = WebApi(settings, http=self._http)
        self._budget = budget
        self._sleep = sleep
        self._app_token: tuple[str, float] | None = None
        self._app_lock = threading.Lock()

    # ---- the call, with budget, retries and one refresh after 401 ------------------------------
    def _get(self, path: str, token: TokenSource, params: dict[str, Any] | None = None) -> Any:
        refreshed = False
        attempt = 0
        while True:
            self._budget.acquire()
            try:
                return self._api.get_json(path, token(refreshed), params)
            except SpotifyUnauthorized:
                if refreshed:
                    raise
                refreshed = True
            except SpotifyUnavailable as exc:
                if exc.status == 429:
                    self._budget.pause(exc.retry_after_s or 1.0)
                    raise SpotifyRateLimited(
                        str(exc), status=429, retry_after_s=exc.retry_after_s or 1.0
                    ) from None
                attempt += 1
                if attempt >= RETRIES:
                    raise
                self._sleep(random.uniform(0.5, 1.0) * 0.25 * 2**attempt)  # noqa: S311 - jitter

    # ---- the user's data ---------------------------------------------------------------------
    def recently_played(self, token: TokenSource, *, after_ms: int | None) -> list[PlayedTrack]:
        params: dict[str, Any] = {"limit": 50}
        if after_ms is not None:
            params["after"] = after_ms
        body = self._get("/me/player/recently-played", token, params)
        out = []
        for item in body.get("items") or []:
            track = item.get("track")
            if not track or track.get("type", "track") != "track" or not track.get("id"):
                continue  # episodes and local files carry no track id
            out.append(PlayedTrack(track_ref(track), _played_at(item["played_at"])))
        return out

    def top(self, token: TokenSource, kind: str, term: str) -> list[dict[str, Any]]:
        body = self._get(f"/me/top/{kind}", token, {"time_range": term, "limit": 50})
        return list(body.get("items") or [])

    # ---- the catalog (an app token: client credentials) ---------------------------------------
    def app_token(self, force: bool = False) -> str:
        with self._app_lock:
            if not force and self._app_token and self._app_token[1] > time.monotonic() + 60:
                return self._app_token[0]
            grant = AccountsClient(self._settings, http=self._http).client_credentials()
            self._app_token = (grant.access_token, time.monotonic() + grant.expires_in)
            return grant.access_token

    def tracks(self, ids: list[str]) -> dict[str, dict[str, Any] | None]:
        return self._catalog("tracks", ids, 50)

    def artists(self, ids: list[str]) -> dict[str, dict[str, Any] | None]:
        return self._catalog("artists", ids, 50)

    def _catalog(self, kind: str, ids: list[str], batch: int) -> dict[str, dict[str, Any] | None]:
        """Items by id (None: Spotify has no such item). Batch reads where allowed, else one by one."""
        from myi.spotify.errors import SpotifyNotFound

        out: dict[str, dict[str, Any] | None] = {}
        if self._settings.spotify_batch_reads:
            for start in range(0, len(ids), batch):
                chunk = ids[start : start + batch]
                body = self._get(f"/{kind}", self.app_token, {"ids": ",".join(chunk)})
                for ident, item in zip(chunk, body.get(kind) or [], strict=False):
                    out[ident] = item
            return out
        for ident in ids:
            try:
                out[ident] = self._get(f"/{kind}/{ident}", self.app_token)
            except SpotifyNotFound:
                out[ident] = None
        return out
