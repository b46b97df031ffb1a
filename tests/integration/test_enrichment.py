"""Catalog enrichment against the fake Spotify: provisional rows resolved with exact statistics,
rate limits respected, failures backed off."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devtools.fakespotify import FakeSpotify
from myi.enrichment import enrich
from myi.ingestion import ingest
from myi.plays import AlbumRef, ArtistRef, Play, TrackRef
from myi.ratelimit import RateLimiter
from myi.settings import Settings
from myi.spotify.client import Budget, SpotifyClient
from myi.statistics import maintenance
from tests.fixtures.plays import make_user

NOW = datetime.now(UTC)


@pytest.fixture
def client(spotify_settings: Settings) -> Iterator[SpotifyClient]:
    with httpx.Client(timeout=10) as http:
        budget = Budget(spotify_settings, RateLimiter(spotify_settings), key=f"budget-{uuid.uuid4().hex}")
        yield SpotifyClient(spotify_settings, budget, http=http, sleep=lambda s: None)


def export_play(fake: FakeSpotify, track_id: str, when: datetime) -> Play:
    """What an extended-history record says about a fake track: its id, and names only."""
    w = fake.world
    t = w.tracks[track_id]
    album = w.albums[t["album_id"]]
    artist = ArtistRef(w.artists[album["artist_ids"][0]]["name"])
    return Play(
        TrackRef(t["name"], track_id, (artist,), AlbumRef(album["name"], artists=(artist,))),
        when,
        "extended",
        180_000,
    )


def gaps(conn: Any) -> list[tuple[str, str]]:
    return [
        (r[0], r[1]) for r in conn.execute("SELECT kind, reason FROM catalog_gaps ORDER BY 1, 2").fetchall()
    ]


def test_enrichment_resolves_provisional_artists_and_albums_with_exact_statistics(
    db_conn: Any, spotify_settings: Settings, client: SpotifyClient, fake_spotify: FakeSpotify
) -> None:
    user = make_user(db_conn, recent_floor=NOW - timedelta(hours=30))  # half the plays are recent
    track_ids = list(fake_spotify.world.tracks)[:30]
    plays = [export_play(fake_spotify, t, NOW - timedelta(hours=i)) for i, t in enumerate(track_ids * 2)]
    ingest(db_conn, user, plays)
    assert ("artist", "provisional") in gaps(db_conn) and ("track", "missing_duration") in gaps(db_conn)
    before = db_conn.execute(
        "SELECT plays, ms_played FROM stat_user WHERE user_id = %s AND grain = 0", (user,)
    ).fetchone()
    for _ in range(10):
        result = enrich(spotify_settings, db_conn, client)
        if not result.remaining:
            break
    assert [g for g in gaps(db_conn) if g[1] != "missing_image"] == []
    provisional = db_conn.execute("SELECT count(*) FROM artists WHERE spotify_id IS NULL").fetchone()
    assert provisional == (0,)
    assert db_conn.execute("SELECT count(*) FROM albums WHERE spotify_id IS NULL").fetchone() == (0,)
    assert db_conn.execute("SELECT count(*) FROM tracks WHERE duration_ms IS NULL").fetchone() == (0,)
    credited = db_conn.execute(
        "SELECT count(*) FROM stat_artist s JOIN artists a ON a.id = s.artist_id "
        "WHERE s.user_id = %s AND s.grain = 0 AND a.spotify_id IS NULL",
        (user,),
    ).fetchone()
    assert credited == (0,)
    assert (
        db_conn.execute(
            "SELECT plays, ms_played FROM stat_user WHERE user_id = %s AND grain = 0", (user,)
        ).fetchone()
        == before
    )
    assert maintenance.verify(db_conn, user) == []


def test_a_rate_limited_lookup_comes_back_after_retry_after_and_is_not_a_failure(
    db_conn: Any, spotify_settings: Settings, client: SpotifyClient, fake_spotify: FakeSpotify
) -> None:
    user = make_user(db_conn)
    ingest(db_conn, user, [export_play(fake_spotify, next(iter(fake_spotify.world.tracks)), NOW)])
    fake_spotify.inject("/v1/tracks", status=429, retry_after=120)
    now = datetime.now(UTC)
    result = enrich(spotify_settings, db_conn, client, now=now)
    assert result.rate_limited and result.not_found == 0
    rows = db_conn.execute("SELECT attempts, last_error, next_attempt_at FROM catalog_gaps").fetchall()
    assert rows and all(r[0] == 0 and r[1] == "rate_limited" for r in rows)
    assert all(abs((r[2] - now).total_seconds() - 120) < 1 for r in rows)


def test_failures_back_off_and_unknown_items_wait_a_month(
    db_conn: Any, spotify_settings: Settings, client: SpotifyClient, fake_spotify: FakeSpotify
) -> None:
    user = make_user(db_conn)
    ghost = Play(TrackRef("Ghost", "0" * 22, (ArtistRef("Nobody"),)), NOW, "extended", 100_000)
    ingest(db_conn, user, [ghost])
    fake_spotify.inject("/v1/tracks", status=503, times=3)
    now = datetime.now(UTC)
    failed = enrich(spotify_settings, db_conn, client, now=now)
    assert failed.failed >= 1
    row = db_conn.execute(
        "SELECT attempts, next_attempt_at FROM catalog_gaps WHERE kind = 'track'"
    ).fetchone()
    assert row is not None and row[0] == 1 and row[1] > now
    later = now + timedelta(days=2)
    missing = enrich(spotify_settings, db_conn, client, now=later)
    assert missing.not_found >= 1
    row = db_conn.execute(
        "SELECT last_error, next_attempt_at FROM catalog_gaps WHERE kind = 'track'"
    ).fetchone()
    assert row is not None and row[0] == "not_found" and row[1] >= later + timedelta(days=29)
