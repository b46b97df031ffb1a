"""Properties of the ingestion core under random interleavings and concurrency (real PostgreSQL)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from myi import partitions
from myi.ingestion import IngestResult, bulk_ingest, ingest
from myi.ingestion import bulk as ingestion
from myi.plays import Play
from myi.statistics import maintenance
from tests.fixtures.plays import BASE, RECENT_FLOOR, account_play, api_play, at, extended_play, make_user

# Offsets chosen so that near-duplicates at the edges of both tolerances occur often.
OFFSETS = [0, 1, 29, 30, 31, 59, 60, 61, 90, 600, 3600, 86_400]


@st.composite
def batch(draw: st.DrawFn, origin: str) -> list[Play]:
    plays = []
    for _ in range(draw(st.integers(1, 8))):
        track = draw(st.integers(0, 3))
        when = BASE + timedelta(seconds=draw(st.sampled_from(OFFSETS)) + draw(st.sampled_from([0, 0, 2, -3])))
        ms = draw(st.sampled_from([31_000, 120_000, 240_000]))
        if origin == "api":
            plays.append(api_play(track, when))
        elif origin == "extended":
            plays.append(extended_play(track, when, ms=ms))
        else:
            plays.append(account_play(track, when, ms=ms))
    return plays


@st.composite
def batches(draw: st.DrawFn) -> list[list[Play]]:
    out: list[list[Play]] = []
    for _ in range(draw(st.integers(1, 6))):
        if out and draw(st.booleans()) and draw(st.booleans()):
            out.append(list(draw(st.sampled_from(out))))  # a repeated delivery
            continue
        out.append(draw(batch(draw(st.sampled_from(["api", "extended", "account"])))))
    return out


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[str, list[list[Play]]]]:
    """Syncs (one API batch) and import transactions (export batches of one origin each)."""
    out: list[tuple[str, list[list[Play]]]] = []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            out.append(("sync", [draw(batch("api"))]))
        else:
            count = draw(st.integers(1, 4))
            out.append(
                (
                    "import",
                    [draw(batch(draw(st.sampled_from(["extended", "account"])))) for _ in range(count)],
                )
            )
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=batches())
def test_random_interleavings_keep_every_statistic_exact(
    db_conn: psycopg.Connection[Any], sequence: list[list[Play]]
) -> None:
    user = make_user(db_conn, spotify_id=f"prop-{uuid.uuid4().hex}", recent_floor=RECENT_FLOOR)
    added_total = 0
    for batch in sequence:
        result = ingest(db_conn, user, batch)
        assert result.added + result.merged + result.duplicates == len(batch)
        added_total += result.added
        assert maintenance.verify(db_conn, user) == []
    stored = db_conn.execute("SELECT count(*) FROM listening_events WHERE user_id = %s", (user,)).fetchone()
    assert stored == (added_total,)
    # Replaying everything once more adds nothing.
    for batch in sequence:
        assert ingest(db_conn, user, batch).added == 0
    assert maintenance.verify(db_conn, user) == []


def _rounds(per_round: int, tracks: int, ms: int, spacing: timedelta) -> Callable[[str, int], list[Play]]:
    """The plays of round ``r``: a sync's API plays, or the same plays as an import has them (a
    few seconds earlier, with their real duration)."""

    def plays(kind: str, r: int) -> list[Play]:
        out = []
        for i in range(per_round):
            when = BASE + timedelta(hours=r) + i * spacing
            if kind == "api":
                out.append(api_play(i % tracks, when))
            else:
                out.append(extended_play(i % tracks, when - timedelta(seconds=5), ms=ms))
        return out

    return plays


def _race(*jobs: Callable[[], None]) -> None:
    """Run the jobs on threads of their own at once; fail with what any of them raised."""
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _assert_merged_exactly(conn: psycopg.Connection[Any], user: int, plays: int, ms: int) -> None:
    """Every play stored once, made exact by its import twin, and exact statistics."""
    rows = conn.execute(
        "SELECT count(*), sum(ms_played), bool_or(is_estimated) FROM listening_events WHERE user_id = %s",
        (user,),
    ).fetchone()
    assert rows == (plays, plays * ms, False)
    assert maintenance.verify(conn, user) == []


def test_concurrent_sync_and_import_of_one_user_never_lose_or_double_a_count(
    db_conn: psycopg.Connection[Any], database_url: str
) -> None:
    user = make_user(db_conn, spotify_id="concurrent", recent_floor=RECENT_FLOOR)
    rounds, per_round = 12, 25
    plays = _rounds(per_round, 7, 111_000, timedelta(minutes=4))

    def worker(kind: str) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for r in range(rounds):
                ingest(conn, user, plays(kind, r))
                ingest(conn, user, plays(kind, r))  # a redelivery, racing the other source

    _race(lambda: worker("api"), lambda: worker("import"))
    _assert_merged_exactly(db_conn, user, rounds * per_round, 111_000)


def _events(conn: psycopg.Connection[Any], user: int) -> list[tuple[Any, ...]]:
    """A user's plays, each with its track's identity (artist and name): which of two tracks of one
    identity a name-only record is credited to depends on what the catalog held when it was
    resolved, and an import resolves many batches' tracks at once."""
    return conn.execute(
        "SELECT t.artist_key, t.name_key, e.played_at, e.ms_played, e.is_estimated, e.origin "
        "FROM listening_events e JOIN tracks t ON t.id = e.track_id "
        "WHERE e.user_id = %s ORDER BY 3, 1, 2, 6",
        (user,),
    ).fetchall()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=steps(), pending=st.sampled_from([1, 2, 1000]))
