"""The session side of ingestion: the staging tables, the transaction a batch runs in, and how its
statements reach the server.

The staging tables are temporary tables, created once per connection. They have no keys, and they
keep their rows at commit: every transaction that stages rows empties them itself before it ends
(see :func:`transaction`). At each commit of a transaction that used any temporary table,
PostgreSQL empties every ``ON COMMIT DELETE ROWS`` one and rebuilds each index it has (a text or
array column brings the index of a TOAST table), about half a millisecond an index: a small
batch's DELETE costs a fraction of that. A batch's joins hash on these columns instead of keys
(they are unique by construction in :func:`myi.ingestion.staging.stage`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS tmp_artists (
    rk integer NOT NULL, spotify_id text, name text NOT NULL, name_key text NOT NULL,
    image_url text, id bigint
);
CREATE TEMP TABLE IF NOT EXISTS tmp_albums (
    ak integer NOT NULL, spotify_id text, name text NOT NULL, name_key text NOT NULL,
    artist_key text NOT NULL, image_url text, release_date text, id bigint
);
CREATE TEMP TABLE IF NOT EXISTS tmp_album_artists (
    ak integer NOT NULL, rk integer NOT NULL, position smallint NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS tmp_tracks (
    tk integer NOT NULL, spotify_id text, name text NOT NULL, name_key text NOT NULL,
    artist_key text NOT NULL, duration_ms integer, explicit boolean, ak integer, full_data boolean NOT NULL,
    id bigint, album_id bigint, is_new boolean NOT NULL DEFAULT false, alt_ids bigint[]
);
CREATE TEMP TABLE IF NOT EXISTS tmp_track_artists (
    tk integer NOT NULL, rk integer NOT NULL, position smallint NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS tmp_plays (
    seq integer NOT NULL, tk integer NOT NULL, played_at timestamptz NOT NULL, ms_played integer,
    origin text NOT NULL, track_id bigint, alt_ids bigint[], action text, target_track bigint,
    target timestamptz
);
CREATE TEMP TABLE IF NOT EXISTS tmp_delta (
    track_id bigint NOT NULL, played_at timestamptz NOT NULL, plays integer NOT NULL DEFAULT 1,
    ms bigint NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS tmp_album_moves (
    track_id bigint NOT NULL, old_album bigint, new_album bigint
);
CREATE TEMP TABLE IF NOT EXISTS tmp_credit_moves (
    track_id bigint NOT NULL, artist_id bigint NOT NULL, sign integer NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS tmp_artist_merges (
    p bigint NOT NULL, r bigint NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS tmp_album_merges (
    p bigint NOT NULL, r bigint NOT NULL
);
"""
# Every staging table: those of one batch, and tmp_delta, which a bulk ingestion fills across its
# batches.
STAGING_TABLES = (
    "tmp_artists, tmp_albums, tmp_album_artists, tmp_tracks, tmp_track_artists, tmp_plays, "
    "tmp_album_moves, tmp_credit_moves, tmp_artist_merges, tmp_album_merges, tmp_delta"
)
TRUNCATE_STAGING_SQL = f"TRUNCATE {STAGING_TABLES}"
TRUNCATE_BATCH_SQL = """
TRUNCATE tmp_artists, tmp_albums, tmp_album_artists, tmp_tracks, tmp_track_artists, tmp_plays,
         tmp_album_moves, tmp_credit_moves, tmp_artist_merges, tmp_album_merges"""
# How a small batch empties every staging table as it ends (prepared: see myi.ingestion.batch).
EMPTY_SQL = """
WITH d0 AS (DELETE FROM tmp_artists), d1 AS (DELETE FROM tmp_albums), d2 AS (DELETE FROM tmp_album_artists),
     d3 AS (DELETE FROM tmp_tracks), d4 AS (DELETE FROM tmp_track_artists), d5 AS (DELETE FROM tmp_plays),
     d6 AS (DELETE FROM tmp_album_moves), d7 AS (DELETE FROM tmp_credit_moves),
     d8 AS (DELETE FROM tmp_artist_merges), d9 AS (DELETE FROM tmp_album_merges)
DELETE FROM tmp_delta"""
# Emptying the staging tables by DELETE leaves their dead rows behind (nothing vacuums temporary
# tables): one small batch in EMPTYING_ROUNDS truncates them instead.
EMPTYING_ROUNDS = 32

