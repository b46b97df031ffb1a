"""Monthly partitions of listening_events on a real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest

from myi import partitions


@pytest.fixture
def clean_partitions(db_conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    for month in partitions.existing_partitions(db_conn):
        db_conn.execute(f"DROP TABLE {partitions.partition_name(month)}")
    partitions.forget_cache()
    return db_conn


def _seed(conn: psycopg.Connection[Any], stamps: list[str]) -> int:
    uid = conn.execute("INSERT INTO users (spotify_id) VALUES ('p') RETURNING id").fetchone()[0]
    track = conn.execute("INSERT INTO tracks (name, name_key) VALUES ('T', 't') RETURNING id").fetchone()[0]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO listening_events (user_id, track_id, played_at, ms_played, origin) "
            "VALUES (%s, %s, %s, 1000, 'extended')",
            [(uid, track, s) for s in stamps],
        )
    return uid


def test_current_and_next_months_are_created_idempotently(clean_partitions: psycopg.Connection[Any]) -> None:
    conn = clean_partitions
    first = partitions.maintain(conn, date(2026, 11, 24), 3)
    assert first["created"] == [
        "listening_events_p2026_11",
        "listening_events_p2026_12",
        "listening_events_p2027_01",
        "listening_events_p2027_02",
    ]
    again = partitions.maintain(conn, date(2026, 11, 24), 3)
    assert again["created"] == []
    assert partitions.existing_partitions(conn) >= {date(2026, 11, 1), date(2027, 2, 1)}


def test_rows_in_the_default_partition_move_without_loss(clean_partitions: psycopg.Connection[Any]) -> None:
    conn = clean_partitions
    stamps = [
        "2019-03-31T23:59:59Z",
        "2019-04-01T00:00:00Z",
        "2019-04-15T12:00:00Z",
        "2023-12-31T23:00:00Z",
        "2026-11-02T08:00:00Z",
    ]
    uid = _seed(conn, stamps)
    assert conn.execute("SELECT count(*) FROM listening_events_default").fetchone() == (5,)
    before = conn.execute(
        "SELECT played_at FROM listening_events WHERE user_id = %s ORDER BY 1", (uid,)
    ).fetchall()

    result = partitions.maintain(conn, date(2026, 11, 24), 1)

    assert result["default_rows_left"] == 0
    assert "listening_events_p2019_03" in result["created"]
    assert "listening_events_p2019_04" in result["created"]
    assert "listening_events_p2023_12" in result["created"]
    after = conn.execute(
        "SELECT played_at FROM listening_events WHERE user_id = %s ORDER BY 1", (uid,)
    ).fetchall()
    assert after == before
    in_april = conn.execute("SELECT count(*) FROM listening_events_p2019_04").fetchone()
    assert in_april == (2,)
    # The moved partition carries the unique key: the same play cannot be stored twice.
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO listening_events (user_id, track_id, played_at, ms_played, origin) "
            "SELECT user_id, track_id, played_at, 1, 'api' FROM listening_events_p2019_04 LIMIT 1"
        )


def test_concurrent_maintenance_runs_do_not_conflict(
    clean_partitions: psycopg.Connection[Any], database_url: str
) -> None:
    _seed(clean_partitions, ["2020-01-10T00:00:00Z", "2020-02-10T00:00:00Z"])
    errors: list[BaseException] = []
    created: list[str] = []

    def run() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                created.extend(partitions.maintain(conn, date(2026, 11, 24), 3)["created"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(created) == len(set(created)) == 6
    assert clean_partitions.execute("SELECT count(*) FROM listening_events").fetchone() == (2,)


def test_ensure_range_creates_months_an_import_needs(clean_partitions: psycopg.Connection[Any]) -> None:
    conn = clean_partitions
    created = partitions.ensure_range(
        conn, datetime(2015, 11, 3, tzinfo=UTC), datetime(2016, 2, 1, tzinfo=UTC)
    )
    assert created == [
        "listening_events_p2015_11",
        "listening_events_p2015_12",
        "listening_events_p2016_01",
        "listening_events_p2016_02",
    ]
    assert (
        partitions.ensure_range(conn, datetime(2015, 12, 1, tzinfo=UTC), datetime(2016, 1, 1, tzinfo=UTC))
        == []
    )
