"""The token vault: Spotify tokens encrypted at rest with AES-256-GCM.

Every encryption uses a fresh random 96-bit nonce; the stored value is ``nonce || ciphertext+tag``.
The associated data binds a ciphertext to its user and its purpose (refresh or access token), so a
value copied to another user's row, or from one column to the other, fails to decrypt.

Keys live in one Secrets Manager secret, ``{"current": N, "keys": {"1": "<base64 32 bytes>", ...}}``,
read through Powertools parameters with caching. The key version is stored beside each ciphertext:
new writes use the current version, older versions still decrypt, so keys rotate by adding a version
and making it current (old ciphertexts are re-encrypted as tokens are refreshed, and all at once by
``python -m myi.crypto rekey``, :func:`myi.auth.tokens.rekey_grants`, so the old version can go).

Error messages never contain a token, a key or a ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Literal

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from myi import aws
from myi.settings import Settings

Purpose = Literal["refresh", "access"]
NONCE_BYTES = 12
KEY_CACHE_S = 300


class VaultError(Exception):
    """A value cannot be encrypted or decrypted (wrong key, user, purpose, or tampered)."""


@dataclass(frozen=True)
class KeyRing:
    current: int
    keys: dict[int, bytes]

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise VaultError(f"the token key secret has no key for its current version {self.current}")
        for version, key in self.keys.items():
            if len(key) != 32:
                raise VaultError(f"token key version {version} is not 32 bytes (AES-256)")

    @classmethod
    def from_secret(cls, secret: str | dict[str, Any]) -> KeyRing:
        try:
            data = json.loads(secret) if isinstance(secret, str) else secret
            keys = {int(v): base64.b64decode(k, validate=True) for v, k in data["keys"].items()}
            return cls(current=int(data["current"]), keys=keys)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise VaultError(
                'the token key secret must look like {"current": N, "keys": {"N": "<base64>"}}'
            ) from exc


def _aad(user_id: int, purpose: Purpose) -> bytes:
    return f"myi:{purpose}:{user_id}".encode()


def encrypt(ring: KeyRing, plaintext: str, *, user_id: int, purpose: Purpose) -> tuple[bytes, int]:
    """``(nonce || ciphertext+tag, key version)``."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(ring.keys[ring.current]).encrypt(nonce, plaintext.encode(), _aad(user_id, purpose))
    return nonce + sealed, ring.current


def decrypt(ring: KeyRing, blob: bytes, version: int, *, user_id: int, purpose: Purpose) -> str:
    key = ring.keys.get(version)
    if key is None:
        raise VaultError(f"no token key of version {version}")
    data = bytes(blob)
    if len(data) <= NONCE_BYTES + 16:
        raise VaultError("the stored token is truncated")
    try:
        return AESGCM(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _aad(user_id, purpose)).decode()
    except InvalidTag:
        raise VaultError("the stored token does not decrypt for this user") from None


_providers: dict[str | None, SecretsProvider] = {}
_providers_lock = threading.Lock()


def load_keyring(settings: Settings, *, force: bool = False) -> KeyRing:
    """The key ring from Secrets Manager, cached for a few minutes per execution environment."""
    with _providers_lock:
        provider = _providers.get(settings.aws_endpoint_url)
        if provider is None:
            provider = SecretsProvider(boto3_client=aws.client("secretsmanager", settings))
            _providers[settings.aws_endpoint_url] = provider
    secret = provider.get(settings.token_key_secret_id, max_age=KEY_CACHE_S, force_fetch=force)
    if secret is None:
        raise VaultError(f"the token key secret {settings.token_key_secret_id} is empty")
    return KeyRing.from_secret(secret if isinstance(secret, str) else bytes(secret).decode())


def reset_key_cache() -> None:
    """Forget cached keys and providers (tests that switch emulators or rotate keys)."""
    with _providers_lock:
        for provider in _providers.values():
            provider.clear_cache()
        _providers.clear()


UNINITIALISED = "uninitialised"


def new_key_ring_secret(version: int = 1) -> str:
    """A key ring with one fresh random key: ``{"current": N, "keys": {"N": base64 32 bytes}}``."""
    key = base64.b64encode(os.urandom(32)).decode()
    return json.dumps({"current": version, "keys": {str(version): key}})


def ensure_key_ring(settings: Settings) -> bool:
    """Give the token-key secret its first key when it is still the placeholder the deployment
    created (``{"uninitialised": true, ...}``); a real key ring is never touched. Returns whether a
    key was created."""
    client = aws.client("secretsmanager", settings)
    value = client.get_secret_value(SecretId=settings.token_key_secret_id)["SecretString"]
    try:
        placeholder = bool(json.loads(value).get(UNINITIALISED))
    except (ValueError, AttributeError):
        placeholder = False
    if not placeholder:
        KeyRing.from_secret(value)  # a broken secret fails the deployment rather than later sign-ins
        return False
    client.put_secret_value(SecretId=settings.token_key_secret_id, SecretString=new_key_ring_secret())
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m myi.crypto rekey``: re-encrypt every stored grant under the current key version."""
    import argparse
    from datetime import UTC, datetime

    from myi import db
    from myi.auth.tokens import REKEY_BATCH, rekey_grants
    from myi.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m myi.crypto", description=main.__doc__)
    parser.add_argument("action", choices=("rekey",))
    parser.add_argument("--batch", type=int, default=REKEY_BATCH, help="rows per transaction")
    args = parser.parse_args(argv)
    settings = get_settings()
    ring = load_keyring(settings, force=True)
    with db.connect(settings) as conn:
        counts = rekey_grants(conn, ring, now=datetime.now(UTC), batch=args.batch)
        # tokens still in use (a grant quarantined as unreadable waits for a new sign-in)
        versions = conn.execute(
            """
            SELECT v, count(*) FROM (
                SELECT refresh_key_version AS v, is_valid, last_error FROM spotify_auth
                UNION ALL
                SELECT access_key_version, is_valid, last_error FROM spotify_auth
                 WHERE access_token_enc IS NOT NULL
            ) t
             WHERE is_valid OR last_error IS DISTINCT FROM 'unreadable'
             GROUP BY v ORDER BY v
            """
        ).fetchall()
    print(f"current key version: {ring.current}")
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    print("tokens by key version: " + (", ".join(f"v{v}: {n}" for v, n in versions) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
