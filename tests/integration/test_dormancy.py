"""Dormancy: the schedules leave the database asleep while nobody uses MYI, and wake with a sign-in
or an import. Handlers run as Lambda runs them, against a state table and a sync queue of each
test's own (the emulator), and a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from devtools.local.context import LocalContext
from devtools.local.runtime import REPO_ROOT, load_handler
from myi import aws
from myi.auth.tokens import store_grant
from myi.crypto import KeyRing
from myi.dormancy import Dormancy
from myi.imports import jobs
from myi.settings import Settings, get_settings
from tests.fixtures.api import signed_in
from tests.fixtures.auth import grant_for
from tests.fixtures.plays import make_user

SCHEDULED = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}


def handler(function: str) -> Any:
    return load_handler(REPO_ROOT / "functions", function)


def context() -> LocalContext:
    return LocalContext("test", 512, 60)


@pytest.fixture
def own(spotify_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A state table that has never seen a sign-in and an empty sync queue, for the handlers too."""
    dynamodb, sqs = aws.client("dynamodb", spotify_settings), aws.client("sqs", spotify_settings)
    table = f"state-{uuid.uuid4().hex[:12]}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    queue = sqs.create_queue(QueueName=f"sync-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    monkeypatch.setenv("STATE_TABLE", table)
    monkeypatch.setenv("SYNC_QUEUE_URL", queue)
    monkeypatch.setenv("SYNC_COOLDOWN_SECONDS", "0")
    get_settings.cache_clear()
    yield spotify_settings.replace(state_table=table, sync_queue_url=queue)
    get_settings.cache_clear()
    sqs.delete_queue(QueueUrl=queue)
    dynamodb.delete_table(TableName=table)


