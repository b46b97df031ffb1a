"""Connections the database dropped (a restart, a failover, Aurora scaling to zero) are replaced:
each handler runs as Lambda runs it (one module, invoked again and again), the database ends every
connection between two invocations, and the second invocation succeeds all the same."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from devtools.fakespotify import FakeSpotify
from devtools.local import events
from devtools.local.context import LocalContext
from devtools.local.runtime import REPO_ROOT, load_handler
from infra.wiring import WIRING
from myi import aws, crypto
from myi.auth import sessions
from myi.auth.tokens import store_grant
from myi.dormancy import Dormancy
from myi.settings import Settings, get_settings
from tests.fixtures.auth import grant_for
from tests.fixtures.plays import make_user

SCHEDULED = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}


def context(name: str) -> LocalContext:
    return LocalContext(name, 512, 60)


def drop_connections(conn: psycopg.Connection[Any]) -> int:
    """End every other connection to the test database (waiting until each is gone), as a restart
    or a failover does; how many there were."""
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    assert all(ok for (ok,) in rows)
    return len(rows)


def twice_across_a_drop(
    conn: psycopg.Connection[Any], name: str, event: Callable[[], dict[str, Any]]
) -> tuple[Any, Any]:
    """Invoke the handler of ``name`` (loaded once), drop the database's connections, invoke it
    again; both results."""
    handler = load_handler(REPO_ROOT / "functions", name)
    first = handler(event(), context(name))
    assert drop_connections(conn) >= 1  # the handler's connection, at least
    second = handler(event(), context(name))
    return first, second


@pytest.fixture
def env(
    spotify_settings: Settings, fake_spotify: FakeSpotify, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """The handlers' environment: the fake Spotify, and a state table and queues of this test's own."""
    dynamodb, sqs = aws.client("dynamodb", spotify_settings), aws.client("sqs", spotify_settings)
    table = f"state-{uuid.uuid4().hex[:12]}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    queues = {
        name: sqs.create_queue(QueueName=f"{name.lower()}-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        for name in ("SYNC_QUEUE_URL", "ENRICHMENT_QUEUE_URL", "TOP_STATS_QUEUE_URL", "IMPORT_QUEUE_URL")
    }
    values = {
        "STATE_TABLE": table,
        "SPOTIFY_ACCOUNTS_URL": fake_spotify.accounts_url,
        "SPOTIFY_API_URL": fake_spotify.api_url,
        "SPOTIFY_CLIENT_ID": fake_spotify.client_id,
        "SPOTIFY_CLIENT_SECRET": fake_spotify.client_secret,
        **queues,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    settings = get_settings()
    crypto.ensure_key_ring(settings)
    Dormancy(settings).signed_in(datetime.now(UTC))  # the schedules run
    yield settings
    get_settings.cache_clear()
    for url in queues.values():
        sqs.delete_queue(QueueUrl=url)
    dynamodb.delete_table(TableName=table)


def listener(conn: psycopg.Connection[Any], settings: Settings) -> int:
    """A user with a valid grant from the fake Spotify, seen just now."""
    user = make_user(conn, "demo")
    keyring = crypto.load_keyring(settings)
    store_grant(conn, keyring, user, grant_for(settings, "demo"), now=datetime.now(UTC))
    conn.execute("UPDATE users SET last_seen_at = now() WHERE id = %s", (user,))
    return user


def sqs_event(settings: Settings, body: dict[str, Any]) -> dict[str, Any]:
    message = {"MessageId": str(uuid.uuid4()), "ReceiptHandle": uuid.uuid4().hex, "Body": json.dumps(body)}
    return events.sqs_event([message], "arn:aws:sqs:us-east-1:000000000000:queue", settings.region)


def http_event(method: str, path: str, cookie: str | None = None) -> dict[str, Any]:
    match, known = events.match_route(WIRING.routes(), method, path)
    assert match is not None, known
    return events.http_to_event(
        method=method,
        raw_path=path,
        raw_query="",
        headers=[("cookie", f"{sessions.COOKIE}={cookie}")] if cookie else [],
        body=b"",
        match=match,
        source_ip="127.0.0.1",
        host="localhost",
        now=datetime.now(UTC),
    )


def test_the_sync_worker(env: Settings, db_conn: psycopg.Connection[Any]) -> None:
    user = listener(db_conn, env)
    first, second = twice_across_a_drop(db_conn, "sync_worker", lambda: sqs_event(env, {"user_id": user}))
    assert first == second == {"batchItemFailures": []}
    row = db_conn.execute(
        "SELECT sync_failures, last_ingested_at FROM users WHERE id = %s", (user,)
    ).fetchone()
    assert row is not None and row[0] == 0 and row[1] > datetime.now(UTC) - timedelta(minutes=1)


def test_the_top_lists(env: Settings, db_conn: psycopg.Connection[Any]) -> None:
    user = listener(db_conn, env)
    first, second = twice_across_a_drop(db_conn, "top_stats", lambda: sqs_event(env, {"user_id": user}))
    assert first == second == {"batchItemFailures": []}
    refreshed = db_conn.execute(
        "SELECT count(*) FROM spotify_top_refresh "
        "WHERE user_id = %s AND refreshed_at > now() - interval '1 minute'",
        (user,),
    ).fetchone()
    assert refreshed == (6,)
    first, second = twice_across_a_drop(db_conn, "top_stats", lambda: SCHEDULED)
    assert "users_queued" in first and "users_queued" in second


def test_the_api(env: Settings, db_conn: psycopg.Connection[Any]) -> None:
    user = listener(db_conn, env)
    cookie = sessions.create(db_conn, user, env, now=datetime.now(UTC), user_agent="tests")
    first, second = twice_across_a_drop(db_conn, "api", lambda: http_event("GET", "/me", cookie))
    assert first["statusCode"] == second["statusCode"] == 200, second


def test_the_sign_out(env: Settings, db_conn: psycopg.Connection[Any]) -> None:
    user = make_user(db_conn)

    def sign_out() -> dict[str, Any]:
        cookie = sessions.create(db_conn, user, env, now=datetime.now(UTC), user_agent="tests")
        return http_event("POST", "/auth/logout", cookie)

    first, second = twice_across_a_drop(db_conn, "auth", sign_out)
    assert first["statusCode"] == second["statusCode"] == 204, second
    live = db_conn.execute(
        "SELECT count(*) FROM sessions WHERE user_id = %s AND revoked_at IS NULL", (user,)
    ).fetchone()
    assert live == (0,)


def test_the_import_worker(env: Settings, db_conn: psycopg.Connection[Any]) -> None:
    notification = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": env.import_bucket},
                    "object": {"key": "imports/nobody.zip", "size": 1},
                },
            }
        ]
    }
    first, second = twice_across_a_drop(db_conn, "import_worker", lambda: sqs_event(env, notification))
    assert first == second == {"batchItemFailures": []}
    first, second = twice_across_a_drop(db_conn, "import_worker", lambda: SCHEDULED)
    assert first == second == {"stuck_failed": 0, "abandoned": 0, "live": 0}


def test_the_enrichment_worker(env: Settings, db_conn: psycopg.Connection[Any]) -> None:
    first, second = twice_across_a_drop(db_conn, "enrichment_worker", lambda: sqs_event(env, {}))
    assert first == second == {"batchItemFailures": []}


def test_the_sync_fanout(env: Settings, db_conn: psycopg.Connection[Any]) -> None:
    listener(db_conn, env)
    first, second = twice_across_a_drop(db_conn, "sync_fanout", lambda: SCHEDULED)
    assert first == {"enqueued": 1} and second == {"enqueued": 0}  # claimed by the first


def test_partition_maintenance(env: Settings, db_conn: psycopg.Connection[Any]) -> None:
    first, second = twice_across_a_drop(db_conn, "partition_maintenance", lambda: SCHEDULED)
    assert first["default_rows_left"] == second["default_rows_left"] == 0
    assert second["created"] == []  # the first made them


def test_a_connection_that_is_still_there_is_kept(env: Settings, db_conn: psycopg.Connection[Any]) -> None:
    user = listener(db_conn, env)
    handler = load_handler(REPO_ROOT / "functions", "sync_worker")

    def backends() -> set[int]:
        rows = db_conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        return {pid for (pid,) in rows}

    assert handler(sqs_event(env, {"user_id": user}), context("sync_worker")) == {"batchItemFailures": []}
    before = backends()
    assert handler(sqs_event(env, {"user_id": user}), context("sync_worker")) == {"batchItemFailures": []}
    assert backends() == before and len(before) == 1
