"""Spotify's own top lists (``/me/top/tracks`` and ``/me/top/artists``, three terms), kept per user.

Each set is replaced atomically per user, kind and term. How old a set may get depends on the user's
activity tier (DESIGN.md): tier 1 (signed in within 48 h) 24 h, tier 2 (within 7 days) 72 h, both
refreshed by the daily sweep; tier 3 only on demand, when the SPA asks and the set is older than the
tier-2 age. A request never waits for Spotify: it gets what is stored and the refresh is queued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from myi.auth.tokens import GrantUnavailable, TokenManager
from myi.catalog import name_key
from myi.db import fetch_all
from myi.ingestion import apply_track_metadata
from myi.observability import logger
from myi.settings import Settings
from myi.spotify.client import SpotifyClient, artist_ref, track_ref
from myi.spotify.errors import SpotifyRateLimited

KINDS = ("tracks", "artists")
TERMS = ("short_term", "medium_term", "long_term")


def tier(last_seen_at: datetime | None, now: datetime) -> int:
    """Activity tier from when the user was last seen (signed in or used MYI)."""
    if last_seen_at is None:
        return 3
    age = now - last_seen_at
    return 1 if age <= timedelta(hours=48) else 2 if age <= timedelta(days=7) else 3


def max_age(settings: Settings, user_tier: int) -> timedelta:
    hours = settings.top_refresh_tier1_h if user_tier == 1 else settings.top_refresh_tier2_h
    return timedelta(hours=hours)


def refreshed_at(conn: psycopg.Connection[Any], user_id: int, kind: str, term: str) -> datetime | None:
    row = conn.execute(
        "SELECT refreshed_at FROM spotify_top_refresh WHERE user_id = %s AND kind = %s AND term = %s",
        (user_id, kind, term),
    ).fetchone()
    return row[0] if row else None


def is_stale(
    settings: Settings, conn: psycopg.Connection[Any], user_id: int, kind: str, term: str, now: datetime
) -> bool:
    row = conn.execute("SELECT last_seen_at FROM users WHERE id = %s", (user_id,)).fetchone()
    if row is None:
        return False
    at = refreshed_at(conn, user_id, kind, term)
    return at is None or now - at > max_age(settings, tier(row[0], now))


def read(conn: psycopg.Connection[Any], user_id: int, kind: str, term: str) -> dict[str, Any]:
    """The stored set, as ``GET /me/spotify-top/{kind}`` shows it."""
    from myi.users import iso

    if kind == "tracks":
        rows = fetch_all(
            conn,
            """
            SELECT s.rank, t.id, t.spotify_id, t.name, al.image_url, al.id AS album_id,
                   al.name AS album_name,
                   (SELECT json_agg(json_build_object('id', a.id::text, 'name', a.name) ORDER BY ta.position)
                      FROM track_artists ta JOIN artists a ON a.id = ta.artist_id
                     WHERE ta.track_id = t.id) AS artists
              FROM spotify_top_tracks s JOIN tracks t ON t.id = s.track_id
              LEFT JOIN albums al ON al.id = t.album_id
             WHERE s.user_id = %s AND s.term = %s ORDER BY s.rank
            """,
            (user_id, term),
        )
        items = [
            {
                "rank": r["rank"],
                "id": str(r["id"]),
                "spotify_id": r["spotify_id"],
                "name": r["name"],
                "image_url": r["image_url"],
                "artists": r["artists"] or [],
                "album": {"id": str(r["album_id"]), "name": r["album_name"]} if r["album_id"] else None,
            }
            for r in rows
        ]
    else:
        rows = fetch_all(
            conn,
            "SELECT s.rank, a.id, a.spotify_id, a.name, a.image_url FROM spotify_top_artists s "
            "JOIN artists a ON a.id = s.artist_id WHERE s.user_id = %s AND s.term = %s ORDER BY s.rank",
            (user_id, term),
        )
        items = [
            {
                "rank": r["rank"],
                "id": str(r["id"]),
                "spotify_id": r["spotify_id"],
                "name": r["name"],
                "image_url": r["image_url"],
            }
            for r in rows
        ]
    return {"term": term, "refreshed_at": iso(refreshed_at(conn, user_id, kind, term)), "items": items}


def refresh(
    conn: psycopg.Connection[Any],
    spotify: SpotifyClient,
    tokens: TokenManager,
    user_id: int,
    kind: str,
    term: str,
    *,
    now: datetime | None = None,
) -> int:
    """Fetch one set from Spotify and replace the stored one; returns its size."""
    now = now or datetime.now(UTC)
    items = spotify.top(tokens.token_source(user_id), kind, term)
    if kind == "tracks":
        refs = [track_ref(i) for i in items]
        apply_track_metadata(conn, refs)
        ids = [r.spotify_id for r in refs]
        rows = conn.execute("SELECT spotify_id, id FROM tracks WHERE spotify_id = ANY(%s)", (ids,)).fetchall()
    else:
        artists = [a for a in map(artist_ref, items) if a.spotify_id]
        for artist in artists:
            conn.execute(
                """
                INSERT INTO artists (spotify_id, name, name_key, image_url) VALUES (%s, %s, %s, %s)
                ON CONFLICT (spotify_id) DO UPDATE SET name = EXCLUDED.name, name_key = EXCLUDED.name_key,
                    image_url = COALESCE(EXCLUDED.image_url, artists.image_url), updated_at = now()
                """,
                (artist.spotify_id, artist.name, name_key(artist.name), artist.image_url),
            )
        ids = [str(a.spotify_id) for a in artists]
        rows = conn.execute(
            "SELECT spotify_id, id FROM artists WHERE spotify_id = ANY(%s)", (ids,)
        ).fetchall()
    by_spotify = {r[0]: int(r[1]) for r in rows}
    ranked = [(rank, by_spotify[sid]) for rank, sid in enumerate(ids, start=1) if sid in by_spotify]
    table, column = (
        ("spotify_top_tracks", "track_id") if kind == "tracks" else ("spotify_top_artists", "artist_id")
    )
    with conn.transaction():
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE user_id = %s AND term = %s").format(sql.Identifier(table)),
            (user_id, term),
        )
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} (user_id, term, rank, {}) VALUES (%s, %s, %s, %s)").format(
                    sql.Identifier(table), sql.Identifier(column)
                ),
                [(user_id, term, rank, ident) for rank, ident in ranked],
            )
        conn.execute(
            "INSERT INTO spotify_top_refresh (user_id, kind, term, refreshed_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (user_id, kind, term) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at",
            (user_id, kind, term, now),
        )
    return len(ranked)


@dataclass
class TopDeps:
    settings: Settings
    conn: psycopg.Connection[Any]
    sqs: Any
    spotify: SpotifyClient
    tokens: TokenManager


def request(
    sqs: Any,
    settings: Settings,
    user_id: int,
    kind: str | None = None,
    term: str | None = None,
    delay_s: int = 0,
) -> None:
    url = settings.require("top_stats_queue_url", "TOP_STATS_QUEUE_URL")
    body: dict[str, Any] = {"user_id": user_id}
    if kind and term:
        body.update(kind=kind, term=term)
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body), DelaySeconds=max(0, min(900, delay_s)))


def handle_message(deps: TopDeps, body: str) -> int:
    """Refresh what a message asks for (one set, or all six of a user); returns sets refreshed."""
    try:
        message = json.loads(body)
        user_id = int(message["user_id"])
    except (ValueError, KeyError, TypeError):
        logger.warning("top-list message without a user id; dropped")
        return 0
    if deps.conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,)).fetchone() is None:
        return 0
    wanted = (
        [(message["kind"], message["term"])]
        if message.get("kind") in KINDS and message.get("term") in TERMS
        else [(k, t) for k in KINDS for t in TERMS]
    )
    done = 0
    for kind, term in wanted:
        try:
            refresh(deps.conn, deps.spotify, deps.tokens, user_id, kind, term)
        except GrantUnavailable:
            logger.info("no usable grant; top lists not refreshed", extra={"user_id": user_id})
            return done
        except SpotifyRateLimited as exc:
            request(deps.sqs, deps.settings, user_id, kind, term, int(exc.retry_after_s or 1) + 1)
            continue
        done += 1
    return done


def sweep(settings: Settings, conn: psycopg.Connection[Any], sqs: Any, *, now: datetime | None = None) -> int:
    """The daily sweep: enqueue tier 1 and 2 users with a stale set."""
    now = now or datetime.now(UTC)
    rows = conn.execute(
        """
        SELECT u.id FROM users u JOIN spotify_auth a ON a.user_id = u.id AND a.is_valid
         WHERE u.last_seen_at >= %(tier2)s
           AND (SELECT count(*) FROM spotify_top_refresh r WHERE r.user_id = u.id
                   AND r.refreshed_at > %(now)s - CASE WHEN u.last_seen_at >= %(tier1)s
                                                       THEN %(age1)s ELSE %(age2)s END) < 6
        """,
        {
            "now": now,
            "tier1": now - timedelta(hours=48),
            "tier2": now - timedelta(days=7),
            "age1": timedelta(hours=settings.top_refresh_tier1_h),
            "age2": timedelta(hours=settings.top_refresh_tier2_h),
        },
    ).fetchall()
    for (user_id,) in rows:
        request(sqs, settings, int(user_id))
    return len(rows)
