"""What can go wrong talking to Spotify, sorted by what the caller should do about it."""

from __future__ import annotations


class SpotifyError(Exception):
    """Base class; the message is safe to log (no tokens, codes or verifiers)."""


class SpotifyUnavailable(SpotifyError):
    """Transient: network error, timeout, 5xx or 429. Retry later; never a reason to quarantine."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class SpotifyAuthError(SpotifyError):
    """The accounts service refused: ``code`` is its OAuth error (``invalid_grant``, ...)."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message or f"Spotify refused the request: {code}")
        self.code = code


class SpotifyUnauthorized(SpotifyError):
    """The Web API answered 401: the access token is expired or revoked."""


class SpotifyNotFound(SpotifyError):
    """The Web API answered 404 for an item."""


class SpotifyForbidden(SpotifyError):
    """The Web API answered 403 (an endpoint this app may not use, or a missing scope)."""


class SpotifyBadResponse(SpotifyError):
    """Spotify answered something MYI cannot read (not JSON, missing fields)."""


def retry_after_of(header: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (Spotify sends seconds), or None."""
    try:
        return max(0.0, float(header)) if header is not None else None
    except ValueError:
        return None


class SpotifyRateLimited(SpotifyUnavailable):
    """Spotify answered 429, or the app's shared budget is spent: nobody calls before
    ``retry_after_s`` has passed."""
