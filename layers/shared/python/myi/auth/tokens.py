"""The stored Spotify grant and the token manager every worker uses.

``TokenManager.get_access_token(user)`` returns the cached access token while more than
``MIN_LIFETIME`` of it is left; otherwise it refreshes under a row lock (``SELECT ... FOR UPDATE``), so
two workers never spend the same refresh token: the second waits and finds the fresh token. A rotated
refresh token is stored in the same transaction as the new access token. ``invalid_grant`` counts
toward quarantine (``QUARANTINE_AFTER`` in a row sets ``is_valid = false``); network errors, 5xx and
429 never do. Refresh tokens expire ``REFRESH_TOKEN_LIFETIME`` after the user authorised; such a grant
is quarantined without asking Spotify. A refresh token that no key of the ring decrypts (its key is
gone, or the ring was replaced) is quarantined at once (``last_error = 'unreadable'``): only a new
sign-in can replace it. :func:`rekey_grants` re-encrypts stored tokens under the current key version
so that old versions can be retired.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from myi import crypto
from myi.crypto import KeyRing
from myi.observability import logger
from myi.spotify.accounts import AccountsClient, TokenGrant
from myi.spotify.errors import SpotifyAuthError

MIN_LIFETIME = timedelta(minutes=10)
QUARANTINE_AFTER = 3
UNREADABLE = "unreadable"
REKEY_BATCH = 200
REFRESH_TOKEN_LIFETIME = timedelta(days=182)


class GrantUnavailable(Exception):
    """The user has no usable grant (none stored, quarantined, or expired): they must sign in again."""


class _GrantExpired(Exception):
    """The refresh token is past its six months."""


def store_grant(
    conn: psycopg.Connection[Any], ring: KeyRing, user_id: int, grant: TokenGrant, *, now: datetime
) -> None:
    """Store a fresh grant from a sign-in: a new authorisation restores a quarantined grant."""
    assert grant.refresh_token is not None
    refresh_enc, refresh_v = crypto.encrypt(ring, grant.refresh_token, user_id=user_id, purpose="refresh")
    access_enc, access_v = crypto.encrypt(ring, grant.access_token, user_id=user_id, purpose="access")
    conn.execute(
        """
        INSERT INTO spotify_auth (user_id, refresh_token_enc, refresh_key_version, access_token_enc,
                                  access_key_version, access_expires_at, scope, authorized_at, is_valid,
                                  consecutive_failures, last_error, last_refreshed_at, updated_at)
        VALUES (%(user)s, %(r)s, %(rv)s, %(a)s, %(av)s, %(exp)s, %(scope)s, %(now)s, true, 0, NULL, %(now)s,
                %(now)s)
        ON CONFLICT (user_id) DO UPDATE SET
            refresh_token_enc = EXCLUDED.refresh_token_enc,
            refresh_key_version = EXCLUDED.refresh_key_version,
            access_token_enc = EXCLUDED.access_token_enc, access_key_version = EXCLUDED.access_key_version,
            access_expires_at = EXCLUDED.access_expires_at, scope = EXCLUDED.scope,
            authorized_at = EXCLUDED.authorized_at, is_valid = true, consecutive_failures = 0,
            last_error = NULL, last_refreshed_at = EXCLUDED.last_refreshed_at,
            updated_at = EXCLUDED.updated_at
        """,
        {
            "user": user_id,
            "r": refresh_enc,
            "rv": refresh_v,
            "a": access_enc,
            "av": access_v,
            "exp": now + timedelta(seconds=grant.expires_in),
            "scope": grant.scope,
            "now": now,
        },
    )


def connection_status(conn: psycopg.Connection[Any], user_id: int, *, now: datetime) -> str:
    """API.md's ``spotify_connection``: ``ok`` or ``reconnect_required``."""
    row = conn.execute(
        "SELECT is_valid, authorized_at FROM spotify_auth WHERE user_id = %s", (user_id,)
    ).fetchone()
    if row is None or not row[0] or row[1] + REFRESH_TOKEN_LIFETIME <= now:
        return "reconnect_required"
    return "ok"


