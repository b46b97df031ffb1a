"""The token manager against the fake Spotify: caching, rotation, one refresh at a time, quarantine
only for invalid grants, key rotation."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from myi import aws, crypto
from myi.auth.tokens import GrantUnavailable, TokenManager, connection_status, store_grant
from myi.crypto import KeyRing, new_key_ring_secret
from myi.settings import Settings
from myi.spotify.accounts import AccountsClient
from myi.spotify.errors import SpotifyAuthError, SpotifyUnavailable
from tests.fixtures.auth import grant_for
from tests.fixtures.plays import make_user


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def http() -> Any:
    with httpx.Client(timeout=10) as client:
        yield client


def signed_in(
    conn: psycopg.Connection[Any], settings: Settings, ring: KeyRing, spotify_id: str = "demo"
) -> int:
    user = make_user(conn, spotify_id)
    store_grant(conn, ring, user, grant_for(settings, spotify_id), now=datetime.now(UTC))
    return user


def manager(conn: Any, settings: Settings, ring: KeyRing, clock: Clock, http: httpx.Client) -> TokenManager:
    return TokenManager(conn, AccountsClient(settings, http=http), lambda: ring, clock=clock)


def stored(conn: psycopg.Connection[Any], user: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT refresh_token_enc, refresh_key_version, access_key_version, is_valid, consecutive_failures "
        "FROM spotify_auth WHERE user_id = %s",
        (user,),
    ).fetchone()
    assert row is not None
    return dict(zip(("refresh", "refresh_v", "access_v", "is_valid", "failures"), row, strict=True))


def test_a_fresh_access_token_is_served_from_the_vault_without_calling_spotify(
    db_conn: psycopg.Connection[Any],
    spotify_settings: Settings,
    keyring: KeyRing,
    fake_spotify: Any,
    http: Any,
) -> None:
    user = signed_in(db_conn, spotify_settings, keyring)
    fake_spotify.reset_calls()
    tm = manager(db_conn, spotify_settings, keyring, Clock(), http)
    token = tm.get_access_token(user)
    assert tm.get_access_token(user) == token
    assert fake_spotify.calls("/api/token") == 0
    assert (
        httpx.get(f"{fake_spotify.api_url}/me", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )


def test_a_token_near_its_end_is_refreshed_and_the_rotated_refresh_token_replaces_the_old(
    db_conn: psycopg.Connection[Any],
    spotify_settings: Settings,
    keyring: KeyRing,
    fake_spotify: Any,
    http: Any,
) -> None:
    user = signed_in(db_conn, spotify_settings, keyring)
    before = stored(db_conn, user)
    old_refresh = crypto.decrypt(
        keyring, before["refresh"], before["refresh_v"], user_id=user, purpose="refresh"
    )
    clock = Clock()
    clock.now += timedelta(minutes=51)  # 9 minutes of a one-hour token left
    fake_spotify.reset_calls()
    token = manager(db_conn, spotify_settings, keyring, clock, http).get_access_token(user)
    assert fake_spotify.calls("/api/token") == 1
    after = stored(db_conn, user)
    new_refresh = crypto.decrypt(
        keyring, after["refresh"], after["refresh_v"], user_id=user, purpose="refresh"
    )
    assert new_refresh != old_refresh
    with pytest.raises(SpotifyAuthError) as spent:
        AccountsClient(spotify_settings, http=http).refresh(old_refresh)
    assert spent.value.code == "invalid_grant"
    assert (
        httpx.get(f"{fake_spotify.api_url}/me", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )


def test_concurrent_refreshes_for_one_user_call_spotify_once(
    database_url: str,
    db_conn: psycopg.Connection[Any],
    spotify_settings: Settings,
    keyring: KeyRing,
    fake_spotify: Any,
) -> None:
    user = signed_in(db_conn, spotify_settings, keyring)
    clock = Clock()
    clock.now += timedelta(minutes=55)
    fake_spotify.reset_calls()
    tokens: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn, httpx.Client(timeout=10) as http:
            barrier.wait()
            try:
                tokens.append(manager(conn, spotify_settings, keyring, clock, http).get_access_token(user))
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert fake_spotify.calls("/api/token") == 1
    assert len(set(tokens)) == 1


def test_three_invalid_grants_in_a_row_quarantine_the_grant_and_sign_in_restores_it(
    db_conn: psycopg.Connection[Any],
    spotify_settings: Settings,
    keyring: KeyRing,
    fake_spotify: Any,
    http: Any,
) -> None:
    user = signed_in(db_conn, spotify_settings, keyring)
    clock = Clock()
    clock.now += timedelta(hours=2)
    fake_spotify.revoke("demo")
    tm = manager(db_conn, spotify_settings, keyring, clock, http)
    for expected_failures in (1, 2, 3):
        with pytest.raises(GrantUnavailable):
            tm.get_access_token(user)
        assert stored(db_conn, user)["failures"] == expected_failures
        assert stored(db_conn, user)["is_valid"] is (expected_failures < 3)
    assert connection_status(db_conn, user, now=clock.now) == "reconnect_required"
    fake_spotify.reset_calls()
    with pytest.raises(GrantUnavailable):
        tm.get_access_token(user)
    assert fake_spotify.calls("/api/token") == 0  # a quarantined grant is not tried again
    store_grant(db_conn, keyring, user, grant_for(spotify_settings, "demo"), now=datetime.now(UTC))
    assert stored(db_conn, user)["is_valid"] is True and stored(db_conn, user)["failures"] == 0
    assert connection_status(db_conn, user, now=datetime.now(UTC)) == "ok"


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_failures_never_count_toward_quarantine(
    status: int,
    db_conn: psycopg.Connection[Any],
    spotify_settings: Settings,
    keyring: KeyRing,
    fake_spotify: Any,
    http: Any,
) -> None:
    user = signed_in(db_conn, spotify_settings, keyring)
    clock = Clock()
    clock.now += timedelta(hours=2)
    fake_spotify.inject("/api/token", status=status, retry_after=7 if status == 429 else None, times=5)
    tm = manager(db_conn, spotify_settings, keyring, clock, http)
    for _ in range(5):
        with pytest.raises(SpotifyUnavailable) as exc:
            tm.get_access_token(user)
        assert exc.value.status == status
    assert stored(db_conn, user)["failures"] == 0 and stored(db_conn, user)["is_valid"] is True
    assert tm.get_access_token(user)  # Spotify is back


def test_a_success_resets_the_count_of_invalid_grants(
    db_conn: psycopg.Connection[Any],
    spotify_settings: Settings,
    keyring: KeyRing,
    fake_spotify: Any,
    http: Any,
) -> None:
    user = signed_in(db_conn, spotify_settings, keyring)
    clock = Clock()
    clock.now += timedelta(hours=2)
    fake_spotify.inject("/api/token", status=400, body={"error": "invalid_grant"}, times=2)
    tm = manager(db_conn, spotify_settings, keyring, clock, http)
    for _ in range(2):
        with pytest.raises(GrantUnavailable):
            tm.get_access_token(user)
    assert stored(db_conn, user)["failures"] == 2
    assert tm.get_access_token(user)
    assert stored(db_conn, user)["failures"] == 0


def test_a_grant_older_than_six_months_needs_a_new_sign_in(
    db_conn: psycopg.Connection[Any],
    spotify_settings: Settings,
    keyring: KeyRing,
    fake_spotify: Any,
    http: Any,
) -> None:
    user = signed_in(db_conn, spotify_settings, keyring)
    clock = Clock()
    clock.now += timedelta(days=183)
    fake_spotify.reset_calls()
    with pytest.raises(GrantUnavailable):
        manager(db_conn, spotify_settings, keyring, clock, http).get_access_token(user)
    assert fake_spotify.calls("/api/token") == 0
    assert connection_status(db_conn, user, now=clock.now) == "reconnect_required"
    assert stored(db_conn, user)["is_valid"] is False


def test_keys_rotate_in_secrets_manager_without_losing_a_grant(
    db_conn: psycopg.Connection[Any], spotify_settings: Settings, fake_spotify: Any, http: Any
) -> None:
    secrets = aws.client("secretsmanager", spotify_settings)
    secret_id = "myi/token-key-rotation-test"
    secrets.create_secret(Name=secret_id, SecretString=new_key_ring_secret(1))
    settings = spotify_settings.replace(token_key_secret_id=secret_id)
    crypto.reset_key_cache()
    try:
        v1 = crypto.load_keyring(settings)
        user = signed_in(db_conn, settings, v1)
        assert stored(db_conn, user)["refresh_v"] == 1
        data = json.loads(secrets.get_secret_value(SecretId=secret_id)["SecretString"])
        data["keys"]["2"] = json.loads(new_key_ring_secret(2))["keys"]["2"]
        data["current"] = 2
        secrets.put_secret_value(SecretId=secret_id, SecretString=json.dumps(data))
        crypto.reset_key_cache()
        tm = TokenManager(db_conn, AccountsClient(settings, http=http), lambda: crypto.load_keyring(settings))
        assert tm.get_access_token(user)  # the cached access token of version 1 still decrypts
        clock = Clock()
        clock.now += timedelta(hours=2)
        tm = TokenManager(
            db_conn, AccountsClient(settings, http=http), lambda: crypto.load_keyring(settings), clock=clock
        )
        assert tm.get_access_token(user)
        after = stored(db_conn, user)
        assert after["refresh_v"] == 2 and after["access_v"] == 2
    finally:
        secrets.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
        crypto.reset_key_cache()


def test_a_deployments_placeholder_key_secret_gets_its_first_key_once(
    aws_resources: dict[str, str], settings: Settings
) -> None:

    secrets = aws.client("secretsmanager", settings)
    secret_id = f"myi/placeholder-{uuid.uuid4().hex[:6]}"
    secrets.create_secret(Name=secret_id, SecretString=json.dumps({"uninitialised": True, "nonce": "x"}))
    s = settings.replace(token_key_secret_id=secret_id)
    assert crypto.ensure_key_ring(s) is True
    ring = KeyRing.from_secret(secrets.get_secret_value(SecretId=secret_id)["SecretString"])
    assert ring.current == 1 and len(ring.keys[1]) == 32
    assert crypto.ensure_key_ring(s) is False
    assert KeyRing.from_secret(secrets.get_secret_value(SecretId=secret_id)["SecretString"]) == ring
    secrets.put_secret_value(SecretId=secret_id, SecretString='{"current": 1}')
    with pytest.raises(crypto.VaultError):
        crypto.ensure_key_ring(s)
