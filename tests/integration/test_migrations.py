"""Migrations on a real PostgreSQL: applied once, in order, under a lock."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from devtools import embedded
from myi import migrate, users
from myi.ingestion import ingest
from myi.plays import AlbumRef, ArtistRef, Play, TrackRef
from myi.statistics import maintenance
from tests.fixtures.plays import at, make_user


def _fresh_db() -> tuple[embedded.EmbeddedPostgres, str]:
    pg = embedded.start_postgres("pg-test")
    return pg, pg.create_database()


def test_migrations_apply_in_order_and_only_once() -> None:
    pg, url = _fresh_db()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            first = migrate.migrate(conn)
            second = migrate.migrate(conn)
            versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        assert first == [m.name for m in migrate.load_migrations()]
        assert second == []
        assert versions == [m.version for m in migrate.load_migrations()]
    finally:
        pg.drop_database(url)


def test_concurrent_runners_apply_each_migration_once() -> None:
    pg, url = _fresh_db()
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                results.append(migrate.migrate(conn))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        applied = [name for r in results for name in r]
        assert sorted(applied) == sorted(m.name for m in migrate.load_migrations())
    finally:
        pg.drop_database(url)


def test_deleting_a_user_removes_all_their_rows(db_conn: psycopg.Connection[Any]) -> None:
    uid = db_conn.execute("INSERT INTO users (spotify_id) VALUES ('u1') RETURNING id").fetchone()[0]
    other = db_conn.execute("INSERT INTO users (spotify_id) VALUES ('u2') RETURNING id").fetchone()[0]
    track = db_conn.execute(
        "INSERT INTO tracks (spotify_id, name, name_key) VALUES ('t1', 'T', 't') RETURNING id"
    ).fetchone()[0]
    for user in (uid, other):
        db_conn.execute(
            "INSERT INTO listening_events (user_id, track_id, played_at, ms_played, origin) "
            "VALUES (%s, %s, '2024-01-01T00:00:00Z', 1000, 'api')",
            (user, track),
        )
        db_conn.execute(
            "INSERT INTO stat_track (user_id, grain, bucket, track_id, plays, ms_played) "
            "VALUES (%s, 0, '1970-01-01', %s, 1, 1000)",
            (user, track),
        )
        db_conn.execute(
            "INSERT INTO sessions (id_hash, user_mac, user_id, expires_at) "
            "VALUES (%s, %s, %s, now() + interval '1 day')",
            (f"h{user}".encode(), b"m", user),
        )
    assert users.delete(db_conn, uid)
    tables = [
        r[0]
        for r in db_conn.execute(
            """
            SELECT DISTINCT c.table_name FROM information_schema.columns c
            JOIN information_schema.tables t USING (table_schema, table_name)
            WHERE c.table_schema = 'public' AND c.column_name = 'user_id' AND t.table_type = 'BASE TABLE'
            """
        )
    ]
    assert "listening_events_default" in tables
    for table in tables:
        left = db_conn.execute(f"SELECT count(*) FROM {table} WHERE user_id = %s", (uid,)).fetchone()[0]
        assert left == 0, table
    kept = db_conn.execute("SELECT count(*) FROM listening_events WHERE user_id = %s", (other,)).fetchone()
    assert kept == (1,)
    assert db_conn.execute("SELECT count(*) FROM tracks").fetchone() == (1,)


def test_migration_0011_gives_names_of_symbols_their_own_keys(db_conn: psycopg.Connection[Any]) -> None:
    """A catalog written before 0011 keyed every name without a letter or digit to ''; the
    migration re-keys those rows, touches no other, and the statistics stay exact."""
    user = make_user(db_conn)
    ed, band = ArtistRef("Ed Sheeran"), ArtistRef("!!!")
    plays = [
        Play(
            TrackRef("Perfect", "0000000000000000000001", (ed,), AlbumRef("÷", artists=(ed,))),
            at(0),
            "extended",
            200_000,
        ),
        Play(
            TrackRef("Wallop", "0000000000000000000002", (band,), AlbumRef("Thr!!!er", artists=(band,))),
            at(300),
            "extended",
            200_000,
        ),
        Play(TrackRef("...", None, (band,)), at(600).replace(second=0), "account", 90_000),
    ]
    ingest(db_conn, user, plays)
    # the catalog as the old rule left it
    for table in ("artists", "albums", "tracks"):
        db_conn.execute(f"UPDATE {table} SET name_key = '' WHERE name IN ('÷', '!!!', '...')")
    db_conn.execute("UPDATE albums SET artist_key = '' WHERE name = 'Thr!!!er'")
    db_conn.execute("UPDATE tracks SET artist_key = '' WHERE name IN ('Wallop', '...')")
    before = db_conn.execute(
        "SELECT 'track', id, name FROM tracks UNION ALL SELECT 'album', id, name FROM albums"
    ).fetchall()

    migration = next(m for m in migrate.load_migrations() if m.version == 11)
    with db_conn.transaction():
        migration.apply(db_conn)

    keys = db_conn.execute(
        "SELECT name, name_key, artist_key FROM albums "
        "UNION ALL SELECT name, name_key, artist_key FROM tracks "
        "UNION ALL SELECT name, name_key, NULL FROM artists ORDER BY 1"
    ).fetchall()
    assert keys == [
        ("!!!", "!!!", None),
        ("...", "...", "!!!"),
        ("Ed Sheeran", "ed sheeran", None),
        ("Perfect", "perfect", "ed sheeran"),
        ("Thr!!!er", "thr er", "!!!"),
        ("Wallop", "wallop", "!!!"),
        ("÷", "÷", "ed sheeran"),
    ]
    assert (
        db_conn.execute(
            "SELECT 'track', id, name FROM tracks UNION ALL SELECT 'album', id, name FROM albums"
        ).fetchall()
        == before
    )
    assert maintenance.verify(db_conn, user) == []
    # the same plays again find the re-keyed rows: no new catalog row, nothing added
    result = ingest(db_conn, user, plays)
    assert result.added == 0
    assert db_conn.execute("SELECT count(*) FROM tracks").fetchone() == (3,)
    assert db_conn.execute("SELECT count(*) FROM artists").fetchone() == (2,)