class TokenManager:
    def __init__(
        self,
        conn: psycopg.Connection[Any],
        accounts: AccountsClient,
        keyring: Callable[[], KeyRing],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._conn = conn
        self._accounts = accounts
        self._keyring = keyring
        self._clock = clock

    def get_access_token(self, user_id: int) -> str:
        """A valid access token for ``user_id``. Raises :class:`GrantUnavailable` when the user must
        sign in again, :class:`~myi.spotify.errors.SpotifyUnavailable` when Spotify is down for now."""
        try:
            cached = self._cached(user_id, lock=False)
        except _GrantExpired:
            cached = None  # quarantined under the lock, below
        if cached is not None:
            return cached
        reason: str | None = None
        with self._conn.transaction():
            try:
                # another worker may have refreshed while this one waited for the lock
                cached = self._cached(user_id, lock=True)
            except _GrantExpired:
                self._conn.execute(
                    "UPDATE spotify_auth SET is_valid = false, last_error = 'refresh_token_expired', "
                    "updated_at = %s WHERE user_id = %s",
                    (self._clock(), user_id),
                )
                reason = "it is older than six months"
            if cached is not None:
                return cached
            if reason is None:
                token, reason = self._refresh(user_id)
                if token is not None:
                    return token
        raise GrantUnavailable(f"the Spotify grant of user {user_id} is unusable: {reason}")

    def invalidate(self, user_id: int) -> None:
        """Forget the cached access token (Spotify refused it): the next call refreshes."""
        self._conn.execute(
            "UPDATE spotify_auth SET access_expires_at = %s WHERE user_id = %s", (self._clock(), user_id)
        )

    def token_source(self, user_id: int) -> Callable[[bool], str]:
        """For :class:`~myi.spotify.client.SpotifyClient`: the token, refreshed when ``force``."""

        def source(force: bool) -> str:
            if force:
                self.invalidate(user_id)
            return self.get_access_token(user_id)

        return source

    def _refresh(self, user_id: int) -> tuple[str | None, str | None]:
        """Refresh under the row lock: ``(access token, None)``, or ``(None, why not)`` with the
        failure recorded (it must commit, so it is not raised)."""
        row = self._conn.execute(
            "SELECT refresh_token_enc, refresh_key_version FROM spotify_auth WHERE user_id = %s", (user_id,)
        ).fetchone()
        assert row is not None  # _cached(lock=True) raised otherwise
        ring = self._keyring()
        if row[1] not in ring.keys:  # perhaps a newer key than this environment's cached ring
            crypto.reset_key_cache()
            ring = self._keyring()
        now = self._clock()
        try:
            refresh_token = crypto.decrypt(ring, row[0], row[1], user_id=user_id, purpose="refresh")
        except crypto.VaultError:
            _quarantine_unreadable(self._conn, user_id, now)
            return None, "its refresh token cannot be decrypted with any key of the ring"
        try:
            grant = self._accounts.refresh(refresh_token)
        except SpotifyAuthError as exc:
            if exc.code != "invalid_grant":
                raise  # our client's configuration, not this user's grant: nothing to count
            self._record_failure(user_id, exc.code, now)
            return None, "Spotify answered invalid_grant"
        self._store_refreshed(ring, user_id, grant, now)
        return grant.access_token, None

    def _cached(self, user_id: int, *, lock: bool) -> str | None:
        row = self._conn.execute(
            "SELECT is_valid, authorized_at, access_token_enc, access_key_version, access_expires_at "
            "FROM spotify_auth WHERE user_id = %s" + (" FOR UPDATE" if lock else ""),
            (user_id,),
        ).fetchone()
        if row is None:
            raise GrantUnavailable(f"user {user_id} has no Spotify grant")
        is_valid, authorized_at, access_enc, access_v, expires_at = row
        now = self._clock()
        if not is_valid:
            raise GrantUnavailable(f"the Spotify grant of user {user_id} is quarantined")
        if authorized_at + REFRESH_TOKEN_LIFETIME <= now:
            raise _GrantExpired()
        if access_enc is None or expires_at is None or expires_at - now <= MIN_LIFETIME:
            return None
        try:
            return crypto.decrypt(self._keyring(), access_enc, access_v, user_id=user_id, purpose="access")
        except crypto.VaultError:
            logger.warning("cached access token unreadable; refreshing", extra={"user_id": user_id})
            return None

    def _store_refreshed(self, ring: KeyRing, user_id: int, grant: TokenGrant, now: datetime) -> None:
        access_enc, access_v = crypto.encrypt(ring, grant.access_token, user_id=user_id, purpose="access")
        params: dict[str, Any] = {
            "user": user_id,
            "a": access_enc,
            "av": access_v,
            "exp": now + timedelta(seconds=grant.expires_in),
            "now": now,
            "r": None,
            "rv": None,
        }
        if grant.refresh_token:  # rotated: the old one is spent
            params["r"], params["rv"] = crypto.encrypt(
                ring, grant.refresh_token, user_id=user_id, purpose="refresh"
            )
        self._conn.execute(
            """
            UPDATE spotify_auth SET
                access_token_enc = %(a)s, access_key_version = %(av)s, access_expires_at = %(exp)s,
                refresh_token_enc = COALESCE(%(r)s, refresh_token_enc),
                refresh_key_version = COALESCE(%(rv)s, refresh_key_version),
                consecutive_failures = 0, last_error = NULL, last_refreshed_at = %(now)s, updated_at = %(now)s
             WHERE user_id = %(user)s
            """,
            params,
        )

    def _record_failure(self, user_id: int, code: str, now: datetime) -> None:
        row = self._conn.execute(
            """
            UPDATE spotify_auth SET consecutive_failures = consecutive_failures + 1,
                   is_valid = consecutive_failures + 1 < %(limit)s, last_error = %(code)s,
                   updated_at = %(now)s
             WHERE user_id = %(user)s
            RETURNING consecutive_failures, is_valid
            """,
            {"user": user_id, "code": code, "now": now, "limit": QUARANTINE_AFTER},
        ).fetchone()
        if row is not None and not row[1]:
            logger.warning("Spotify grant quarantined", extra={"user_id": user_id, "failures": row[0]})


def _quarantine_unreadable(conn: psycopg.Connection[Any], user_id: int, now: datetime) -> None:
    conn.execute(
        "UPDATE spotify_auth SET is_valid = false, last_error = %s, updated_at = %s WHERE user_id = %s",
        (UNREADABLE, now, user_id),
    )
    logger.warning("Spotify grant unreadable with the current keys; quarantined", extra={"user_id": user_id})


def rekey_grants(
    conn: psycopg.Connection[Any], ring: KeyRing, *, now: datetime, batch: int = REKEY_BATCH
) -> dict[str, int]:
    """Re-encrypt every stored token that uses another key version than the ring's current one, in
    batches of ``batch`` rows, each batch one transaction holding its rows' locks (a refresh of the
    same user waits for it, and vice versa). Idempotent. A refresh token that does not decrypt is
    quarantined (a new sign-in restores the grant); an unreadable cached access token is dropped (the
    next use refreshes it). Rows of a key version newer than the ring knows are left alone. Returns
    the counts: ``rekeyed``, ``already_current``, ``unreadable`` (quarantined now),
    ``access_dropped``, ``skipped`` (already quarantined as unreadable, or of an unknown newer key)."""
    counts = {"rekeyed": 0, "already_current": 0, "unreadable": 0, "access_dropped": 0, "skipped": 0}
    newest = max(ring.keys)
    params: dict[str, Any] = {"cur": ring.current, "newest": newest, "unreadable": UNREADABLE}
    row = conn.execute(
        """
        SELECT count(*) FILTER (WHERE refresh_key_version = %(cur)s
                                  AND (access_token_enc IS NULL OR access_key_version = %(cur)s)
                                  AND NOT (NOT is_valid AND last_error IS NOT DISTINCT FROM %(unreadable)s)),
               count(*) FILTER (WHERE (NOT is_valid AND last_error = %(unreadable)s)
                                   OR refresh_key_version > %(newest)s
                                   OR access_key_version > %(newest)s)
          FROM spotify_auth
        """,
        params,
    ).fetchone()
    assert row is not None
    counts["already_current"], counts["skipped"] = int(row[0]), int(row[1])
    after = -1
    while True:
        with conn.transaction():
            rows = conn.execute(
                """
                SELECT user_id, refresh_token_enc, refresh_key_version, access_token_enc, access_key_version
                  FROM spotify_auth
                 WHERE user_id > %(after)s
                   AND (refresh_key_version <> %(cur)s
                        OR (access_token_enc IS NOT NULL AND access_key_version <> %(cur)s))
                   AND NOT (NOT is_valid AND last_error IS NOT DISTINCT FROM %(unreadable)s)
                   AND refresh_key_version <= %(newest)s
                   AND (access_key_version IS NULL OR access_key_version <= %(newest)s)
                 ORDER BY user_id
                 LIMIT %(batch)s
                   FOR UPDATE
                """,
                {**params, "after": after, "batch": batch},
            ).fetchall()
            for user_id, refresh_enc, refresh_v, access_enc, access_v in rows:
                _rekey_row(
                    conn, ring, int(user_id), refresh_enc, refresh_v, access_enc, access_v, now, counts
                )
        if len(rows) < batch:
            return counts
        after = int(rows[-1][0])


def _rekey_row(
    conn: psycopg.Connection[Any],
    ring: KeyRing,
    user_id: int,
    refresh_enc: bytes,
    refresh_v: int,
    access_enc: bytes | None,
    access_v: int | None,
    now: datetime,
    counts: dict[str, int],
) -> None:
    try:
        refresh = crypto.decrypt(ring, refresh_enc, refresh_v, user_id=user_id, purpose="refresh")
    except crypto.VaultError:
        _quarantine_unreadable(conn, user_id, now)
        counts["unreadable"] += 1
        return
    new_refresh, new_refresh_v = crypto.encrypt(ring, refresh, user_id=user_id, purpose="refresh")
    new_access: bytes | None = None
    new_access_v: int | None = None
    if access_enc is not None and access_v is not None:
        try:
            access = crypto.decrypt(ring, access_enc, access_v, user_id=user_id, purpose="access")
        except crypto.VaultError:
            counts["access_dropped"] += 1
        else:
            new_access, new_access_v = crypto.encrypt(ring, access, user_id=user_id, purpose="access")
    conn.execute(
        """
        UPDATE spotify_auth SET refresh_token_enc = %(r)s, refresh_key_version = %(rv)s,
               access_token_enc = %(a)s, access_key_version = %(av)s,
               access_expires_at = CASE WHEN %(a)s::bytea IS NULL THEN NULL ELSE access_expires_at END,
               updated_at = %(now)s
         WHERE user_id = %(user)s
        """,
        {
            "r": new_refresh,
            "rv": new_refresh_v,
            "a": new_access,
            "av": new_access_v,
            "now": now,
            "user": user_id,
        },
    )
    counts["rekeyed"] += 1