def waiting(settings: Settings) -> int:
    sqs = aws.client("sqs", settings)
    attrs = sqs.get_queue_attributes(
        QueueUrl=settings.sync_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesDelayed"])


def listener(
    conn: psycopg.Connection[Any], settings: Settings, keyring: KeyRing, last_login: datetime
) -> int:
    """A user with a valid grant who signed in at ``last_login`` (written straight to the database)."""
    user = make_user(conn, "demo")
    store_grant(conn, keyring, user, grant_for(settings, "demo"), now=datetime.now(UTC))
    conn.execute("UPDATE users SET last_seen_at = %s WHERE id = %s", (last_login, user))
    return user


def test_the_time_only_moves_later_and_no_time_means_run(own: Settings) -> None:
    dormancy = Dormancy(own)
    now = datetime.now(UTC).replace(microsecond=0)
    assert dormancy.awake_until() is None and not dormancy.dormant(now)
    dormancy.keep_awake(now + timedelta(hours=2))
    dormancy.keep_awake(now + timedelta(hours=1))  # earlier: changes nothing
    assert dormancy.awake_until() == now + timedelta(hours=2)
    assert not dormancy.dormant(now + timedelta(hours=1)) and dormancy.dormant(now + timedelta(hours=2))
    dormancy.signed_in(now)
    assert dormancy.awake_until() == now + timedelta(days=own.sync_active_days)


def test_an_unreadable_table_means_run(own: Settings) -> None:
    assert not Dormancy(own.replace(state_table="no-such-table")).dormant()


def test_the_fanout_sleeps_until_someone_signs_in(
    own: Settings, db_conn: psycopg.Connection[Any], keyring: KeyRing
) -> None:
    fanout = handler("sync_fanout")
    user = listener(db_conn, own, keyring, datetime.now(UTC) - timedelta(days=40))
    # No time stored yet: the fan-out runs and stores when its newest user's window ended.
    assert fanout(SCHEDULED, context()) == {"enqueued": 0}
    until = Dormancy(own).awake_until()
    assert until is not None and until < datetime.now(UTC)
    # Someone who became active without signing in through MYI is not looked for: nothing is
    # claimed, nothing sent.
    db_conn.execute("UPDATE users SET last_seen_at = now() WHERE id = %s", (user,))
    assert fanout(SCHEDULED, context()) == {"enqueued": 0, "dormant": True}
    assert waiting(own) == 0
    row = db_conn.execute("SELECT next_sync_at FROM users WHERE id = %s", (user,)).fetchone()
    assert row == (None,)
    # A sign-in wakes the schedules: the user is synced, and kept in view for the active window.
    Dormancy(own).signed_in(datetime.now(UTC))
    assert fanout(SCHEDULED, context()) == {"enqueued": 1}
    assert waiting(own) == 1
    until = Dormancy(own).awake_until()
    assert until is not None and until > datetime.now(UTC) + timedelta(days=own.sync_active_days - 1)


def test_the_other_sweeps_sleep_too(own: Settings, db_conn: psycopg.Connection[Any]) -> None:
    Dormancy(own).keep_awake(datetime.now(UTC) - timedelta(minutes=1))
    user = make_user(db_conn)
    job = jobs.create(db_conn, own, user, "my_spotify_data.zip", 1000, now=datetime.now(UTC))["import"]
    db_conn.execute(
        "UPDATE import_jobs SET created_at = now() - interval '1 day' WHERE id = %s", (job["id"],)
    )
    assert handler("import_worker")(SCHEDULED, context()) == {"dormant": True}
    assert jobs.get(db_conn, user, job["id"])["status"] == "awaiting_upload"  # untouched
    assert handler("enrichment_worker")(SCHEDULED, context()) == {"dormant": True}
    assert handler("top_stats")(SCHEDULED, context()) == {"users_queued": 0, "dormant": True}


def test_an_import_keeps_the_sweep_awake_while_it_is_under_way(
    own: Settings, db_conn: psycopg.Connection[Any]
) -> None:
    sweep = handler("import_worker")
    Dormancy(own).keep_awake(datetime.now(UTC) - timedelta(minutes=1))
    user = make_user(db_conn)
    db_conn.execute("UPDATE users SET last_seen_at = now() WHERE id = %s", (user,))  # seen: no news
    refused = signed_in(db_conn, own, user).request(
        "POST", "/me/imports", body={"filename": "my_spotify_data.zip", "size_bytes": 0}
    )
    assert refused.status == 400 and Dormancy(own).dormant()  # a refused import wakes nothing
    created = signed_in(db_conn, own, user).request(
        "POST", "/me/imports", body={"filename": "my_spotify_data.zip", "size_bytes": 1000}
    )
    assert created.status == 201 and not Dormancy(own).dormant()
    assert sweep(SCHEDULED, context()) == {"stuck_failed": 0, "abandoned": 0, "live": 1}
    until = Dormancy(own).awake_until()
    assert until is not None and until > datetime.now(UTC) + timedelta(hours=23)


def test_a_user_seen_long_after_their_last_sign_in_wakes_the_schedules_and_is_synced(
    own: Settings, db_conn: psycopg.Connection[Any], keyring: KeyRing
) -> None:
    """Someone who signed in 40 days ago and opens the dashboard today is active: seen by that
    request (written once an hour at most), so the fan-out syncs them."""
    fanout = handler("sync_fanout")
    forty_days_ago = datetime.now(UTC) - timedelta(days=40)
    user = listener(db_conn, own, keyring, forty_days_ago)
    db_conn.execute("UPDATE users SET last_login_at = %s WHERE id = %s", (forty_days_ago, user))
    Dormancy(own).keep_awake(datetime.now(UTC) - timedelta(minutes=1))
    assert fanout(SCHEDULED, context()) == {"enqueued": 0, "dormant": True}

    assert signed_in(db_conn, own, user).request("GET", "/me").status == 200
    seen = db_conn.execute("SELECT last_seen_at, last_login_at FROM users WHERE id = %s", (user,)).fetchone()
    assert (
        seen is not None and seen[0] > datetime.now(UTC) - timedelta(minutes=1) and seen[1] == forty_days_ago
    )
    assert not Dormancy(own).dormant()
    assert fanout(SCHEDULED, context()) == {"enqueued": 1}

    # within the hour, further requests write nothing
    db_conn.execute("UPDATE users SET last_seen_at = now() - interval '30 minutes' WHERE id = %s", (user,))
    before = db_conn.execute("SELECT last_seen_at FROM users WHERE id = %s", (user,)).fetchone()
    assert signed_in(db_conn, own, user).request("GET", "/me").status == 200
    assert db_conn.execute("SELECT last_seen_at FROM users WHERE id = %s", (user,)).fetchone() == before


def test_an_export_keeps_its_sweep_awake_and_a_dormant_sweep_connects_to_nothing(
    own: Settings, db_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = aws.client("sqs", own)
    queue = sqs.create_queue(QueueName=f"export-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    monkeypatch.setenv("EXPORT_QUEUE_URL", queue)
    get_settings.cache_clear()
    sweep = handler("export_worker")
    Dormancy(own).keep_awake(datetime.now(UTC) - timedelta(minutes=1))
    assert sweep(SCHEDULED, context()) == {"dormant": True}
    user = make_user(db_conn)
    db_conn.execute("UPDATE users SET last_seen_at = now() WHERE id = %s", (user,))  # seen: no news
    refused = signed_in(db_conn, own, user).request("POST", "/me/exports", body={"format": "pdf"})
    assert refused.status == 400 and Dormancy(own).dormant()  # a refused export wakes nothing
    created = signed_in(db_conn, own, user).request("POST", "/me/exports", body={"format": "csv"})
    assert created.status == 202 and not Dormancy(own).dormant()
    assert "dormant" not in sweep(SCHEDULED, context())
    until = Dormancy(own).awake_until()
    assert until is not None and until > datetime.now(UTC) + timedelta(hours=23)
    sqs.delete_queue(QueueUrl=queue)
