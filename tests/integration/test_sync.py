"""Listening sync against the fake Spotify, a real PostgreSQL and the emulated SQS and DynamoDB."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from botocore.exceptions import ClientError

from devtools.fakespotify import FakeSpotify
from myi import aws
from myi.auth.tokens import TokenManager, store_grant
from myi.crypto import KeyRing
from myi.ingestion import USER_LOCK_CLASS
from myi.ratelimit import RateLimiter
from myi.settings import Settings
from myi.spotify.accounts import AccountsClient
from myi.spotify.client import Budget, SpotifyClient
from myi.statistics import maintenance
from myi.sync import SENDERS, SyncDeps, fanout, handle_message, sync_user
from tests.fixtures.auth import grant_for
from tests.fixtures.plays import make_user


@pytest.fixture
def sync_settings(spotify_settings: Settings, aws_resources: dict[str, str]) -> Iterator[Settings]:
    """The test settings with a sync queue of this test's own."""
    sqs = aws.client("sqs", spotify_settings)
    url = sqs.create_queue(QueueName=f"sync-test-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    yield spotify_settings.replace(sync_queue_url=url, sync_cooldown_s=0)
    sqs.delete_queue(QueueUrl=url)


class Lowest(random.Random):
    """Jitter at its lower bound, so tests see re-enqueued messages at once."""

    def randint(self, a: int, b: int) -> int:
        return a


def deps_for(
    conn: Any, settings: Settings, keyring: KeyRing, http: httpx.Client, budget_key: str
) -> SyncDeps:
    budget = Budget(settings, RateLimiter(settings), key=budget_key)
    return SyncDeps(
        settings=settings,
        conn=conn,
        sqs=aws.client("sqs", settings),
        spotify=SpotifyClient(settings, budget, http=http, sleep=lambda s: None),
        tokens=TokenManager(conn, AccountsClient(settings, http=http), lambda: keyring),
        rng=Lowest(),
    )


@pytest.fixture
def deps(db_conn: Any, sync_settings: Settings, keyring: KeyRing) -> Iterator[SyncDeps]:
    with httpx.Client(timeout=10) as http:
        yield deps_for(db_conn, sync_settings, keyring, http, f"budget-{uuid.uuid4().hex}")


def signed_in(deps: SyncDeps, spotify_id: str = "demo") -> int:
    user = make_user(deps.conn, spotify_id)
    deps.conn.execute("UPDATE users SET last_seen_at = now() WHERE id = %s", (user,))
    store_grant(
        deps.conn, deps.tokens._keyring(), user, grant_for(deps.settings, spotify_id), now=datetime.now(UTC)
    )
    return user


def queued(deps: SyncDeps) -> list[dict[str, Any]]:
    """Drain the sync queue (delays included) and return the messages' bodies."""
    url = deps.settings.sync_queue_url
    bodies = []
    while True:
        got = deps.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not got:
            return bodies
        for m in got:
            bodies.append(json.loads(m["Body"]))
            deps.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def events(conn: psycopg.Connection[Any], user: int) -> int:
    row = conn.execute("SELECT count(*) FROM listening_events WHERE user_id = %s", (user,)).fetchone()
    assert row is not None
    return int(row[0])


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def cursor_of(conn: psycopg.Connection[Any], user: int) -> datetime | None:
    row = conn.execute("SELECT sync_cursor FROM users WHERE id = %s", (user,)).fetchone()
    assert row is not None
    cursor: datetime | None = row[0]
    return cursor


def add_plays(fake: FakeSpotify, user: str, n: int) -> None:
    tracks = list(fake.world.tracks)
    base = datetime.now(UTC) - timedelta(seconds=n * 5 + 5)  # after the demo world's plays
    for i in range(n):
        fake.world.add_play(user, tracks[i], base + timedelta(seconds=5 * i))


def test_a_first_sync_stores_the_latest_page_and_reads_on(deps: SyncDeps, fake_spotify: FakeSpotify) -> None:
    user = signed_in(deps)
    outcome = sync_user(deps, user)
    assert outcome.status == "synced" and outcome.fetched == 50 and outcome.result.added == 50
    newest = fake_spotify.world.plays["demo"][-1][0]
    assert outcome.requeued and queued(deps) == [{"user_id": user, "after": ms(newest)}]
    row = deps.conn.execute(
        "SELECT last_ingested_at IS NOT NULL, sync_cursor, sync_gaps FROM users WHERE id = %s", (user,)
    ).fetchone()
    assert row == (True, newest.replace(microsecond=newest.microsecond // 1000 * 1000), 0)
    estimated = deps.conn.execute(
        "SELECT bool_and(is_estimated), bool_and(origin = 'api') FROM listening_events WHERE user_id = %s",
        (user,),
    ).fetchone()
    assert estimated == (True, True)
    assert maintenance.verify(deps.conn, user) == []


def test_an_incremental_sync_reads_only_what_is_new(deps: SyncDeps, fake_spotify: FakeSpotify) -> None:
    user = signed_in(deps)
    sync_user(deps, user)
    add_plays(fake_spotify, "demo", 3)
    fake_spotify.reset_calls()
    outcome = sync_user(deps, user)
    assert outcome.result.added == 3 and not outcome.requeued
    after = fake_spotify.requests[-1][2]["after"]
    assert int(after) > 0
    assert events(deps.conn, user) == 53


def test_names_with_nul_characters_are_stored_without_them(deps: SyncDeps, fake_spotify: FakeSpotify) -> None:
    world = fake_spotify.world
    artist = world.add_artist("Nul\x00 Artist")
    album = world.add_album("Nul\x00 Album", [artist])
    track = world.add_track("Nul\x00 Track", album)
    user = signed_in(deps)
    sync_user(deps, user)
    world.add_play("demo", track, datetime.now(UTC) - timedelta(seconds=5))
    assert sync_user(deps, user).result.added == 1
    row = deps.conn.execute(
        """
        SELECT t.name, al.name, ar.name FROM tracks t JOIN albums al ON al.id = t.album_id
          JOIN track_artists ta ON ta.track_id = t.id JOIN artists ar ON ar.id = ta.artist_id
         WHERE t.spotify_id = %s
        """,
        (track,),
    ).fetchone()
    assert row == ("Nul Track", "Nul Album", "Nul Artist")


def test_the_same_message_twice_changes_nothing(deps: SyncDeps) -> None:
    user = signed_in(deps)
    body = json.dumps({"user_id": user})
    handle_message(deps, body)
    snapshot = deps.conn.execute(
        "SELECT plays, ms_played FROM stat_user WHERE user_id = %s AND grain = 0", (user,)
    ).fetchone()
    again = handle_message(deps, body)
    assert again is not None and again.result.added == 0
    assert (
        deps.conn.execute(
            "SELECT plays, ms_played FROM stat_user WHERE user_id = %s AND grain = 0", (user,)
        ).fetchone()
        == snapshot
    )
    assert events(deps.conn, user) == 50


def test_a_full_page_after_the_cursor_is_counted_as_a_possible_gap(
    deps: SyncDeps, fake_spotify: FakeSpotify
) -> None:
    user = signed_in(deps)
    sync_user(deps, user)
    queued(deps)
    add_plays(fake_spotify, "demo", 60)  # more than one page since the last sync
    outcome = sync_user(deps, user)
    assert outcome.requeued and outcome.result.added == 50
    row = deps.conn.execute(
        "SELECT sync_gaps, sync_full_pages, sync_interval_s FROM users WHERE id = %s", (user,)
    ).fetchone()
    assert row is not None and row[0] == 1 and row[1] == 2
    assert deps.settings.sync_cooldown_s <= row[2] <= deps.settings.sync_max_interval_s


def test_a_read_on_message_reads_after_its_page_before_the_cursor_has_moved(
    deps: SyncDeps, fake_spotify: FakeSpotify
) -> None:
    user = signed_in(deps)
    plays = fake_spotify.world.plays["demo"]
    middle = plays[-10][0]  # as if the sync of the page up to here had not committed yet
    outcome = handle_message(deps, json.dumps({"user_id": user, "after": ms(middle)}))
    assert outcome is not None and outcome.result.added == 9
    assert fake_spotify.requests[-1][2]["after"] == str(ms(middle))
    assert cursor_of(deps.conn, user) is None  # moved only by the sync it follows
    assert handle_message(deps, json.dumps({"user_id": user})) is not None
    assert events(deps.conn, user) == 50 and cursor_of(deps.conn, user) is not None
    bad = (
        {"user_id": user, "after": -1},
        {"user_id": user, "after": "soon"},
        {"user_id": user, "after": 10**20},
    )
    for body in (*bad, ["user_id"]):
        assert handle_message(deps, json.dumps(body)) is None


def test_a_page_that_fails_to_be_stored_is_read_again_though_its_read_on_went_ahead(
    deps: SyncDeps, fake_spotify: FakeSpotify, database_url: str
) -> None:
    user = signed_in(deps)
    sync_user(deps, user)
    queued(deps)
    before = cursor_of(deps.conn, user)
    add_plays(fake_spotify, "demo", 50)
    # Another transaction holds the page's artists: storing it times out once it is staged.
    with psycopg.connect(database_url) as other:
        other.execute("SELECT id FROM artists FOR UPDATE")
        deps.conn.execute("SET lock_timeout = '100ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            handle_message(deps, json.dumps({"user_id": user}))
        other.rollback()
    deps.conn.execute("RESET lock_timeout")
    (read_on,) = queued(deps)
    # The read-on went out while the page was being stored; it runs first and finds a new play.
    add_plays(fake_spotify, "demo", 1)
    outcome = handle_message(deps, json.dumps(read_on))
    assert outcome is not None and outcome.result.added == 1
    assert cursor_of(deps.conn, user) == before
    # The failed message comes back: from the cursor, which has not moved, nothing Spotify still
    # shows is missing (it shows the latest 50 plays: the failed page's oldest is beyond it).
    outcome = handle_message(deps, json.dumps({"user_id": user}))
    assert outcome is not None and outcome.result.added == 49
    shown = {
        (at.replace(microsecond=at.microsecond // 1000 * 1000), track)
        for at, track in fake_spotify.world.plays["demo"][-50:]
    }
    stored = deps.conn.execute(
        "SELECT e.played_at, t.spotify_id FROM listening_events e JOIN tracks t ON t.id = e.track_id"
        " WHERE e.user_id = %s",
        (user,),
    ).fetchall()
    assert len(shown) == 50 and shown <= {(at, track) for at, track in stored}
    assert events(deps.conn, user) == 100 and maintenance.verify(deps.conn, user) == []


def test_a_page_that_cannot_be_staged_sends_no_read_on(deps: SyncDeps, database_url: str) -> None:
    user = signed_in(deps)
    # Another session holds the user's ingestion lock: the page is never staged.
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", (USER_LOCK_CLASS, user))
        deps.conn.execute("SET lock_timeout = '100ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            handle_message(deps, json.dumps({"user_id": user}))
    deps.conn.execute("RESET lock_timeout")
    assert queued(deps) == [] and events(deps.conn, user) == 0
    outcome = handle_message(deps, json.dumps({"user_id": user}))  # the message comes back
    assert outcome is not None and outcome.result.added == 50 and outcome.requeued


def test_rate_limited_sync_waits_for_retry_after_and_loses_nothing(
    deps: SyncDeps, fake_spotify: FakeSpotify
) -> None:
    user = signed_in(deps)
    fake_spotify.inject("/v1/me/player/recently-played", status=429, retry_after=30)
    outcome = sync_user(deps, user)
    assert outcome.status == "rate_limited" and outcome.requeued
    fake_spotify.reset_calls()
    again = sync_user(deps, user)  # everyone waits for Retry-After: Spotify is not called
    assert again.status == "rate_limited" and fake_spotify.calls("/v1/") == 0
    attributes = deps.sqs.get_queue_attributes(
        QueueUrl=deps.settings.sync_queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "2"  # both retried after Retry-After
    # Once the pause is over, the sync completes and nothing is lost.
    budget = deps.spotify._budget
    budget._limiter.block(budget._key, seconds=0, window_s=deps.settings.spotify_rate_window_s)
    assert sync_user(deps, user).result.added == 50


def test_server_errors_are_retried(deps: SyncDeps, fake_spotify: FakeSpotify) -> None:
    user = signed_in(deps)
    fake_spotify.inject("/v1/me/player/recently-played", status=502, times=2)
    assert sync_user(deps, user).result.added == 50
    assert fake_spotify.calls("/v1/me/player/recently-played") == 3


def test_an_expired_access_token_is_refreshed_once(deps: SyncDeps, fake_spotify: FakeSpotify) -> None:
    user = signed_in(deps)
    fake_spotify.expire_access_tokens()
    fake_spotify.reset_calls()
    assert sync_user(deps, user).result.added == 50
    assert fake_spotify.calls("/api/token") == 1


def test_a_revoked_user_is_quarantined_after_three_attempts_and_never_called_again(
    deps: SyncDeps, fake_spotify: FakeSpotify
) -> None:
    user = signed_in(deps)
    fake_spotify.revoke("demo")
    for _ in range(3):
        assert sync_user(deps, user).status == "no_grant"
    assert deps.conn.execute("SELECT is_valid FROM spotify_auth WHERE user_id = %s", (user,)).fetchone() == (
        False,
    )
    fake_spotify.reset_calls()
    assert sync_user(deps, user).status == "no_grant"
    assert fanout(deps.settings, deps.conn, deps.sqs) == 0
    assert fake_spotify.calls() == 0 and queued(deps) == []


def test_a_deleted_user_is_dropped(deps: SyncDeps, fake_spotify: FakeSpotify) -> None:
    user = signed_in(deps)
    deps.conn.execute("DELETE FROM users WHERE id = %s", (user,))
    fake_spotify.reset_calls()
    assert sync_user(deps, user).status == "no_user" and fake_spotify.calls() == 0


def test_fanout_enqueues_exactly_the_users_who_are_due(deps: SyncDeps) -> None:
    due = signed_in(deps, "demo")
    inactive = signed_in(deps, "ana")
    deps.conn.execute("UPDATE users SET last_seen_at = now() - interval '40 days' WHERE id = %s", (inactive,))
    recent = signed_in(deps, "mika")  # synced a minute ago: its worker set its next sync time
    settings = deps.settings.replace(sync_cooldown_s=600)
    deps.conn.execute(
        "UPDATE users SET last_ingested_at = now() - interval '1 minute', "
        "next_sync_at = now() + interval '9 minutes' WHERE id = %s",
        (recent,),
    )
    never = make_user(deps.conn, "no-grant")
    deps.conn.execute("UPDATE users SET last_seen_at = now() WHERE id = %s", (never,))
    assert fanout(settings, deps.conn, deps.sqs, rng=Lowest()) == 1
    assert queued(deps) == [{"user_id": due}]
    assert (
        fanout(settings, deps.conn, deps.sqs, rng=Lowest()) == 0
    )  # claimed: an overlapping fan-out sends nothing


def test_fanout_sends_every_page_with_a_connection_per_sender(deps: SyncDeps) -> None:
    users = [make_user(deps.conn, f"paged-{i}") for i in range(23)]
    deps.conn.execute("UPDATE users SET last_seen_at = now() WHERE id = ANY (%s)", (users,))
    deps.conn.execute(  # a grant each: the fan-out reads no token
        """
        INSERT INTO spotify_auth (user_id, refresh_token_enc, refresh_key_version)
        SELECT unnest(%s::bigint[]), '\\x00', 1
        """,
        (users,),
    )
    settings = deps.settings.replace(sync_fanout_page_size=7)  # four pages, batches of 7 and 2
    assert fanout(settings, deps.conn, deps.sqs, rng=Lowest()) == 23
    assert sorted(m["user_id"] for m in queued(deps)) == users
    # The senders share the client: its pool keeps a connection for each of them.
    assert deps.sqs.meta.config.max_pool_connections >= SENDERS


class Refusing:
    """The emulator's SQS, with SendMessageBatch refusing the entries of ``refused`` (as SQS
    reports entries it did not take) and failing outright, with ``failure`` or else an AWS error,
    for a batch holding one of ``broken``."""

    def __init__(
        self,
        sqs: Any,
        refused: set[int],
        broken: frozenset[int] = frozenset(),
        failure: Exception | None = None,
    ) -> None:
        self.sqs, self.refused, self.broken, self.failure = sqs, refused, broken, failure

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        ids = {int(e["Id"]) for e in Entries}
        if ids & self.broken:
            error = {"Error": {"Code": "InternalError", "Message": "unavailable"}}
            raise self.failure or ClientError(error, "SendMessageBatch")  # type: ignore[arg-type]
        kept = [e for e in Entries if int(e["Id"]) not in self.refused]
        out: dict[str, Any] = self.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=kept) if kept else {}
        failed = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError"}
            for e in Entries
            if int(e["Id"]) in self.refused
        ]
        return {**out, "Failed": [*out.get("Failed", []), *failed]}


def due_users(deps: SyncDeps, n: int, prefix: str) -> list[int]:
    users = [make_user(deps.conn, f"{prefix}-{i}") for i in range(n)]
    deps.conn.execute("UPDATE users SET last_seen_at = now() WHERE id = ANY (%s)", (users,))
    deps.conn.execute(
        """
        INSERT INTO spotify_auth (user_id, refresh_token_enc, refresh_key_version)
        SELECT unnest(%s::bigint[]), '\\x00', 1
        """,
        (users,),
    )
    return users


def test_fanout_releases_users_whose_messages_were_refused(deps: SyncDeps) -> None:
    users = due_users(deps, 12, "refused")
    refused = {users[3], users[11]}
    sqs = Refusing(deps.sqs, refused)
    assert fanout(deps.settings, deps.conn, sqs, rng=Lowest()) == 10
    assert sorted(m["user_id"] for m in queued(deps)) == sorted(set(users) - refused)
    # Not left claimed until the cooldown passes: the next fan-out sends them, and only them.
    assert fanout(deps.settings, deps.conn, deps.sqs, rng=Lowest()) == 2
    assert sorted(m["user_id"] for m in queued(deps)) == sorted(refused)


def test_a_call_the_queue_refuses_stops_the_fanout_and_releases_its_users(deps: SyncDeps) -> None:
    users = due_users(deps, 12, "missing")
    missing = deps.settings.replace(sync_queue_url=deps.settings.sync_queue_url + "-missing")
    with pytest.raises(ClientError):  # raised by the client itself: no such queue
        fanout(missing, deps.conn, deps.sqs, rng=Lowest())
    assert fanout(deps.settings, deps.conn, deps.sqs, rng=Lowest()) == 12
    assert sorted(m["user_id"] for m in queued(deps)) == users


def test_the_fanouts_delays_reach_the_queue(deps: SyncDeps) -> None:
    due_users(deps, 3, "delayed")
    settings = deps.settings.replace(sync_max_delay_s=900)

    class Highest(random.Random):
        def randint(self, a: int, b: int) -> int:
            return b

    assert fanout(settings, deps.conn, deps.sqs, rng=Highest()) == 3
    attributes = deps.sqs.get_queue_attributes(
        QueueUrl=settings.sync_queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )
    assert attributes["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "3"


@pytest.mark.parametrize(
    "failure",
    [
        ClientError({"Error": {"Code": "InternalError"}}, "SendMessageBatch"),  # type: ignore[arg-type]
        RuntimeError("a failure outside the AWS client"),
    ],
    ids=["aws-error", "other-error"],
)
def test_a_failed_send_stops_the_fanout_and_releases_its_page(deps: SyncDeps, failure: Exception) -> None:
    users = due_users(deps, 25, f"broken-{type(failure).__name__}")
    settings = deps.settings.replace(sync_fanout_page_size=20)  # pages of 20 and 5
    sqs = Refusing(deps.sqs, set(), broken=frozenset({users[12]}), failure=failure)  # 2nd batch, 1st page
    with pytest.raises(type(failure)):
        fanout(settings, deps.conn, sqs, rng=Lowest())
    sent = sorted(m["user_id"] for m in queued(deps))
    assert sent == users[:10]
    # The page's other users, and the page never reached, are due at the next fan-out.
    assert fanout(settings, deps.conn, deps.sqs, rng=Lowest()) == 15
    assert sorted(m["user_id"] for m in queued(deps)) == users[10:]


def test_the_shared_budget_holds_under_concurrent_workers(
    database_url: str, sync_settings: Settings, keyring: KeyRing, fake_spotify: FakeSpotify, db_conn: Any
) -> None:
    settings = sync_settings.replace(spotify_rate_budget=6, spotify_rate_window_s=3600)
    users = []
    with httpx.Client(timeout=10) as http:
        setup = deps_for(db_conn, settings, keyring, http, "unused")
        for name in ("demo", "ana", "mika"):
            users.append(signed_in(setup, name))
    key = f"budget-{uuid.uuid4().hex}"
    fake_spotify.reset_calls()
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(user: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn, httpx.Client(timeout=10) as http:
            d = deps_for(conn, settings, keyring, http, key)
            for _ in range(4):
                status = sync_user(d, user).status
                with lock:
                    outcomes.append(status)

    threads = [threading.Thread(target=worker, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake_spotify.calls("/v1/") == 6
    assert outcomes.count("synced") == 6 and outcomes.count("rate_limited") == 6


# --- the cadence contract (API.md: SYNC_COOLDOWN_SECONDS and SYNC_MAX_INTERVAL_SECONDS) ----------
def fan_out_and_run(deps: SyncDeps) -> list[str]:
    """One fan-out, then every message it sent run by the worker: the outcomes' statuses."""
    fanout(deps.settings, deps.conn, deps.sqs, rng=Lowest())
    outcomes = [handle_message(deps, json.dumps(body)) for body in queued(deps)]
    return [o.status for o in outcomes if o is not None]


def played_since(deps: SyncDeps, fake: FakeSpotify, user: int, n: int) -> None:
    """``n`` new plays at Spotify, a second apart after the user's cursor."""
    cursor = cursor_of(deps.conn, user) or datetime.now(UTC) - timedelta(hours=1)
    tracks = list(fake.world.tracks)
    for i in range(n):
        fake.world.add_play("demo", tracks[i % len(tracks)], cursor + timedelta(seconds=i + 1))


def caught_up(deps: SyncDeps, user: int) -> None:
    """Synced until the page is no longer full (the demo world holds more than one), queue empty."""
    while sync_user(deps, user).requeued:
        pass
    queued(deps)


def test_with_both_bounds_at_zero_every_fan_out_syncs_the_user(
    deps: SyncDeps, fake_spotify: FakeSpotify
) -> None:
    deps.settings = deps.settings.replace(sync_cooldown_s=0, sync_max_interval_s=0)
    user = signed_in(deps)
    caught_up(deps, user)
    assert fan_out_and_run(deps) == ["synced"]
    for _ in range(3):
        played_since(deps, fake_spotify, user, 10)
        before = events(deps.conn, user)
        assert fan_out_and_run(deps) == ["synced"]
        assert events(deps.conn, user) == before + 10  # ten new plays fetched by the next round


def test_the_next_sync_lies_between_the_cooldown_and_the_maximum(
    deps: SyncDeps, fake_spotify: FakeSpotify
) -> None:
    deps.settings = deps.settings.replace(
        sync_cooldown_s=600, sync_max_interval_s=5400, sync_fanout_period_s=0
    )
    user = signed_in(deps)
    caught_up(deps, user)
    for n in (10, 0, 30):
        played_since(deps, fake_spotify, user, n)
        before = datetime.now(UTC)
        assert sync_user(deps, user).status == "synced"
        row = deps.conn.execute(
            "SELECT sync_interval_s, next_sync_at FROM users WHERE id = %s", (user,)
        ).fetchone()
        assert row is not None and 600 <= row[0] <= 5400
        assert before + timedelta(seconds=row[0]) <= row[1] <= datetime.now(UTC) + timedelta(seconds=row[0])
    assert fan_out_and_run(deps) == []  # not due yet


def test_a_failed_sync_is_retried_at_the_next_fan_out_after_the_cooldown(
    deps: SyncDeps, fake_spotify: FakeSpotify
) -> None:
    deps.settings = deps.settings.replace(sync_cooldown_s=0, sync_max_interval_s=0)
    user = signed_in(deps)
    fake_spotify.expire_access_tokens()
    fake_spotify.inject("/api/token", status=503, times=2 * 3)  # each refresh tries three times
    assert fan_out_and_run(deps) == ["failed"]
    assert fan_out_and_run(deps) == ["failed"]
    failures = deps.conn.execute("SELECT sync_failures FROM users WHERE id = %s", (user,)).fetchone()
    assert failures == (2,)
    assert fan_out_and_run(deps) == ["synced"]  # Spotify is back: retried, refreshed, synced
    row = deps.conn.execute(
        "SELECT u.sync_failures, a.is_valid FROM users u "
        "JOIN spotify_auth a ON a.user_id = u.id WHERE u.id = %s",
        (user,),
    ).fetchone()
    assert row == (0, True) and events(deps.conn, user) == 50


def test_a_failed_sync_backs_off_below_the_maximum(deps: SyncDeps, fake_spotify: FakeSpotify) -> None:
    deps.settings = deps.settings.replace(sync_cooldown_s=600, sync_max_interval_s=3600)
    user = signed_in(deps)
    fake_spotify.inject("/v1/me/player/recently-played", status=503, times=100)
    waits = []
    for _ in range(5):
        before = datetime.now(UTC)
        assert sync_user(deps, user).status == "failed"
        row = deps.conn.execute("SELECT next_sync_at FROM users WHERE id = %s", (user,)).fetchone()
        assert row is not None
        waits.append(round((row[0] - before).total_seconds() / 60))
    assert waits == [10, 20, 30, 30, 30]  # the cooldown, doubled, below the maximum (half of it)


def test_a_revoked_grant_is_found_out_within_three_fan_outs(
    deps: SyncDeps, fake_spotify: FakeSpotify
) -> None:
    deps.settings = deps.settings.replace(sync_cooldown_s=0, sync_max_interval_s=0)
    user = signed_in(deps)
    fake_spotify.expire_access_tokens()
    fake_spotify.revoke("demo")
    assert [fan_out_and_run(deps) for _ in range(3)] == [["no_grant"]] * 3
    status = deps.conn.execute("SELECT is_valid FROM spotify_auth WHERE user_id = %s", (user,)).fetchone()
    assert status == (False,)
    assert fan_out_and_run(deps) == []  # quarantined: no longer sent


def test_a_sync_planned_before_the_next_fan_out_comes_by_the_workers_own_message(
    deps: SyncDeps, fake_spotify: FakeSpotify
) -> None:
    deps.settings = deps.settings.replace(
        sync_cooldown_s=600, sync_max_interval_s=7200, sync_fanout_period_s=3600
    )
    user = signed_in(deps)
    caught_up(deps, user)
    deps.conn.execute(  # a heavy listener: 40 plays in every hour of the day
        "UPDATE users SET sync_profile = %s, sync_profile_at = now() WHERE id = %s", ([40.0] * 24, user)
    )
    before = events(deps.conn, user)
    outcome = sync_user(deps, user)
    interval = deps.conn.execute("SELECT sync_interval_s FROM users WHERE id = %s", (user,)).fetchone()
    assert outcome.status == "synced" and interval is not None and 600 <= interval[0] < 3600
    delayed = deps.sqs.get_queue_attributes(
        QueueUrl=deps.settings.sync_queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
    assert delayed == "1"  # its own message, delayed as long as SQS allows
    deps.sqs.purge_queue(QueueUrl=deps.settings.sync_queue_url)
    own = [{"user_id": user, "due": int(datetime.now(UTC).timestamp()) + interval[0]}]
    assert fan_out_and_run(deps) == []  # the fan-out leaves them to that message
    # Early (SQS delays at most 15 minutes): it waits on without calling Spotify.
    fake_spotify.reset_calls()
    assert handle_message(deps, json.dumps(own[0])).status == "waiting"  # type: ignore[union-attr]
    waiting = deps.sqs.get_queue_attributes(
        QueueUrl=deps.settings.sync_queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
    assert fake_spotify.calls() == 0 and waiting == "1"
    # On time, it syncs.
    played_since(deps, fake_spotify, user, 5)
    on_time = {**own[0], "due": int(datetime.now(UTC).timestamp())}
    assert handle_message(deps, json.dumps(on_time)).status == "synced"  # type: ignore[union-attr]
    assert events(deps.conn, user) == before + 5
