"""Grants whose keys are gone, re-encryption under the current key, and the local key file."""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devtools.local.context import LocalContext
from devtools.local.resources import create_resources
from devtools.local.runtime import REPO_ROOT, load_handler
from myi import aws, crypto
from myi.auth.tokens import GrantUnavailable, TokenManager, connection_status, rekey_grants, store_grant
from myi.crypto import KeyRing
from myi.ratelimit import RateLimiter
from myi.settings import Settings, get_settings
from myi.spotify.accounts import AccountsClient
from myi.spotify.client import Budget, SpotifyClient
from myi.sync import SyncDeps, fanout, sync_user
from tests.fixtures.api import signed_in as api_client
from tests.fixtures.auth import grant_for
from tests.fixtures.plays import make_user


class Clock:
    def __init__(self, offset: timedelta = timedelta()) -> None:
        self.now = datetime.now(UTC) + offset

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def ring_of(**keys: bytes) -> KeyRing:
    """``ring_of(v1=k1, v2=k2)``: the highest version is current."""
    versions = {int(name[1:]): key for name, key in keys.items()}
    return KeyRing(current=max(versions), keys=versions)


def user_with_grant(conn: psycopg.Connection[Any], settings: Settings, ring: KeyRing, spotify_id: str) -> int:
    user = make_user(conn, spotify_id)
    conn.execute("UPDATE users SET last_seen_at = now() WHERE id = %s", (user,))
    store_grant(conn, ring, user, grant_for(settings, spotify_id), now=datetime.now(UTC))
    return user


def grant_row(conn: psycopg.Connection[Any], user: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT is_valid, last_error, refresh_key_version, access_key_version, access_token_enc "
        "FROM spotify_auth WHERE user_id = %s",
        (user,),
    ).fetchone()
    assert row is not None
    return dict(zip(("is_valid", "last_error", "refresh_v", "access_v", "access"), row, strict=True))


def test_a_refresh_token_no_key_decrypts_quarantines_the_grant_and_sign_in_restores_it(
    db_conn: psycopg.Connection[Any], spotify_settings: Settings, fake_spotify: Any, http: httpx.Client
) -> None:
    old_ring, new_ring = ring_of(v1=os.urandom(32)), ring_of(v1=os.urandom(32))  # a replaced ring
    user = user_with_grant(db_conn, spotify_settings, old_ring, "demo")
    fake_spotify.reset_calls()
    tm = TokenManager(
        db_conn,
        AccountsClient(spotify_settings, http=http),
        lambda: new_ring,
        clock=Clock(timedelta(hours=2)),
    )
    with pytest.raises(GrantUnavailable):
        tm.get_access_token(user)
    assert grant_row(db_conn, user)["is_valid"] is False
    assert grant_row(db_conn, user)["last_error"] == "unreadable"
    assert connection_status(db_conn, user, now=datetime.now(UTC)) == "reconnect_required"
    assert fake_spotify.calls("/api/token") == 0
    store_grant(db_conn, new_ring, user, grant_for(spotify_settings, "demo"), now=datetime.now(UTC))
    assert connection_status(db_conn, user, now=datetime.now(UTC)) == "ok"
    assert tm.get_access_token(user)


def test_a_grant_of_a_removed_key_version_is_quarantined_too(
    db_conn: psycopg.Connection[Any], spotify_settings: Settings, http: httpx.Client
) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    user = user_with_grant(db_conn, spotify_settings, ring_of(v1=k1), "demo")
    tm = TokenManager(
        db_conn,
        AccountsClient(spotify_settings, http=http),
        lambda: ring_of(v2=k2),
        clock=Clock(timedelta(hours=2)),
    )
    with pytest.raises(GrantUnavailable):
        tm.get_access_token(user)
    assert grant_row(db_conn, user)["last_error"] == "unreadable"