# The connections whose staging tables exist (created by a committed transaction).
_created: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
# Small batches on each connection since its staging tables were last truncated (see empties_itself).
_rounds: weakref.WeakKeyDictionary[psycopg.Connection[Any], int] = weakref.WeakKeyDictionary()

Row = tuple[Any, ...]


class Exec:
    """Runs the statements of one transaction on its cursor (made by the connection's
    ``cursor_factory``, which is how ``make bench`` counts them)."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur
        self.emptied = False  # the staging tables emptied by the transaction's last statement
        self._client: psycopg.ClientCursor[Any] | None = None

    def __call__(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        return self.cur.execute(sql, params)

    def script(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        """Several statements in one round trip; returns the cursor at the last one's result.
        Client-side binding: the server binds the parameters of one statement at a time."""
        self.cur.execute(self.mogrify(sql, params) if params else sql)
        while self.cur.nextset():
            pass
        return self.cur

    def run_all(self, statements: list[str]) -> list[tuple[int, Row | None]]:
        """Run ``statements`` (their arguments bound) in one round trip; each one's row count and
        first row."""
        cur = self.cur
        cur.execute(";\n".join(statements))
        out: list[tuple[int, Row | None]] = []
        while True:
            out.append((cur.rowcount, cur.fetchone() if cur.description else None))
            if not cur.nextset():
                return out

    def mogrify(self, sql: str, params: Any) -> str:
        """``sql`` with ``params`` bound as literals (psycopg quotes them)."""
        if self._client is None:
            self._client = psycopg.ClientCursor(self.cur.connection)
        return self._client.mogrify(sql, params)

    @contextmanager
    def copy(self, sql: str) -> Iterator[psycopg.Copy]:
        with self.cur.copy(sql) as cp:
            yield cp


@contextmanager
def transaction(conn: psycopg.Connection[Any]) -> Iterator[Exec]:
    """A transaction (a savepoint inside a caller's) with the staging tables, empty.

    The tables are created once per connection. Every transaction empties them before it ends:
    its last statement does (``Exec.emptied``), or the TRUNCATE here; a rollback discards whatever
    it staged (a savepoint's rollback, too). So they are empty at every start, inside a caller's
    transaction as well. A connection counts as having them once the transaction that created
    them has committed (a rolled-back CREATE leaves no table); inside a caller's transaction,
    which may still roll back, they are looked for."""
    nested = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    created = False
    with conn.transaction(), conn.cursor() as cur:
        ex = Exec(cur)
        if nested:
            row = ex("SELECT to_regclass('pg_temp.tmp_delta') IS NOT NULL").fetchone()
            if not (row and row[0]):
                ex.script(TEMP_TABLES)
        elif conn not in _created:
            ex.script(TEMP_TABLES)
            created = True
        yield ex
        if not ex.emptied:
            ex(TRUNCATE_STAGING_SQL)
    if created:
        _created.add(conn)


def has_tables(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn``'s staging tables exist (created by a committed transaction)."""
    return conn in _created


def empties_itself(ex: Exec) -> bool:
    """Whether the small batch running on ``ex`` empties the staging tables with its last
    statement (by DELETE; they count as emptied). One small batch in EMPTYING_ROUNDS on a
    connection leaves them to :func:`transaction`'s TRUNCATE, which drops the dead rows the
    DELETEs before it left."""
    conn = ex.cur.connection
    rounds = _rounds.get(conn, 0) + 1
    _rounds[conn] = rounds % EMPTYING_ROUNDS
    if rounds == EMPTYING_ROUNDS:
        return False
    ex.emptied = True
    return True
