"""Users: sign-in upserts, the ``/me`` document, and deletion."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import psycopg

from myi.auth.tokens import connection_status
from myi.db import fetch_one
from myi.ingestion import USER_LOCK_CLASS
from myi.spotify.webapi import SpotifyProfile
from myi.windows import next_month

ALL_TIME = "1970-01-01"


def upsert_from_profile(conn: psycopg.Connection[Any], profile: SpotifyProfile, *, now: datetime) -> int:
    """The user of a Spotify profile, created at first sign-in; name and image follow Spotify's."""
    row = conn.execute(
        """
        INSERT INTO users (spotify_id, display_name, image_url, last_login_at, last_seen_at, created_at,
                           updated_at)
        VALUES (%(sid)s, %(name)s, %(image)s, %(now)s, %(now)s, %(now)s, %(now)s)
        ON CONFLICT (spotify_id) DO UPDATE SET
            display_name = EXCLUDED.display_name, image_url = EXCLUDED.image_url,
            last_login_at = EXCLUDED.last_login_at, last_seen_at = EXCLUDED.last_seen_at,
            updated_at = EXCLUDED.updated_at
        RETURNING id
        """,
        {"sid": profile.id, "name": profile.display_name, "image": profile.image_url, "now": now},
    ).fetchone()
    assert row is not None
    return int(row[0])


def iso(ts: datetime | None) -> str | None:
    """API.md's timestamps: ISO 8601 UTC with milliseconds and a ``Z``."""
    if ts is None:
        return None
    utc = ts.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def me(conn: psycopg.Connection[Any], user_id: int, *, now: datetime) -> dict[str, Any] | None:
    """The ``GET /me`` document, or None when the user is gone."""
    user = fetch_one(
        conn,
        """
        SELECT u.id, u.spotify_id, u.display_name, u.image_url, u.timezone, u.created_at, u.last_ingested_at,
               u.next_sync_at, u.sync_gaps, u.sync_failures,
               COALESCE(s.plays, 0) AS plays, COALESCE(s.ms_played, 0) AS ms_played,
               COALESCE(c.tracks, 0) AS tracks, COALESCE(c.artists, 0) AS artists
          FROM users u
          LEFT JOIN stat_user s ON s.user_id = u.id AND s.grain = 0 AND s.bucket = DATE '1970-01-01'
          LEFT JOIN stat_counts c ON c.user_id = u.id AND c.grain = 0
         WHERE u.id = %s
        """,
        (user_id,),
    )
    if user is None:
        return None
    first, last = first_and_last_played(conn, user_id)
    connection = connection_status(conn, user_id, now=now)
    return {
        "id": str(user["id"]),
        "spotify_id": user["spotify_id"],
        "display_name": user["display_name"],
        "image_url": user["image_url"],
        "timezone": user["timezone"],
        "created_at": iso(user["created_at"]),
        "last_synced_at": iso(user["last_ingested_at"]),
        "spotify_connection": connection,
        "sync": {
            # paused: the last syncs failed at Spotify (down, or answering nonsense); retried
            "status": connection if connection != "ok" or not user["sync_failures"] else "paused",
            "last_synced_at": iso(user["last_ingested_at"]),
            "next_sync_at": iso(user["next_sync_at"]) if connection == "ok" else None,
            "possible_gaps": int(user["sync_gaps"]),
        },
        "totals": {
            "plays": int(user["plays"]),
            "ms_played": int(user["ms_played"]),
            "tracks": int(user["tracks"]),
            "artists": int(user["artists"]),
            "first_played_at": iso(first),
            "last_played_at": iso(last),
        },
    }


def first_and_last_played(
    conn: psycopg.Connection[Any], user_id: int
) -> tuple[datetime | None, datetime | None]:
    """The user's first and last play. The monthly statistics say which months hold them, so only
    those months' partitions are read, however long the history."""
    months = conn.execute(
        "SELECT min(bucket), max(bucket) FROM stat_user WHERE user_id = %s AND grain = 1 AND plays > 0",
        (user_id,),
    ).fetchone()
    if months is None or months[0] is None:
        return None, None
    # Buckets are months in the user's zone: a day either side covers every offset.
    row = conn.execute(
        """
        SELECT (SELECT min(played_at) FROM listening_events
                 WHERE user_id = %(user)s AND played_at >= %(a)s AND played_at < %(b)s),
               (SELECT max(played_at) FROM listening_events
                 WHERE user_id = %(user)s AND played_at >= %(c)s AND played_at < %(d)s)
        """,
        {
            "user": user_id,
            "a": datetime.combine(months[0], time(), UTC) - timedelta(days=1),
            "b": datetime.combine(next_month(months[0]), time(), UTC) + timedelta(days=1),
            "c": datetime.combine(months[1], time(), UTC) - timedelta(days=1),
            "d": datetime.combine(next_month(months[1]), time(), UTC) + timedelta(days=1),
        },
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


# Tables of a user's own rows that do not reference users (id): bulk writes skip the per-row check
# of a foreign key (migration 0006), so deleting a user removes these explicitly.
UNREFERENCED_TABLES = (
    "listening_events",
    "stat_user",
    "stat_track",
    "stat_artist",
    "stat_album",
    "stat_hour",
    "stat_counts",
)


def delete(conn: psycopg.Connection[Any], user_id: int) -> bool:
    """Remove the user, their events and statistics and, by cascade, their sessions, grant, import
    jobs and top lists, in one transaction. It holds the user's ingestion lock, so a batch in
    flight either lands before (and is deleted) or finds the user gone. Shared catalog rows stay."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (USER_LOCK_CLASS, user_id))
        for table in UNREFERENCED_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE user_id = %s", (user_id,))
        cur = conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
    return cur.rowcount > 0