def test_bulk_ingestion_stores_what_batch_by_batch_ingestion_stores(
    db_conn: psycopg.Connection[Any], sequence: list[tuple[str, list[list[Play]]]], pending: int
) -> None:
    """An import's transactions (bulk_ingest: plays of new tracks waiting for one catalog pass,
    batches with nothing stored nearby copied straight in) store exactly the events and counts
    that ingesting the same batches one by one stores, with exact statistics."""
    bulk_user = make_user(db_conn, spotify_id=f"bulk-{uuid.uuid4().hex}", recent_floor=RECENT_FLOOR)
    ref_user = make_user(db_conn, spotify_id=f"ref-{uuid.uuid4().hex}", recent_floor=RECENT_FLOOR)
    partitions.ensure_range(db_conn, BASE - timedelta(days=1), BASE + timedelta(days=2))
    bulk_total, ref_total = IngestResult(), IngestResult()
    saved = ingestion.PENDING_TRACKS
    ingestion.PENDING_TRACKS = pending
    try:
        for kind, content in sequence:
            if kind == "sync":
                bulk_total = bulk_total + ingest(db_conn, bulk_user, content[0])
            else:
                with bulk_ingest(db_conn, bulk_user) as bulk:
                    for plays in content:
                        bulk.add(plays)
                bulk_total = bulk_total + bulk.result
            for plays in content:
                ref_total = ref_total + ingest(db_conn, ref_user, plays)
            assert maintenance.verify(db_conn, bulk_user) == []
    finally:
        ingestion.PENDING_TRACKS = saved
    desc = [
        (kind, [[(p.origin, p.track.name, p.played_at.time(), p.ms_played) for p in b] for b in content])
        for kind, content in sequence
    ]
    assert bulk_total == ref_total, (desc, pending)
    assert _events(db_conn, bulk_user) == _events(db_conn, ref_user), (desc, pending)


@contextmanager
def _sync_held_at_its_statistics(database_url: str, user: int, plays: list[Play]) -> Iterator[None]:
    """A sync's batch of ``user`` on a connection of its own, held (with every lock it has taken,
    its catalog statements run) where it adds to the user's statistics, by a transaction holding
    them; it goes on when the block ends, and must have been stored by then."""
    pid: list[int] = []
    done: list[IngestResult] = []

    def run() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            pid.append(conn.info.backend_pid)
            done.append(ingest(conn, user, plays))

    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM stat_track WHERE user_id = %s FOR UPDATE", (user,))
        thread = threading.Thread(target=run)
        thread.start()
        try:
            for _ in range(200):
                if pid:
                    row = holder.execute(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid[0],)
                    ).fetchone()
                    if row and row[0] == "Lock":
                        break
                time.sleep(0.05)
            else:
                raise AssertionError("the sync never reached its statistics")
            yield
        finally:
            holder.rollback()
            thread.join()
    assert done and done[0].added == len(plays)


def test_syncs_of_different_users_hold_the_catalog_lock_together(
    db_conn: psycopg.Connection[Any], database_url: str
) -> None:
    first, second = (
        make_user(db_conn, spotify_id=f"together-{i}", recent_floor=RECENT_FLOOR) for i in (1, 2)
    )
    ingest(db_conn, first, [api_play(n, at(60 * n)) for n in range(4)])  # the catalog knows the tracks
    with (
        _sync_held_at_its_statistics(database_url, first, [api_play(n, at(3600 + 60 * n)) for n in range(4)]),
        psycopg.connect(database_url, autocommit=True) as other,
    ):
        other.execute("SET lock_timeout = '2s'")
        assert ingest(other, second, [api_play(n, at(60 * n)) for n in range(6)]) == IngestResult(added=6)
    assert maintenance.verify(db_conn, first) == [] and maintenance.verify(db_conn, second) == []


