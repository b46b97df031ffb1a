"""Ingestion figures: bulk import speed against a plain COPY, and the statements of a sync batch.

``ingest_events_per_s``: 1,000,000 synthetic plays of one user over ten years, 30,000 distinct
tracks (a Zipf-like mix, as real listening is), through :func:`myi.ingestion.bulk_ingest` (the
import's path) as the import worker commits them (``IMPORT_BATCH_SIZE`` plays a transaction, in
ingestion calls of ``BULK_BATCH_SIZE``), statistics included. ``ingest_vs_copy_ratio``: that
time over a plain COPY of the same rows into an unindexed table, measured in the same run.
``sync_batch_statements``: SQL statements one 50-play API batch sends, and
``sync_batch_round_trips``, the round trips to the server they take; ``sync_batch_statements_500``
the same for 500 plays, past ``SMALL_BATCH``, where the batch is analysed and planned each time
(each is fixed whatever the batch's size). They are counted on a warm connection, its statements
prepared by an earlier batch, as a sync worker's is after its first batch. ``MYI_BENCH_PLAYS``
overrides the number of plays for a quick run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from devtools.bench import BenchContext, Figure, stopwatch
from myi import migrate, partitions
from myi.ingestion import BULK_BATCH_SIZE, KnownTracks, bulk_ingest, ingest
from myi.plays import AlbumRef, ArtistRef, Play, TrackRef
from myi.settings import Settings

TOTAL_PLAYS = int(os.environ.get("MYI_BENCH_PLAYS", "1000000"))
DISTINCT_TRACKS = 30_000
YEARS = 10
START = datetime(2015, 1, 1, tzinfo=UTC)


@dataclass
class StatementCounter:
    """The SQL statements sent on a connection, and the round trips they took (a script's
    statements go in one)."""

    count: int = 0
    round_trips: int = 0


@contextmanager
def counting_statements(conn: psycopg.Connection[Any]) -> Iterator[StatementCounter]:
    """Count the statements that cursors of ``conn`` send while the block runs: an ``execute`` is a
    round trip and a statement, each further result of a script read with ``nextset`` one more
    statement (the ingestion core reads every result of its scripts), a COPY a round trip and a
    statement. Transaction control (BEGIN, COMMIT, savepoints) is not counted."""
    counter = StatementCounter()

    class CountingCursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            counter.count += 1
            counter.round_trips += 1
            return super().execute(query, params, **kwargs)

        def nextset(self) -> bool | None:
            found = super().nextset()
            if found:
                counter.count += 1
            return found

        @contextmanager
        def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Iterator[psycopg.Copy]:
            counter.count += 1
            counter.round_trips += 1
            with super().copy(statement, params, **kwargs) as cp:
                yield cp

    saved = conn.cursor_factory
    conn.cursor_factory = CountingCursor
    try:
        yield counter
    finally:
        conn.cursor_factory = saved


def synthetic_catalog(
    tracks: int = DISTINCT_TRACKS, *, full: bool = False, seed: int = 7, prefix: str = "t"
) -> list[TrackRef]:
    """Tracks by ~tracks/10 artists on ~tracks/8 albums, as the export (names) or the API (ids) has them."""
    rng = random.Random(seed)
    artists = [f"Artist {i}" for i in range(max(1, tracks // 10))]
    out = []
    for i in range(tracks):
        artist_index = rng.randrange(len(artists))
        artist = ArtistRef(artists[artist_index], f"a{artist_index:021d}" if full else None)
        album_index = i // 8
        album = AlbumRef(f"Album {album_index}", f"l{album_index:021d}" if full else None, artists=(artist,))
        out.append(
            TrackRef(
                name=f"Song {i}",
                spotify_id=f"{prefix}{i:021d}",
                artists=(artist,),
                album=album,
                duration_ms=rng.randrange(120_000, 360_000) if full else None,
            )
        )
    return out


def synthetic_plays(
    catalog: list[TrackRef], total: int, *, origin: str = "extended", seed: int = 11, start: datetime = START
) -> Iterator[Play]:
    """``total`` plays in time order over ``YEARS`` years, tracks drawn Zipf-like."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** 0.9 for rank in range(len(catalog))]
    span = timedelta(days=365 * YEARS).total_seconds()
    step = span / total
    chosen = rng.choices(catalog, weights=weights, k=total)
    for i, track in enumerate(chosen):
        when = start + timedelta(seconds=int(i * step + rng.random() * step * 0.5))
        ms = rng.randrange(30_000, 300_000)
        yield Play(track, when, origin, ms if origin != "api" else None)  # type: ignore[arg-type]


