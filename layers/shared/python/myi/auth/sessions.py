"""Sessions: an opaque random id in the ``myi_session`` cookie, stored server-side as a digest.

A session lives ``SESSION_TTL_DAYS`` from its last use (sliding; the row and the cookie are renewed at
most once every ``RENEW_AFTER``) and never longer than ``SESSION_MAX_DAYS`` from its creation
(absolute), and is revoked by logout (of this session, or of every session of the user with
:func:`revoke_all`) or by deleting the user. Using a session
is the user being seen: ``users.last_seen_at`` (sync eligibility, activity tiers, dormancy) moves at
most once every ``SEEN_EVERY``, read with the session and written only when it is older. Only SHA-256
digests are stored, so a copy of the table opens no session; the row is bound to its user (see
migration 0002), so a row moved to another user opens nothing either.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from aws_lambda_powertools.shared.cookies import Cookie, SameSite

from myi.settings import Settings

COOKIE = "myi_session"
RENEW_AFTER = timedelta(hours=1)
SEEN_EVERY = timedelta(hours=1)
_TOKEN_BYTES = 32


@dataclass(frozen=True)
class Session:
    user_id: int
    expires_at: datetime
    renewed: bool  # the expiry moved: send the cookie again
    seen: bool = False  # users.last_seen_at moved to now


def _digest(raw: str) -> bytes:
    return hashlib.sha256(raw.encode()).digest()


def _binding(raw: str, user_id: int) -> bytes:
    return hashlib.sha256(f"{raw}:{user_id}".encode()).digest()


def create(
    conn: psycopg.Connection[Any], user_id: int, settings: Settings, *, now: datetime, user_agent: str | None
) -> str:
    """A new session for ``user_id``; returns the cookie value (never stored)."""
    raw = secrets.token_urlsafe(_TOKEN_BYTES)
    conn.execute(
        "INSERT INTO sessions (id_hash, user_mac, user_id, created_at, last_seen_at, expires_at, user_agent) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            _digest(raw),
            _binding(raw, user_id),
            user_id,
            now,
            now,
            now + timedelta(days=min(settings.session_ttl_days, settings.session_max_days)),
            (user_agent or "")[:300] or None,
        ),
    )
    return raw


def resolve(
    conn: psycopg.Connection[Any], raw: str | None, settings: Settings, *, now: datetime
) -> Session | None:
    """The live session of a cookie value, renewed when due; None when there is none."""
    if not raw or len(raw) > 128:
        return None
    row = conn.execute(
        "SELECT s.user_id, s.user_mac, s.expires_at, s.last_seen_at, u.last_seen_at, s.created_at "
        "FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.id_hash = %s AND s.revoked_at IS NULL AND s.expires_at > %s AND s.created_at > %s",
        (_digest(raw), now, now - timedelta(days=settings.session_max_days)),
    ).fetchone()
    if row is None:
        return None
    user_id, user_mac = int(row[0]), bytes(row[1])
    expires_at: datetime = row[2]
    last_used_at: datetime = row[3]
    user_seen_at: datetime | None = row[4]
    ends_at: datetime = row[5] + timedelta(days=settings.session_max_days)
    if not secrets.compare_digest(user_mac, _binding(raw, user_id)):
        return None
    seen = user_seen_at is None or now - user_seen_at >= SEEN_EVERY
    if seen:
        conn.execute(
            "UPDATE users SET last_seen_at = %(now)s WHERE id = %(user)s "
            "AND (last_seen_at IS NULL OR last_seen_at < %(now)s - %(every)s)",
            {"now": now, "user": user_id, "every": SEEN_EVERY},
        )
    if now - last_used_at < RENEW_AFTER:
        return Session(user_id, expires_at, renewed=False, seen=seen)
    expires_at = min(now + timedelta(days=settings.session_ttl_days), ends_at)
    conn.execute(
        "UPDATE sessions SET last_seen_at = %s, expires_at = %s WHERE id_hash = %s AND revoked_at IS NULL",
        (now, expires_at, _digest(raw)),
    )
    return Session(user_id, expires_at, renewed=True, seen=seen)


def revoke(conn: psycopg.Connection[Any], raw: str | None, *, now: datetime) -> bool:
    if not raw or len(raw) > 128:
        return False
    cur = conn.execute(
        "UPDATE sessions SET revoked_at = %s WHERE id_hash = %s AND revoked_at IS NULL", (now, _digest(raw))
    )
    return cur.rowcount > 0


def revoke_all(conn: psycopg.Connection[Any], raw: str | None, settings: Settings, *, now: datetime) -> int:
    """Revoke every session of the user whose live session ``raw`` is (logout everywhere); returns
    how many were revoked, this one included. A cookie that opens no session revokes nothing."""
    if not raw or len(raw) > 128:
        return 0
    row = conn.execute(
        "SELECT user_id, user_mac FROM sessions "
        "WHERE id_hash = %s AND revoked_at IS NULL AND expires_at > %s AND created_at > %s",
        (_digest(raw), now, now - timedelta(days=settings.session_max_days)),
    ).fetchone()
    if row is None or not secrets.compare_digest(bytes(row[1]), _binding(raw, int(row[0]))):
        return 0
    cur = conn.execute(
        "UPDATE sessions SET revoked_at = %s WHERE user_id = %s AND revoked_at IS NULL", (now, int(row[0]))
    )
    return cur.rowcount


def purge(conn: psycopg.Connection[Any], *, now: datetime, keep: timedelta = timedelta(days=7)) -> int:
    """Delete sessions that expired or were revoked more than ``keep`` ago (daily housekeeping);
    returns how many. They open nothing already; this only keeps the table small."""
    cur = conn.execute(
        "DELETE FROM sessions WHERE expires_at < %(cut)s OR revoked_at < %(cut)s", {"cut": now - keep}
    )
    return cur.rowcount


def cookie_value(cookies: list[str] | None, cookie: str = COOKIE) -> str | None:
    """The ``myi_session`` (or ``cookie``) value among a request's cookies (API Gateway v2 ``cookies``)."""
    for item in cookies or ():
        name, _, value = item.strip().partition("=")
        if name == cookie and value:
            return value
    return None


def set_cookie(raw: str, settings: Settings) -> Cookie:
    return Cookie(
        COOKIE,
        raw,
        path="/",
        secure=settings.api_is_https,
        http_only=True,
        max_age=settings.session_ttl_days * 86400,
        same_site=SameSite.LAX_MODE,
    )


def clear_cookie(settings: Settings) -> Cookie:
    return Cookie(
        COOKIE,
        "",
        path="/",
        secure=settings.api_is_https,
        http_only=True,
        max_age=0,
        same_site=SameSite.LAX_MODE,
    )
