"""The fake Spotify behaves like Spotify where MYI depends on it, and speaks the Web API's schema."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from devtools.fakespotify import FakeSpotify, demo_world
from myi.auth import pkce

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "spotify" / "spotify-web-api-openapi.yml"
REDIRECT = "http://127.0.0.1:8000/auth/callback"


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable`` as JSON Schema's ``type: [..., "null"]``."""
    if isinstance(node, dict):
        out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") and "type" in node:
            out["type"] = [node["type"], "null"]
        return out
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@cache
def _components() -> dict[str, Any]:
    return _nullable(yaml.safe_load(SCHEMA.read_text())["components"])


def assert_schema(body: Any, component: str) -> None:
    schema = {"$ref": f"#/components/schemas/{component}", "components": _components()}
    jsonschema.Draft7Validator(schema).validate(body)


def code_for(fake: FakeSpotify, verifier: str, user: str | None = None) -> str:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "client_id": fake.client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "code_challenge_method": "S256",
        "code_challenge": challenge,
        "state": "s1",
        **({"fake_user": user} if user else {}),
    }
    response = httpx.get(f"{fake.accounts_url}/authorize", params=params)
    assert response.status_code == 302
    location = httpx.URL(response.headers["location"])
    assert str(location).startswith(REDIRECT) and location.params["state"] == "s1"
    return location.params["code"]


def token(fake: FakeSpotify, **form: str) -> httpx.Response:
    return httpx.post(f"{fake.accounts_url}/api/token", data=form, auth=(fake.client_id, fake.client_secret))


def exchange(fake: FakeSpotify, user: str | None = None) -> dict[str, Any]:
    verifier = pkce.new_verifier()
    response = token(
        fake,
        grant_type="authorization_code",
        code=code_for(fake, verifier, user),
        redirect_uri=REDIRECT,
        code_verifier=verifier,
    )
    assert response.status_code == 200, response.text
    return response.json()