def _fresh_user(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute(
        "INSERT INTO users (spotify_id, timezone) VALUES (%s, 'Europe/Berlin') "
        "ON CONFLICT (spotify_id) DO UPDATE SET timezone = EXCLUDED.timezone RETURNING id",
        (name,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def load_user(
    conn: psycopg.Connection[Any], name: str, plays: int, commit_size: int, *, start: datetime = START
) -> tuple[int, float]:
    """A user with ``plays`` synthetic plays over ``YEARS`` years from ``start``, ingested as the
    import worker does (a transaction per ``commit_size`` plays, ingestion calls of
    ``BULK_BATCH_SIZE`` plays); returns (id, seconds). The plays are generated before the clock
    starts: the figure is the ingestion core's, not the generator's."""
    user = _fresh_user(conn, name)
    catalog = synthetic_catalog(min(DISTINCT_TRACKS, max(100, plays // 30)))
    partitions.ensure_range(conn, start, start + timedelta(days=365 * YEARS + 1))
    every = list(synthetic_plays(catalog, plays, start=start))
    chunk = min(BULK_BATCH_SIZE, commit_size)
    known: KnownTracks = {}
    with stopwatch() as elapsed:
        for first in range(0, len(every), commit_size):
            group = every[first : first + commit_size]
            with bulk_ingest(conn, user, known=known) as bulk:
                for i in range(0, len(group), chunk):
                    bulk.add(group[i : i + chunk])
    return user, elapsed()


def run(ctx: BenchContext) -> Iterator[Figure]:
    settings = Settings.from_env().replace(database_url=ctx.database_url)
    with psycopg.connect(ctx.database_url, autocommit=True, prepare_threshold=None) as conn:
        migrate.migrate(conn)
        conn.execute("VACUUM ANALYZE")
        user, seconds = load_user(conn, "bench-ingest", TOTAL_PLAYS, settings.import_batch_size)
        yield Figure("ingest_events_per_s", TOTAL_PLAYS / seconds, "events/s")

        # The same rows, plainly copied into a table without any index.
        rows = conn.execute(
            "SELECT user_id, track_id, played_at, ms_played FROM listening_events WHERE user_id = %s", (user,)
        ).fetchall()
        conn.execute(
            "CREATE TABLE bench_copy (user_id bigint, track_id bigint, played_at timestamptz, ms_played int)"
        )
        with stopwatch() as copy_elapsed, conn.cursor() as cur, cur.copy("COPY bench_copy FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        conn.execute("DROP TABLE bench_copy")
        yield Figure("ingest_vs_copy_ratio", seconds / copy_elapsed(), "x")

        sync_user = _fresh_user(conn, "bench-sync")
        catalog = synthetic_catalog(2_000, full=True, seed=3, prefix="s")
        warm = list(synthetic_plays(catalog, 1, origin="api", seed=1))
        ingest(conn, _fresh_user(conn, "bench-warm"), warm)  # prepares the connection's statements
        for size, name in ((50, "sync_batch_statements"), (500, "sync_batch_statements_500")):
            plays = list(synthetic_plays(catalog, size, origin="api", seed=size))
            partitions.ensure_range(conn, plays[0].played_at, plays[-1].played_at)
            with counting_statements(conn) as counter:
                ingest(conn, sync_user, plays)
            yield Figure(name, counter.count, "statements")
            if size == 50:
                yield Figure("sync_batch_round_trips", counter.round_trips, "round trips")
