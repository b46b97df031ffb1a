"""The Spotify Web API, as far as MYI reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from myi.plays import clean_name
from myi.settings import Settings
from myi.spotify.errors import (
    SpotifyBadResponse,
    SpotifyForbidden,
    SpotifyNotFound,
    SpotifyUnauthorized,
    SpotifyUnavailable,
    retry_after_of,
)


@dataclass(frozen=True)
class SpotifyProfile:
    id: str
    display_name: str | None
    image_url: str | None


class WebApi:
    def __init__(self, settings: Settings, *, http: httpx.Client | None = None) -> None:
        self._base = settings.spotify_api_url
        self._http = http or httpx.Client(timeout=settings.spotify_timeout_s)

    def get_json(self, path: str, access_token: str, params: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.get(
                f"{self._base}{path}", params=params, headers={"Authorization": f"Bearer {access_token}"}
            )
        except httpx.HTTPError as exc:
            raise SpotifyUnavailable(f"Spotify is unreachable ({type(exc).__name__})") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise SpotifyUnavailable(
                f"Spotify answered {status} for {path}",
                status=status,
                retry_after_s=retry_after_of(response.headers.get("Retry-After")),
            )
        if status == 401:
            raise SpotifyUnauthorized(f"Spotify refused the access token for {path}")
        if status == 403:
            raise SpotifyForbidden(f"Spotify forbids {path} to this app")
        if status == 404:
            raise SpotifyNotFound(f"Spotify has no {path}")
        if status != 200:
            raise SpotifyBadResponse(f"Spotify answered {status} for {path}")
        try:
            return response.json()
        except ValueError:
            raise SpotifyBadResponse(f"Spotify answered {path} without JSON") from None

    def me(self, access_token: str) -> SpotifyProfile:
        body = self.get_json("/me", access_token)
        try:
            images = body.get("images") or []
            image = max(images, key=lambda i: i.get("width") or 0) if images else None
            name = body.get("display_name")
            return SpotifyProfile(
                id=str(body["id"]),
                display_name=clean_name(name) if isinstance(name, str) else None,
                image_url=image.get("url") if image else None,
            )
        except (KeyError, TypeError, AttributeError):
            raise SpotifyBadResponse("Spotify's /me has no user id") from None
