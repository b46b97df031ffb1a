"""The token vault: AES-256-GCM round trips, bound to user and purpose, with key versions."""

from __future__ import annotations

import base64
import json
import os

import pytest

from myi import crypto
from myi.crypto import KeyRing, VaultError


def ring(current: int = 1, versions: tuple[int, ...] = (1,)) -> KeyRing:
    return KeyRing(current=current, keys={v: os.urandom(32) for v in versions})


def test_a_token_round_trips_and_never_appears_in_its_ciphertext() -> None:
    keys = ring()
    blob, version = crypto.encrypt(keys, "refresh-token-secret", user_id=7, purpose="refresh")
    assert version == 1
    assert b"refresh-token-secret" not in blob
    assert crypto.decrypt(keys, blob, version, user_id=7, purpose="refresh") == "refresh-token-secret"


def test_every_encryption_uses_a_fresh_nonce() -> None:
    keys = ring()
    first, _ = crypto.encrypt(keys, "same", user_id=1, purpose="access")
    second, _ = crypto.encrypt(keys, "same", user_id=1, purpose="access")
    assert first[:12] != second[:12] and first != second


@pytest.mark.parametrize("flip", [0, 12, -1])
def test_a_tampered_ciphertext_is_rejected(flip: int) -> None:
    keys = ring()
    blob, version = crypto.encrypt(keys, "token", user_id=1, purpose="refresh")
    tampered = bytearray(blob)
    tampered[flip] ^= 0x01
    with pytest.raises(VaultError):
        crypto.decrypt(keys, bytes(tampered), version, user_id=1, purpose="refresh")


def test_a_ciphertext_moved_to_another_user_or_column_does_not_decrypt() -> None:
    keys = ring()
    blob, version = crypto.encrypt(keys, "AQB-secret-refresh", user_id=1, purpose="refresh")
    with pytest.raises(VaultError) as other_user:
        crypto.decrypt(keys, blob, version, user_id=2, purpose="refresh")
    with pytest.raises(VaultError):
        crypto.decrypt(keys, blob, version, user_id=1, purpose="access")
    assert "AQB-secret-refresh" not in str(other_user.value)


def test_old_key_versions_still_decrypt_and_new_writes_use_the_current_one() -> None:
    old = ring(1, (1,))
    blob, version = crypto.encrypt(old, "token", user_id=3, purpose="refresh")
    rotated = KeyRing(current=2, keys={**old.keys, 2: os.urandom(32)})
    assert crypto.decrypt(rotated, blob, version, user_id=3, purpose="refresh") == "token"
    _, new_version = crypto.encrypt(rotated, "token", user_id=3, purpose="refresh")
    assert new_version == 2
    with pytest.raises(VaultError):
        crypto.decrypt(ring(2, (2,)), blob, version, user_id=3, purpose="refresh")


def test_the_key_secret_is_parsed_and_checked() -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    parsed = KeyRing.from_secret(json.dumps({"current": 1, "keys": {"1": key}}))
    assert parsed.current == 1 and len(parsed.keys[1]) == 32
    with pytest.raises(VaultError, match="current version"):
        KeyRing.from_secret(json.dumps({"current": 2, "keys": {"1": key}}))
    with pytest.raises(VaultError, match="32 bytes"):
        KeyRing.from_secret(json.dumps({"current": 1, "keys": {"1": base64.b64encode(b"short").decode()}}))
    with pytest.raises(VaultError):
        KeyRing.from_secret("not json")
