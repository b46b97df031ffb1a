"""PKCE (RFC 7636, S256) and the login state kept in DynamoDB between login and callback.

The state item holds the verifier and where to return; it expires after ``PKCE_TTL_SECONDS`` and is
consumed by a conditional delete, so a state works once even when two callbacks race.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from myi import aws
from myi.settings import Settings

VERIFIER_BYTES = 64  # 86 characters of [A-Za-z0-9_-], within RFC 7636's 43-128


def new_verifier() -> str:
    return secrets.token_urlsafe(VERIFIER_BYTES)


def challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    return secrets.token_urlsafe(32)


def safe_return_to(value: str | None) -> str | None:
    """A relative path on the SPA, or None when ``value`` could leave it (open redirect)."""
    if value is None or value == "":
        return "/"
    if len(value) > 512 or not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if any(ord(ch) < 0x20 or ch in "\\" for ch in value):
        return None
    return value


@dataclass(frozen=True)
class LoginState:
    verifier: str = field(repr=False)
    return_to: str


class StateStore:
    def __init__(
        self, settings: Settings, *, client: Any = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._table = settings.state_table
        self._ttl = settings.pkce_ttl_s
        self._client = client or aws.client("dynamodb", settings)
        self._clock = clock

    @staticmethod
    def _key(state: str) -> dict[str, Any]:
        # Only a digest of the state is used as the key: the table never holds a usable state.
        return {"pk": {"S": "pkce#" + hashlib.sha256(state.encode()).hexdigest()}}

    def put(self, state: str, login: LoginState) -> None:
        self._client.put_item(
            TableName=self._table,
            Item={
                **self._key(state),
                "verifier": {"S": login.verifier},
                "return_to": {"S": login.return_to},
                "expires_at": {"N": str(int(self._clock()) + self._ttl)},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def consume(self, state: str) -> LoginState | None:
        """The login of ``state``, removed at once; None when unknown, expired or used."""
        if not state or len(state) > 256:
            return None
        try:
            out = self._client.delete_item(
                TableName=self._table,
                Key=self._key(state),
                ConditionExpression="attribute_exists(pk)",
                ReturnValues="ALL_OLD",
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return None
        item = out.get("Attributes") or {}
        # DynamoDB's TTL deletes late (up to days): the expiry is checked here.
        if not item or float(item["expires_at"]["N"]) <= self._clock():
            return None
        return LoginState(verifier=item["verifier"]["S"], return_to=item["return_to"]["S"])