def test_a_sync_that_moves_an_album_waits_for_the_catalog_lock_alone(
    db_conn: psycopg.Connection[Any], database_url: str
) -> None:
    first, second = (make_user(db_conn, spotify_id=f"alone-{i}", recent_floor=RECENT_FLOOR) for i in (1, 2))
    ingest(db_conn, first, [api_play(1, at(0)), api_play(2, at(300))])
    moved = [api_play(1, at(600), album=9)]  # Spotify now has track 1 on another album
    with (
        _sync_held_at_its_statistics(database_url, first, [api_play(2, at(3600))]),
        psycopg.connect(database_url, autocommit=True) as other,
    ):
        other.execute("SET lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            ingest(other, second, moved)
    assert db_conn.execute(
        "SELECT count(*) FROM listening_events WHERE user_id = %s", (second,)
    ).fetchone() == (0,)
    assert ingest(db_conn, second, moved) == IngestResult(added=1)
    album = db_conn.execute(
        "SELECT a.spotify_id FROM tracks t JOIN albums a ON a.id = t.album_id WHERE t.spotify_id = %s",
        (moved[0].track.spotify_id,),
    ).fetchone()
    assert album == (f"alb{9:019d}",)
    assert maintenance.verify(db_conn, first) == [] and maintenance.verify(db_conn, second) == []


def _statistics(conn: psycopg.Connection[Any], user: int) -> list[tuple[Any, ...]]:
    """A user's statistics rows (by track identity, artist and album name), comparable across users."""
    return conn.execute(
        """
        SELECT 'track', s.grain, s.bucket, t.artist_key || '/' || t.name_key, s.plays, s.ms_played
          FROM stat_track s JOIN tracks t ON t.id = s.track_id WHERE s.user_id = %(u)s
        UNION ALL
        SELECT 'artist', s.grain, s.bucket, a.name_key, s.plays, s.ms_played
          FROM stat_artist s JOIN artists a ON a.id = s.artist_id WHERE s.user_id = %(u)s
        UNION ALL
        SELECT 'album', s.grain, s.bucket, a.artist_key || '/' || a.name_key, s.plays, s.ms_played
          FROM stat_album s JOIN albums a ON a.id = s.album_id WHERE s.user_id = %(u)s
        UNION ALL
        SELECT 'user', grain, bucket, '', plays, ms_played FROM stat_user WHERE user_id = %(u)s
        UNION ALL
        SELECT 'hour', grain, bucket, weekday || ':' || hour, plays, ms_played
          FROM stat_hour WHERE user_id = %(u)s
        ORDER BY 1, 2, 3, 4, 5, 6
        """,
        {"u": user},
    ).fetchall()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=batches())
def test_small_batches_store_what_planned_batches_store(
    db_conn: psycopg.Connection[Any], sequence: list[list[Play]]
) -> None:
    """A small batch (prepared statements, staging tables not analysed) and the same batch inside a
    caller's transaction (planned each time, staging tables analysed) store the same events and
    statistics, with the same counts."""
    small = make_user(db_conn, spotify_id=f"small-{uuid.uuid4().hex}", recent_floor=RECENT_FLOOR)
    planned = make_user(db_conn, spotify_id=f"planned-{uuid.uuid4().hex}", recent_floor=RECENT_FLOOR)
    partitions.ensure_range(db_conn, BASE - timedelta(days=1), BASE + timedelta(days=2))
    for batch in sequence:
        got = ingest(db_conn, small, batch)
        with db_conn.transaction():
            assert ingest(db_conn, planned, batch) == got
    assert _events(db_conn, small) == _events(db_conn, planned)
    assert _statistics(db_conn, small) == _statistics(db_conn, planned)
    assert maintenance.verify(db_conn, small) == [] and maintenance.verify(db_conn, planned) == []


def test_concurrent_sync_and_bulk_import_of_one_user_stay_exact(
    db_conn: psycopg.Connection[Any], database_url: str
) -> None:
    """The import's path (bulk_ingest) racing syncs of the same user, both redelivering."""
    user = make_user(db_conn, spotify_id="concurrent-bulk", recent_floor=RECENT_FLOOR)
    rounds, per_round = 10, 30
    plays = _rounds(per_round, 9, 99_000, timedelta(minutes=2))
    partitions.ensure_range(db_conn, BASE, BASE + timedelta(hours=rounds + 1))

    def syncs() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for r in range(rounds):
                ingest(conn, user, plays("api", r))
                ingest(conn, user, plays("api", r))

    def imports() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for r in range(0, rounds, 2):
                with bulk_ingest(conn, user) as bulk:
                    bulk.add(plays("import", r))
                    bulk.add(plays("import", r + 1))
                    bulk.add(plays("import", r))  # a redelivery inside the transaction

    _race(syncs, imports)
    _assert_merged_exactly(db_conn, user, rounds * per_round, 99_000)
