"""PKCE (RFC 7636, S256) and the login state kept in DynamoDB between login and callback.

The state item holds the verifier, where to return and a digest of the browser binding (the
``myi_login`` cookie set by ``/auth/login``); it expires after ``PKCE_TTL_SECONDS`` and is consumed by
a conditional delete that also checks the binding, so a state works once even when two callbacks race,
only in the browser that started the sign-in, and a callback from another browser leaves it unspent.
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


def new_browser_binding() -> str:
    """The value of the ``myi_login`` cookie that ties a state to the browser that asked for it."""
    return secrets.token_urlsafe(32)


def safe_return_to(value: str | None) -> str | None:
    """A relative path on the SPA, or None when ``value`` could leave it (open redirect).

    Only printable ASCII without spaces or backslashes is kept (a path from the SPA is already
    percent-encoded): browsers drop tabs and newlines and read ``\\`` as ``/``, and a header with
    other characters may not be sent at all, so anything else is refused rather than guessed at.
    """
    if value is None or value == "":
        return "/"
    if len(value) > 512 or not value.startswith("/") or value.startswith("//"):
        return None
    if any(not ("!" <= ch <= "~") or ch == "\\" for ch in value):
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

    @staticmethod
    def _browser(browser: str) -> dict[str, str]:
        # Likewise only a digest of the browser binding: the table cannot forge the cookie.
        return {"S": hashlib.sha256(browser.encode()).hexdigest()}

    def put(self, state: str, login: LoginState, *, browser: str) -> None:
        """Keep ``login`` under ``state``, usable only with the cookie value ``browser``."""
        if not browser:
            raise ValueError("a login state needs a browser binding")
        self._client.put_item(
            TableName=self._table,
            Item={
                **self._key(state),
                "verifier": {"S": login.verifier},
                "return_to": {"S": login.return_to},
                "browser": self._browser(browser),
                "expires_at": {"N": str(int(self._clock()) + self._ttl)},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def consume(self, state: str, browser: str | None) -> LoginState | None:
        """The login of ``state``, removed at once; None when unknown, expired, used, or bound to
        another browser than ``browser`` (the ``myi_login`` cookie). A wrong or missing binding
        leaves the state as it was: it cannot be spent from another browser."""
        if not state or len(state) > 256 or not browser or len(browser) > 256:
            return None
        try:
            out = self._client.delete_item(
                TableName=self._table,
                Key=self._key(state),
                ConditionExpression="attribute_exists(pk) AND browser = :browser",
                ExpressionAttributeValues={":browser": self._browser(browser)},
                ReturnValues="ALL_OLD",
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return None
        item = out.get("Attributes") or {}
        # DynamoDB's TTL deletes late (up to days): the expiry is checked here.
        if not item or float(item["expires_at"]["N"]) <= self._clock():
            return None
        return LoginState(verifier=item["verifier"]["S"], return_to=item["return_to"]["S"])