@pytest.fixture
def sync_deps(
    db_conn: psycopg.Connection[Any], spotify_settings: Settings, http: httpx.Client
) -> Iterator[SyncDeps]:
    sqs = aws.client("sqs", spotify_settings)
    url = sqs.create_queue(QueueName=f"sync-keys-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    settings = spotify_settings.replace(sync_queue_url=url, sync_cooldown_s=0)
    ring = ring_of(v1=os.urandom(32))
    yield SyncDeps(
        settings=settings,
        conn=db_conn,
        sqs=sqs,
        spotify=SpotifyClient(
            settings,
            Budget(settings, RateLimiter(settings), key=f"budget-{uuid.uuid4().hex}"),
            http=http,
            sleep=lambda s: None,
        ),
        tokens=TokenManager(db_conn, AccountsClient(settings, http=http), lambda: ring),
    )
    sqs.delete_queue(QueueUrl=url)


def test_an_unreadable_grant_ends_its_sync_quietly_shows_reconnect_and_leaves_the_fan_out(
    sync_deps: SyncDeps, fake_spotify: Any, api_settings: Settings
) -> None:
    conn = sync_deps.conn
    user = user_with_grant(conn, sync_deps.settings, ring_of(v1=os.urandom(32)), "demo")  # another ring
    conn.execute("UPDATE spotify_auth SET access_expires_at = now() WHERE user_id = %s", (user,))
    fake_spotify.reset_calls()
    assert sync_user(sync_deps, user).status == "no_grant"  # not an exception: no dead letter
    assert fake_spotify.calls() == 0
    me = api_client(conn, api_settings, user).get("/me")
    assert me.status == 200 and me.body["spotify_connection"] == "reconnect_required"
    conn.execute("UPDATE users SET next_sync_at = NULL WHERE id = %s", (user,))
    assert fanout(sync_deps.settings, conn, sync_deps.sqs) == 0


def test_rekey_moves_every_readable_token_to_the_current_key_in_batches(
    db_conn: psycopg.Connection[Any], spotify_settings: Settings, fake_spotify: Any, http: httpx.Client
) -> None:
    for name in ("lost", "bad-access", "current"):
        fake_spotify.world.add_user(name)
    k1, k2 = os.urandom(32), os.urandom(32)
    v1 = ring_of(v1=k1)
    users = [user_with_grant(db_conn, spotify_settings, v1, name) for name in ("demo", "ana", "mika")]
    no_access = users[2]
    db_conn.execute(
        "UPDATE spotify_auth SET access_token_enc = NULL, access_key_version = NULL, "
        "access_expires_at = NULL WHERE user_id = %s",
        (no_access,),
    )
    lost = user_with_grant(db_conn, spotify_settings, ring_of(v1=os.urandom(32)), "lost")
    bad_access = user_with_grant(db_conn, spotify_settings, v1, "bad-access")
    db_conn.execute(
        "UPDATE spotify_auth SET access_token_enc = %s WHERE user_id = %s", (os.urandom(60), bad_access)
    )
    current = user_with_grant(db_conn, spotify_settings, ring_of(v1=k1, v2=k2), "current")
    both = ring_of(v1=k1, v2=k2)

    counts = rekey_grants(db_conn, both, now=datetime.now(UTC), batch=2)
    assert counts == {"rekeyed": 4, "already_current": 1, "unreadable": 1, "access_dropped": 1, "skipped": 0}
    for user in (*users, bad_access, current):
        row = grant_row(db_conn, user)
        assert row["refresh_v"] == 2 and row["is_valid"] is True
        assert row["access_v"] == (None if user in (no_access, bad_access) else 2)
    assert grant_row(db_conn, lost)["is_valid"] is False
    assert grant_row(db_conn, lost)["last_error"] == "unreadable"

    # Without key 1, every readable grant still works; a cached access token needs no refresh.
    only_v2 = ring_of(v2=k2)
    fake_spotify.reset_calls()
    tm = TokenManager(db_conn, AccountsClient(spotify_settings, http=http), lambda: only_v2)
    token = tm.get_access_token(users[0])
    assert fake_spotify.calls("/api/token") == 0
    assert (
        httpx.get(f"{fake_spotify.api_url}/me", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    later = TokenManager(
        db_conn, AccountsClient(spotify_settings, http=http), lambda: only_v2, clock=Clock(timedelta(hours=2))
    )
    assert later.get_access_token(users[1]) and later.get_access_token(bad_access)

    again = rekey_grants(db_conn, both, now=datetime.now(UTC), batch=2)
    assert again == {"rekeyed": 0, "already_current": 5, "unreadable": 0, "access_dropped": 0, "skipped": 1}


def test_rekey_leaves_tokens_of_a_newer_key_than_it_knows(
    db_conn: psycopg.Connection[Any], spotify_settings: Settings
) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    user = user_with_grant(db_conn, spotify_settings, ring_of(v1=k1, v2=k2), "demo")
    counts = rekey_grants(db_conn, ring_of(v1=k1), now=datetime.now(UTC))
    assert counts["rekeyed"] == 0 and counts["unreadable"] == 0 and counts["skipped"] == 1
    assert grant_row(db_conn, user)["is_valid"] is True and grant_row(db_conn, user)["refresh_v"] == 2


@pytest.fixture
def rotated(
    db_conn: psycopg.Connection[Any], spotify_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[int]:
    """A user whose grant was stored under key 1 of a ring that has since made key 2 current (the
    secret the functions read); yields the user."""
    secrets = aws.client("secretsmanager", spotify_settings)
    secret_id = f"myi/rotated-{uuid.uuid4().hex[:8]}"
    k1, k2 = os.urandom(32), os.urandom(32)
    secrets.create_secret(Name=secret_id, SecretString=_secret(1, k1=k1))
    user = user_with_grant(db_conn, spotify_settings, ring_of(v1=k1), "demo")
    secrets.put_secret_value(SecretId=secret_id, SecretString=_secret(2, k1=k1, k2=k2))
    monkeypatch.setenv("TOKEN_KEY_SECRET_ID", secret_id)
    get_settings.cache_clear()
    crypto.reset_key_cache()
    try:
        yield user
    finally:
        secrets.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
        get_settings.cache_clear()
        crypto.reset_key_cache()


def test_the_rekey_command_reencrypts_under_the_secrets_current_key_and_reports(
    db_conn: psycopg.Connection[Any], rotated: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert crypto.main(["rekey"]) == 0
    out = capsys.readouterr().out
    assert "current key version: 2" in out and "rekeyed=1" in out and "v2: 2" in out and "v1" not in out
    assert grant_row(db_conn, rotated)["refresh_v"] == 2 and grant_row(db_conn, rotated)["access_v"] == 2


def test_the_daily_maintenance_reencrypts_grants_so_the_old_key_can_go(
    db_conn: psycopg.Connection[Any], rotated: int
) -> None:
    handler = load_handler(REPO_ROOT / "functions", "partition_maintenance")
    result = handler(
        {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
        LocalContext("test", 256, 300),
    )
    assert result["grants_rekeyed"] == 1 and result["grants_unreadable"] == 0
    assert grant_row(db_conn, rotated)["refresh_v"] == 2 and grant_row(db_conn, rotated)["access_v"] == 2


def _secret(current: int, **keys: bytes) -> str:
    return json.dumps(
        {"current": current, "keys": {name[1:]: base64.b64encode(key).decode() for name, key in keys.items()}}
    )


def test_the_local_key_ring_is_kept_in_its_file_across_emulators(aws_endpoint: str, tmp_path: Path) -> None:
    key_file = tmp_path / "local" / "token-key.json"
    base = Settings.from_env().replace(stage="keytest", import_bucket="myi-keytest")
    secrets = aws.client("secretsmanager", base)
    first_id, second_id = (f"myi/key-file-{uuid.uuid4().hex[:8]}" for _ in range(2))
    try:
        create_resources(base.replace(token_key_secret_id=first_id), key_file=key_file)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        saved = KeyRing.from_secret(key_file.read_text())
        first = KeyRing.from_secret(secrets.get_secret_value(SecretId=first_id)["SecretString"])
        assert first == saved
        # a new emulator (no secret yet) with the same .local/: the same ring, not a new one
        create_resources(base.replace(token_key_secret_id=second_id), key_file=key_file)
        second = KeyRing.from_secret(secrets.get_secret_value(SecretId=second_id)["SecretString"])
        assert second == saved and list(key_file.parent.iterdir()) == [key_file]
    finally:
        for secret_id in (first_id, second_id):
            secrets.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)


def test_a_local_key_file_that_is_not_a_ring_is_refused_and_kept(aws_endpoint: str, tmp_path: Path) -> None:
    key_file = tmp_path / "token-key.json"
    key_file.write_text("not a ring")
    settings = Settings.from_env().replace(
        stage="keytest", import_bucket="myi-keytest", token_key_secret_id=f"myi/bad-{uuid.uuid4().hex[:8]}"
    )
    with pytest.raises(crypto.VaultError):
        create_resources(settings, key_file=key_file)
    assert key_file.read_text() == "not a ring"
