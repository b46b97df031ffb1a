"""Catalog enrichment: the gaps ingestion records (``catalog_gaps``) filled from Spotify.

- A track without duration or album: its track object (single read, or batch where allowed).
- A provisional artist or album (known by name from an export): the track object of one of its
  tracks that has an id; the catalog upsert then merges the provisional row into the real one,
  moving every user's statistics exactly (``myi.ingestion.apply_track_metadata``).
- An artist without an image: its artist object.

Gaps are leased (``next_attempt_at`` moves on) so concurrent workers take different ones. A failed
lookup is retried with growing back-off (2^attempts minutes, at most a day), never locked away for a
fixed day; a rate-limited one goes back for exactly its ``Retry-After`` and is never mistaken for
"not found"; an item Spotify does not have is looked at again after a month.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from myi.ingestion import apply_track_metadata
from myi.observability import logger
from myi.settings import Settings
from myi.spotify.client import SpotifyClient, image_url, track_ref
from myi.spotify.errors import SpotifyError, SpotifyRateLimited

LEASE = timedelta(minutes=10)
NOT_FOUND_RETRY = timedelta(days=30)
MAX_BACKOFF = timedelta(days=1)


@dataclass
class EnrichmentResult:
    resolved: int = 0
    not_found: int = 0
    failed: int = 0
    rate_limited: bool = False
    remaining: int = 0


def _lease(conn: psycopg.Connection[Any], limit: int, now: datetime) -> list[tuple[str, int, str, int]]:
    rows = conn.execute(
        """
        UPDATE catalog_gaps g SET next_attempt_at = %(lease)s
          FROM (SELECT kind, entity_id FROM catalog_gaps WHERE next_attempt_at <= %(now)s
                 ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) due
         WHERE g.kind = due.kind AND g.entity_id = due.entity_id
        RETURNING g.kind, g.entity_id, g.reason, g.attempts
        """,
        {"now": now, "lease": now + LEASE, "limit": limit},
    ).fetchall()
    return [(str(r[0]), int(r[1]), str(r[2]), int(r[3])) for r in rows]


def _track_for(conn: psycopg.Connection[Any], kind: str, entity_id: int) -> str | None:
    """The Spotify id of a track that tells what a gap needs to know."""
    if kind == "track":
        sql = "SELECT spotify_id FROM tracks WHERE id = %s"
    elif kind == "artist":
        sql = (
            "SELECT t.spotify_id FROM track_artists ta JOIN tracks t ON t.id = ta.track_id "
            "WHERE ta.artist_id = %s AND t.spotify_id IS NOT NULL LIMIT 1"
        )
    else:
        sql = "SELECT spotify_id FROM tracks WHERE album_id = %s AND spotify_id IS NOT NULL LIMIT 1"
    row = conn.execute(sql, (entity_id,)).fetchone()
    return str(row[0]) if row and row[0] else None


def _done(conn: psycopg.Connection[Any], gaps: list[tuple[str, int]]) -> None:
    """Remove gaps that are filled (a merged provisional row is gone; a track has what it lacked)."""
    for kind, entity_id in gaps:
        conn.execute(
            """
            DELETE FROM catalog_gaps g WHERE g.kind = %(kind)s AND g.entity_id = %(id)s AND NOT EXISTS (
                SELECT 1 FROM tracks t WHERE %(kind)s = 'track' AND t.id = %(id)s
                   AND (t.duration_ms IS NULL OR t.album_id IS NULL)
                UNION ALL
                SELECT 1 FROM artists a WHERE %(kind)s = 'artist' AND a.id = %(id)s
                   AND (a.spotify_id IS NULL OR a.image_url IS NULL)
                UNION ALL
                SELECT 1 FROM albums al WHERE %(kind)s = 'album' AND al.id = %(id)s AND al.spotify_id IS NULL)
            """,
            {"kind": kind, "id": entity_id},
        )


def _retry(
    conn: psycopg.Connection[Any],
    kind: str,
    entity_id: int,
    attempts: int,
    error: str,
    at: datetime,
    *,
    count: bool,
) -> None:
    conn.execute(
        "UPDATE catalog_gaps SET attempts = attempts + %s, last_error = %s, next_attempt_at = %s "
        "WHERE kind = %s AND entity_id = %s",
        (1 if count else 0, error[:200], at, kind, entity_id),
    )


def enrich(
    settings: Settings, conn: psycopg.Connection[Any], spotify: SpotifyClient, *, now: datetime | None = None
) -> EnrichmentResult:
    """Work through the gaps that are due, ``ENRICHMENT_BATCH_SIZE`` at a time."""
    now = now or datetime.now(UTC)
    result = EnrichmentResult()
    gaps = _lease(conn, settings.enrichment_batch_size, now)
    wanted: dict[str, list[tuple[str, int, int]]] = {}  # track id -> gaps it answers
    images: dict[str, tuple[int, int]] = {}  # artist spotify id -> (artist id, attempts)
    for kind, entity_id, reason, attempts in gaps:
        if kind == "artist" and reason == "missing_image":
            row = conn.execute("SELECT spotify_id FROM artists WHERE id = %s", (entity_id,)).fetchone()
            if row and row[0]:
                images[str(row[0])] = (entity_id, attempts)
                continue
        track = _track_for(conn, kind, entity_id)
        if track is None:
            _retry(
                conn,
                kind,
                entity_id,
                attempts,
                "no track with an id to learn from",
                now + NOT_FOUND_RETRY,
                count=True,
            )
            result.not_found += 1
            continue
        wanted.setdefault(track, []).append((kind, entity_id, attempts))
    try:
        if wanted:
            found = spotify.tracks(list(wanted))
            refs = [track_ref(obj) for obj in found.values() if obj]
            apply_track_metadata(conn, refs)
            for track_id, obj in found.items():
                for kind, entity_id, attempts in wanted[track_id]:
                    if obj is None:
                        _retry(
                            conn, kind, entity_id, attempts, "not_found", now + NOT_FOUND_RETRY, count=True
                        )
                        result.not_found += 1
                    else:
                        result.resolved += 1
            _done(conn, [(k, e) for items in wanted.values() for k, e, _ in items])
        if images:
            for spotify_id, obj in spotify.artists(list(images)).items():
                artist_id, attempts = images[spotify_id]
                if obj is None:
                    _retry(
                        conn, "artist", artist_id, attempts, "not_found", now + NOT_FOUND_RETRY, count=True
                    )
                    result.not_found += 1
                    continue
                conn.execute(
                    "UPDATE artists SET image_url = %s, updated_at = %s WHERE id = %s",
                    (image_url(obj) or "", now, artist_id),
                )
                result.resolved += 1
            _done(conn, [("artist", a) for a, _ in images.values()])
    except SpotifyRateLimited as exc:
        # Back at exactly Retry-After; a rate-limited lookup is not a failed one.
        wait = now + timedelta(seconds=exc.retry_after_s or 1)
        for kind, entity_id, _, attempts in gaps:
            _retry(conn, kind, entity_id, attempts, "rate_limited", wait, count=False)
        result.rate_limited = True
    except SpotifyError as exc:
        for kind, entity_id, _, attempts in gaps:
            backoff = min(MAX_BACKOFF, timedelta(minutes=2 ** min(attempts, 12)))
            _retry(conn, kind, entity_id, attempts, f"{type(exc).__name__}: {exc}", now + backoff, count=True)
        result.failed += len(gaps)
        logger.warning(
            "enrichment lookup failed; retried later", extra={"error": str(exc), "gaps": len(gaps)}
        )
    row = conn.execute("SELECT count(*) FROM catalog_gaps WHERE next_attempt_at <= %s", (now,)).fetchone()
    result.remaining = int(row[0]) if row else 0
    return result


def request(sqs: Any, settings: Settings) -> None:
    """Ask the enrichment worker to look at the gaps (after an ingestion that may have added some)."""
    if settings.enrichment_queue_url:
        sqs.send_message(QueueUrl=settings.enrichment_queue_url, MessageBody=json.dumps({"gaps": True}))
