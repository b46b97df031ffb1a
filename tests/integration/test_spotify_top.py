"""Spotify's top lists: stored and replaced per user and term, stale by activity tier, swept daily."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devtools.fakespotify import FakeSpotify
from myi import aws, spotify_top
from myi.auth.tokens import TokenManager, store_grant
from myi.crypto import KeyRing
from myi.ratelimit import RateLimiter
from myi.settings import Settings
from myi.spotify.accounts import AccountsClient
from myi.spotify.client import Budget, SpotifyClient
from tests.fixtures.auth import grant_for
from tests.fixtures.plays import make_user


@pytest.fixture
def deps(db_conn: Any, spotify_settings: Settings, keyring: KeyRing) -> Iterator[spotify_top.TopDeps]:
    sqs = aws.client("sqs", spotify_settings)
    url = sqs.create_queue(QueueName=f"top-test-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    settings = spotify_settings.replace(top_stats_queue_url=url)
    with httpx.Client(timeout=10) as http:
        budget = Budget(settings, RateLimiter(settings), key=f"budget-{uuid.uuid4().hex}")
        yield spotify_top.TopDeps(
            settings=settings,
            conn=db_conn,
            sqs=sqs,
            spotify=SpotifyClient(settings, budget, http=http, sleep=lambda s: None),
            tokens=TokenManager(db_conn, AccountsClient(settings, http=http), lambda: keyring),
        )
    sqs.delete_queue(QueueUrl=url)


def signed_in(
    deps: spotify_top.TopDeps, spotify_id: str = "demo", last_login: timedelta = timedelta(0)
) -> int:
    user = make_user(deps.conn, spotify_id)
    deps.conn.execute("UPDATE users SET last_seen_at = now() - %s WHERE id = %s", (last_login, user))
    store_grant(
        deps.conn, deps.tokens._keyring(), user, grant_for(deps.settings, spotify_id), now=datetime.now(UTC)
    )
    return user


def messages(deps: spotify_top.TopDeps) -> list[dict[str, Any]]:
    url = deps.settings.top_stats_queue_url
    got = deps.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in got]


def test_a_refresh_stores_spotifys_ranking_and_replaces_the_old_one(
    deps: spotify_top.TopDeps, fake_spotify: FakeSpotify
) -> None:
    user = signed_in(deps)
    assert spotify_top.handle_message(deps, json.dumps({"user_id": user})) == 6
    stored = spotify_top.read(deps.conn, user, "tracks", "short_term")
    expected = fake_spotify.world.tops[("demo", "tracks", "short_term")]
    assert [i["spotify_id"] for i in stored["items"]] == expected
    assert [i["rank"] for i in stored["items"]] == list(range(1, len(expected) + 1))
    assert stored["refreshed_at"] is not None and stored["items"][0]["artists"]
    artists = spotify_top.read(deps.conn, user, "artists", "long_term")
    assert [i["spotify_id"] for i in artists["items"]] == fake_spotify.world.tops[
        ("demo", "artists", "long_term")
    ]
    fake_spotify.world.set_top("demo", "tracks", "short_term", expected[:3][::-1])
    spotify_top.refresh(deps.conn, deps.spotify, deps.tokens, user, "tracks", "short_term")
    again = spotify_top.read(deps.conn, user, "tracks", "short_term")
    assert [i["spotify_id"] for i in again["items"]] == expected[:3][::-1]


def test_staleness_follows_the_activity_tier(deps: spotify_top.TopDeps) -> None:
    now = datetime.now(UTC)
    active = signed_in(deps, "demo", timedelta(hours=1))
    recent = signed_in(deps, "ana", timedelta(days=4))
    assert spotify_top.is_stale(deps.settings, deps.conn, active, "tracks", "short_term", now)
    for user in (active, recent):
        spotify_top.refresh(deps.conn, deps.spotify, deps.tokens, user, "tracks", "short_term", now=now)
    later = now + timedelta(hours=30)
    assert spotify_top.is_stale(
        deps.settings, deps.conn, active, "tracks", "short_term", later
    )  # tier 1: 24 h
    assert not spotify_top.is_stale(
        deps.settings, deps.conn, recent, "tracks", "short_term", later
    )  # tier 2: 72 h


def test_the_daily_sweep_queues_tier_one_and_two_users_with_stale_sets(deps: spotify_top.TopDeps) -> None:
    active = signed_in(deps, "demo", timedelta(hours=1))
    recent = signed_in(deps, "ana", timedelta(days=5))
    signed_in(deps, "mika", timedelta(days=20))  # tier 3: on demand only
    spotify_top.handle_message(deps, json.dumps({"user_id": recent}))
    assert spotify_top.sweep(deps.settings, deps.conn, deps.sqs) == 1
    assert messages(deps) == [{"user_id": active}]


def test_a_rate_limited_refresh_is_queued_again_and_stores_nothing(
    deps: spotify_top.TopDeps, fake_spotify: FakeSpotify
) -> None:
    user = signed_in(deps)
    fake_spotify.inject("/v1/me/top", status=429, retry_after=5)
    assert (
        spotify_top.handle_message(deps, json.dumps({"user_id": user, "kind": "tracks", "term": "long_term"}))
        == 0
    )
    assert spotify_top.read(deps.conn, user, "tracks", "long_term")["refreshed_at"] is None
    attributes = deps.sqs.get_queue_attributes(
        QueueUrl=deps.settings.top_stats_queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"


def test_top_artists_with_nul_characters_are_stored_without_them(
    deps: spotify_top.TopDeps, fake_spotify: FakeSpotify
) -> None:
    user = signed_in(deps)
    artist = fake_spotify.world.add_artist("Top\x00 Artist")
    fake_spotify.world.set_top("demo", "artists", "medium_term", [artist])
    assert spotify_top.refresh(deps.conn, deps.spotify, deps.tokens, user, "artists", "medium_term") == 1
    stored = spotify_top.read(deps.conn, user, "artists", "medium_term")
    assert [(i["spotify_id"], i["name"]) for i in stored["items"]] == [(artist, "Top Artist")]