def api(fake: FakeSpotify, path: str, access: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{fake.api_url}{path}", params=params, headers={"Authorization": f"Bearer {access}"})


def test_the_code_exchange_checks_the_pkce_verifier(fake_spotify: FakeSpotify) -> None:
    verifier = pkce.new_verifier()
    code = code_for(fake_spotify, verifier)
    wrong = token(
        fake_spotify,
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT,
        code_verifier=pkce.new_verifier(),
    )
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


def test_a_code_works_once_and_only_with_its_redirect_uri(fake_spotify: FakeSpotify) -> None:
    verifier = pkce.new_verifier()
    code = code_for(fake_spotify, verifier)
    other_uri = token(
        fake_spotify,
        grant_type="authorization_code",
        code=code,
        redirect_uri="https://elsewhere/cb",
        code_verifier=verifier,
    )
    assert other_uri.json()["error"] == "invalid_grant"
    code = code_for(fake_spotify, verifier)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    first = token(fake_spotify, **form)
    assert first.status_code == 200 and {"access_token", "refresh_token", "expires_in"} <= first.json().keys()
    assert token(fake_spotify, **form).json()["error"] == "invalid_grant"


def test_a_wrong_client_secret_is_refused(fake_spotify: FakeSpotify) -> None:
    response = httpx.post(
        f"{fake_spotify.accounts_url}/api/token",
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        auth=(fake_spotify.client_id, "wrong"),
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_client"


def test_refresh_rotates_and_the_spent_token_fails(fake_spotify: FakeSpotify) -> None:
    grant = exchange(fake_spotify)
    refreshed = token(fake_spotify, grant_type="refresh_token", refresh_token=grant["refresh_token"])
    assert refreshed.status_code == 200
    new = refreshed.json()
    assert new["refresh_token"] != grant["refresh_token"] and new["access_token"] != grant["access_token"]
    spent = token(fake_spotify, grant_type="refresh_token", refresh_token=grant["refresh_token"])
    assert spent.status_code == 400 and spent.json()["error"] == "invalid_grant"
    assert api(fake_spotify, "/me", new["access_token"]).status_code == 200


def test_revocation_ends_every_token_of_the_user(fake_spotify: FakeSpotify) -> None:
    grant = exchange(fake_spotify)
    fake_spotify.revoke("demo")
    assert api(fake_spotify, "/me", grant["access_token"]).status_code == 401
    response = token(fake_spotify, grant_type="refresh_token", refresh_token=grant["refresh_token"])
    assert response.json()["error"] == "invalid_grant"


def test_the_web_api_needs_a_live_bearer_token(fake_spotify: FakeSpotify) -> None:
    assert httpx.get(f"{fake_spotify.api_url}/me").status_code == 401
    assert api(fake_spotify, "/me", "made-up").status_code == 401
    grant = exchange(fake_spotify)
    fake_spotify.expire_access_tokens()
    expired = api(fake_spotify, "/me", grant["access_token"])
    assert expired.status_code == 401
    assert_schema(expired.json()["error"], "ErrorObject")


def test_faults_are_injected_for_their_path_and_count(fake_spotify: FakeSpotify) -> None:
    grant = exchange(fake_spotify)
    fake_spotify.inject("/v1/me/player", status=429, retry_after=7, times=2)
    for _ in range(2):
        limited = api(fake_spotify, "/me/player/recently-played", grant["access_token"])
        assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert api(fake_spotify, "/me", grant["access_token"]).status_code == 200  # another path
    assert api(fake_spotify, "/me/player/recently-played", grant["access_token"]).status_code == 200
    fake_spotify.inject("/api/token", status=503)
    assert (
        token(fake_spotify, grant_type="refresh_token", refresh_token=grant["refresh_token"]).status_code
        == 503
    )
    assert fake_spotify.calls("/api/token") == 2  # the exchange and the faulted refresh


def test_control_routes_work_over_http(fake_spotify: FakeSpotify) -> None:
    grant = exchange(fake_spotify, "ana")
    httpx.post(f"{fake_spotify.url}/_fake/faults", json={"path_prefix": "/v1/me", "status": 502})
    assert api(fake_spotify, "/me", grant["access_token"]).status_code == 502
    track = next(iter(fake_spotify.world.tracks))
    at = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    httpx.post(
        f"{fake_spotify.url}/_fake/plays",
        json={"user": "ana", "plays": [{"track_id": track, "played_at": at}]},
    )
    newest = api(fake_spotify, "/me/player/recently-played", grant["access_token"], limit=1).json()["items"][
        0
    ]
    assert newest["track"]["id"] == track


def test_a_denied_login_redirects_with_access_denied(fake_spotify: FakeSpotify) -> None:
    fake_spotify.deny_next_login()
    response = httpx.get(
        f"{fake_spotify.accounts_url}/authorize",
        params={
            "client_id": fake_spotify.client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "code_challenge_method": "S256",
            "code_challenge": "x" * 43,
            "state": "s",
        },
    )
    location = httpx.URL(response.headers["location"])
    assert location.params["error"] == "access_denied" and "code" not in location.params


def test_me_follows_the_schema_without_email_or_country(fake_spotify: FakeSpotify) -> None:
    body = api(fake_spotify, "/me", exchange(fake_spotify)["access_token"]).json()
    assert_schema(body, "PrivateUserObject")
    assert body["id"] == "demo" and "email" not in body and "country" not in body


def test_recently_played_keeps_the_latest_fifty_and_pages_with_exclusive_cursors(
    fake_spotify: FakeSpotify,
) -> None:
    access = exchange(fake_spotify)["access_token"]
    page = api(fake_spotify, "/me/player/recently-played", access, limit=50).json()
    assert_schema(page, "CursorPagingPlayHistoryObject")
    played = [item["played_at"] for item in page["items"]]
    assert len(played) == 50 and played == sorted(played, reverse=True)
    older = api(fake_spotify, "/me/player/recently-played", access, before=page["cursors"]["before"]).json()
    assert older["items"] == []  # nothing older than the latest 50 is kept
    middle = page["items"][10]["played_at"]
    middle_ms = int(datetime.fromisoformat(middle.replace("Z", "+00:00")).timestamp() * 1000)
    after = api(fake_spotify, "/me/player/recently-played", access, after=middle_ms, limit=50).json()
    assert [i["played_at"] for i in after["items"]] == played[:10]
    both = api(fake_spotify, "/me/player/recently-played", access, after=1, before=2)
    assert both.status_code == 400


def test_top_lists_and_single_items_follow_the_schema(fake_spotify: FakeSpotify) -> None:
    access = exchange(fake_spotify)["access_token"]
    tracks = api(fake_spotify, "/me/top/tracks", access, time_range="short_term", limit=5).json()
    assert_schema(tracks, "PagingTrackObject")
    assert len(tracks["items"]) == 5 and tracks["next"] is not None
    artists = api(fake_spotify, "/me/top/artists", access).json()
    assert_schema(artists, "PagingArtistObject")
    track = tracks["items"][0]
    assert_schema(api(fake_spotify, f"/tracks/{track['id']}", access).json(), "TrackObject")
    assert_schema(api(fake_spotify, f"/artists/{track['artists'][0]['id']}", access).json(), "ArtistObject")
    assert_schema(api(fake_spotify, f"/albums/{track['album']['id']}", access).json(), "AlbumObject")
    assert api(fake_spotify, "/tracks/" + "0" * 22, access).status_code == 404
    assert api(fake_spotify, "/tracks/not-an-id", access).status_code == 400


@pytest.mark.parametrize("batch_reads", [False, True])
def test_batch_reads_exist_only_when_the_app_may_use_them(batch_reads: bool) -> None:
    with FakeSpotify(demo_world(), batch_reads=batch_reads) as fake:
        access = exchange(fake)["access_token"]
        ids = ",".join([*list(fake.world.tracks)[:3], "0" * 22])
        response = api(fake, "/tracks", access, ids=ids)
        if not batch_reads:
            assert response.status_code == 403
        else:
            body = response.json()["tracks"]
            assert len(body) == 4 and body[3] is None
            for item in body[:3]:
                assert_schema(item, "TrackObject")
