"""The Spotify accounts service: the authorize URL, the code exchange (PKCE) and refreshes."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from aws_lambda_powertools.utilities.parameters import SecretsProvider

from myi import aws
from myi.settings import Settings
from myi.spotify.errors import SpotifyAuthError, SpotifyBadResponse, SpotifyUnavailable, retry_after_of

# recently-played and top lists; the profile (/me: id, display name, images) needs no scope since 2026.
SCOPES = ("user-read-recently-played", "user-top-read")


@dataclass(frozen=True)
class TokenGrant:
    access_token: str = field(repr=False)
    expires_in: int
    refresh_token: str | None = field(repr=False)  # None: keep the refresh token you have
    scope: str


def authorize_url(settings: Settings, *, state: str, code_challenge: str, redirect_uri: str) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.spotify_client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(SCOPES),
            "state": state,
            "code_challenge_method": "S256",
            "code_challenge": code_challenge,
        }
    )
    return f"{settings.spotify_accounts_url}/authorize?{query}"


_secret_lock = threading.Lock()
_secret_providers: dict[str | None, SecretsProvider] = {}


def client_secret(settings: Settings) -> str | None:
    """The app's client secret: the setting, else the Secrets Manager secret, else none (a public
    PKCE client)."""
    if settings.spotify_client_secret:
        return settings.spotify_client_secret
    if not settings.spotify_client_secret_id:
        return None
    with _secret_lock:
        provider = _secret_providers.get(settings.aws_endpoint_url)
        if provider is None:
            provider = SecretsProvider(boto3_client=aws.client("secretsmanager", settings))
            _secret_providers[settings.aws_endpoint_url] = provider
    value = provider.get(settings.spotify_client_secret_id, max_age=300)
    return value if isinstance(value, str) else None


class AccountsClient:
    def __init__(self, settings: Settings, *, http: httpx.Client | None = None, secret: str | None = None):
        self._settings = settings
        self._http = http or httpx.Client(timeout=settings.spotify_timeout_s)
        self._secret = secret if secret is not None else client_secret(settings)

    def exchange_code(self, *, code: str, verifier: str, redirect_uri: str) -> TokenGrant:
        grant = self._token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            }
        )
        if not grant.refresh_token:
            raise SpotifyBadResponse("the code exchange returned no refresh token")
        return grant

    def refresh(self, refresh_token: str) -> TokenGrant:
        return self._token({"grant_type": "refresh_token", "refresh_token": refresh_token})

    def client_credentials(self) -> TokenGrant:
        """An app token for catalog reads (needs the client secret)."""
        if not self._secret:
            raise SpotifyAuthError("invalid_client", "catalog reads need SPOTIFY_CLIENT_SECRET")
        return self._token({"grant_type": "client_credentials"})

    def _token(self, form: dict[str, str]) -> TokenGrant:
        auth: Any = None
        if self._secret:
            auth = httpx.BasicAuth(self._settings.spotify_client_id, self._secret)
        else:
            form = {**form, "client_id": self._settings.spotify_client_id}
        try:
            response = self._http.post(
                f"{self._settings.spotify_accounts_url}/api/token", data=form, auth=auth
            )
        except httpx.HTTPError as exc:
            raise SpotifyUnavailable(
                f"the Spotify accounts service is unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise SpotifyUnavailable(
                f"the Spotify accounts service answered {response.status_code}",
                status=response.status_code,
                retry_after_s=retry_after_of(response.headers.get("Retry-After")),
            )
        try:
            body = response.json()
        except ValueError:
            raise SpotifyBadResponse(
                f"the token endpoint answered {response.status_code} without JSON"
            ) from None
        if response.status_code != 200:
            code = body.get("error") if isinstance(body, dict) else None
            raise SpotifyAuthError(_safe_code(code))
        try:
            return TokenGrant(
                access_token=str(body["access_token"]),
                expires_in=int(body.get("expires_in", 3600)),
                refresh_token=str(body["refresh_token"]) if body.get("refresh_token") else None,
                scope=str(body.get("scope") or ""),
            )
        except (KeyError, TypeError, ValueError):
            raise SpotifyBadResponse("the token endpoint answered without an access token") from None


def _safe_code(code: Any) -> str:
    """An OAuth error code fit for a log line and a redirect: ``[a-z_]``, short."""
    if not isinstance(code, str):
        return "invalid_response"
    cleaned = "".join(ch for ch in code.lower() if ch.isalpha() or ch == "_")[:40]
    return cleaned or "invalid_response"
