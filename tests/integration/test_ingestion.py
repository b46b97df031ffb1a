"""The ingestion core on a real PostgreSQL: dedupe, merge, catalog and exact statistics."""

from __future__ import annotations

from typing import Any

import psycopg

from myi.ingestion import IngestResult, ingest
from myi.statistics import maintenance
from tests.fixtures.plays import RECENT_FLOOR, account_play, api_play, at, extended_play, make_user


def events(conn: psycopg.Connection[Any], user: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT x.spotify_id, x.name, e.played_at, e.ms_played, e.is_estimated, e.origin "
        "FROM listening_events e JOIN tracks x ON x.id = e.track_id WHERE e.user_id = %s ORDER BY 3, 2",
        (user,),
    ).fetchall()


def assert_exact(conn: psycopg.Connection[Any], user: int) -> None:
    assert maintenance.verify(conn, user) == []


def test_a_sync_batch_adds_plays_with_estimated_durations(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    result = ingest(db_conn, user, [api_play(1, at(0)), api_play(2, at(300))])
    assert result == IngestResult(added=2)
    rows = events(db_conn, user)
    assert [(r[3], r[4], r[5]) for r in rows] == [(200_000, True, "api"), (200_000, True, "api")]
    assert_exact(db_conn, user)


def test_the_same_batch_twice_adds_nothing_the_second_time(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    batch = [api_play(1, at(0)), api_play(2, at(300)), api_play(1, at(900))]
    assert ingest(db_conn, user, batch) == IngestResult(added=3)
    assert ingest(db_conn, user, batch) == IngestResult(duplicates=3)
    assert len(events(db_conn, user)) == 3
    assert_exact(db_conn, user)


def test_a_record_repeated_in_its_batch_counts_once_as_it_came_first(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    def batch(base: int) -> list[Any]:
        # Tracks 1..20 at one time each, every record twice; the repeat of track 7 says otherwise.
        first = [extended_play(n, at(base + 10 * n), ms=100_000 + n) for n in range(20, 0, -1)]
        again = [extended_play(n, at(base + 10 * n), ms=(1 if n == 7 else 100_000 + n)) for n in range(1, 21)]
        return first + again

    # Nothing stored near the first batch (its plays are copied in); a stored play lies within
    # reach of the second (they are matched against the stored plays).
    assert ingest(db_conn, user, batch(0)) == IngestResult(added=20, duplicates=20)
    ingest(db_conn, user, [api_play(30, at(100_000))])
    assert ingest(db_conn, user, batch(100_000)) == IngestResult(added=20, duplicates=20)
    rows = [r for r in events(db_conn, user) if r[5] == "extended"]
    assert len(rows) == 40 and 1 not in {r[3] for r in rows}
    assert_exact(db_conn, user)


def test_a_batch_whose_prepared_fold_was_deallocated_is_stored(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    assert ingest(db_conn, user, [api_play(1, at(0))]) == IngestResult(added=1)
    db_conn.execute("DEALLOCATE ALL")  # as a pooler resetting the session would
    assert ingest(db_conn, user, [api_play(2, at(300))]) == IngestResult(added=1)
    assert ingest(db_conn, user, [api_play(3, at(600))]) == IngestResult(added=1)
    assert len(events(db_conn, user)) == 3
    assert_exact(db_conn, user)


def test_a_small_batchs_planner_settings_end_with_it(db_conn: psycopg.Connection[Any], user: int) -> None:
    before = db_conn.execute("SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')")
    assert before.fetchone() == ("on", "on")
    assert ingest(db_conn, user, [api_play(1, at(0))]) == IngestResult(added=1)
    after = db_conn.execute("SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')")
    assert after.fetchone() == ("on", "on")


def staged_rows(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """The staging tables of ``conn``'s session that hold live rows, with how many."""
    from myi.ingestion.session import STAGING_TABLES as _STAGING_TABLES

    tables = _STAGING_TABLES.split(", ")
    counts = conn.execute(" UNION ALL ".join(f"SELECT count(*) FROM {t}" for t in tables)).fetchall()
    return {t: int(c[0]) for t, c in zip(tables, counts, strict=True) if c[0]}


def test_no_staged_row_outlives_the_batch_that_staged_it(db_conn: psycopg.Connection[Any], user: int) -> None:
    """The staging tables keep their rows at commit: each batch empties them itself, whichever
    way it went (small, large, inside a caller's transaction, bulk, failed), and the next batch of
    another user counts only its own plays."""
    import pytest

    from myi.ingestion import SMALL_BATCH, bulk_ingest

    other = make_user(db_conn, "other")
    empty: dict[str, int] = {}
    assert ingest(db_conn, user, [api_play(n, at(60 * n)) for n in range(5)]) == IngestResult(added=5)
    assert staged_rows(db_conn) == empty
    large = [extended_play(n % 40, at(10_000 + 60 * n)) for n in range(SMALL_BATCH + 1)]
    assert ingest(db_conn, user, large) == IngestResult(added=SMALL_BATCH + 1)
    assert staged_rows(db_conn) == empty
    with db_conn.transaction():
        assert ingest(db_conn, user, [account_play(3, at(50_000))]) == IngestResult(added=1)
    assert staged_rows(db_conn) == empty
    with bulk_ingest(db_conn, user) as bulk:
        bulk.add([extended_play(7, at(60_000)), extended_play(8, at(60_300))])
    assert staged_rows(db_conn) == empty
    with pytest.raises(LookupError):
        ingest(db_conn, 10**9, [api_play(1, at(0)), api_play(2, at(60))])  # staged, then no such user
    assert staged_rows(db_conn) == empty
    assert ingest(db_conn, other, [api_play(1, at(0))]) == IngestResult(added=1)
    assert len(events(db_conn, other)) == 1
    assert_exact(db_conn, user)
    assert_exact(db_conn, other)


def test_a_connections_staging_tables_do_not_grow_with_its_batches(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    """Small batches empty the staging tables by DELETE, which leaves dead rows that nothing
    vacuums; every EMPTYING_ROUNDS-th truncates them, so a long-lived connection's tables stay
    the size of a few rounds of batches instead of growing with every sync."""
    from myi.ingestion import EMPTYING_ROUNDS

    sizes = []
    for k in range(3 * EMPTYING_ROUNDS):
        plays = [api_play(1000 + 30 * k + n, at(7200 * k + 60 * n)) for n in range(30)]
        assert ingest(db_conn, user, plays) == IngestResult(added=30)
        row = db_conn.execute("SELECT pg_relation_size('pg_temp.tmp_tracks')").fetchone()
        assert row is not None
        sizes.append(int(row[0]))
    first, last = sizes[:EMPTYING_ROUNDS], sizes[-EMPTYING_ROUNDS:]
    assert max(first) > sizes[0]  # the DELETEs leave their dead rows behind
    assert max(last) <= max(first)
    assert_exact(db_conn, user)


def test_names_of_any_script_and_punctuation_are_stored_as_given(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    from dataclasses import replace

    from myi.ingestion import SMALL_BATCH

    names = ['It\'s \\ "quoted"', "Björk \u2013 Jóga", "東京事変", "🎵\u2028line\ttab", '{"json": [1]}']
    small = [
        replace(p, track=replace(p.track, name=name))
        for p, name in zip([api_play(n, at(60 * n)) for n in range(len(names))], names, strict=True)
    ]
    assert ingest(db_conn, user, small).added == len(names)
    large = [extended_play(100 + n, at(10_000 + 60 * n)) for n in range(SMALL_BATCH + 1)]
    large[0] = replace(large[0], track=replace(large[0].track, name=names[0] + " (large)"))
    assert ingest(db_conn, user, large).added == SMALL_BATCH + 1
    stored = {r[1] for r in events(db_conn, user)}
    assert set(names) | {names[0] + " (large)"} <= stored
    assert_exact(db_conn, user)


def test_import_after_sync_merges_estimated_plays(db_conn: psycopg.Connection[Any], user: int) -> None:
    ingest(db_conn, user, [api_play(1, at(0))])
    result = ingest(db_conn, user, [extended_play(1, at(-4), ms=123_456)])
    assert result == IngestResult(merged=1)
    [row] = events(db_conn, user)
    assert row[3:] == (123_456, False, "api")
    total = db_conn.execute(
        "SELECT plays, ms_played FROM stat_user WHERE user_id = %s AND grain = 0", (user,)
    ).fetchone()
    assert total == (1, 123_456)
    assert_exact(db_conn, user)


def test_plays_29_seconds_apart_merge_and_31_seconds_apart_stay_two(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    ingest(db_conn, user, [api_play(1, at(0)), api_play(2, at(1000))])
    result = ingest(db_conn, user, [extended_play(1, at(29)), extended_play(2, at(1031))])
    assert result == IngestResult(added=1, merged=1)
    assert len(events(db_conn, user)) == 3
    assert_exact(db_conn, user)


def test_an_api_play_after_its_import_twin_adds_nothing(db_conn: psycopg.Connection[Any], user: int) -> None:
    assert ingest(db_conn, user, [extended_play(1, at(0), ms=180_000)]) == IngestResult(added=1)
    assert ingest(db_conn, user, [api_play(1, at(3))]) == IngestResult(duplicates=1)
    [row] = events(db_conn, user)
    assert row[3:] == (180_000, False, "extended")
    # Its repeat changes nothing either, and a later real play of the track is a new play.
    assert ingest(db_conn, user, [api_play(1, at(3)), api_play(1, at(400))]) == IngestResult(
        added=1, duplicates=1
    )
    assert_exact(db_conn, user)


def test_account_data_matches_within_the_minute(db_conn: psycopg.Connection[Any], user: int) -> None:
    ingest(db_conn, user, [extended_play(1, at(45), ms=100_000), extended_play(2, at(600), ms=100_000)])
    # endTime is the minute of the end of playback: 12:00 for a play ending 12:00:45.
    result = ingest(db_conn, user, [account_play(1, at(45), ms=100_000), account_play(2, at(800), ms=90_000)])
    assert result == IngestResult(added=1, duplicates=1)
    assert len(events(db_conn, user)) == 3
    assert_exact(db_conn, user)


def test_an_account_data_minute_stands_for_the_whole_minute(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    # Two plays of one track ending 12:00:58 and 12:01:40: their account-data records say 12:00 and
    # 12:01. The nearest stored play of the 12:01 record is the first (2 s), but the first ended
    # inside 12:00, so each record goes with the play that ended within its minute.
    ingest(db_conn, user, [extended_play(1, at(58), ms=40_000), extended_play(1, at(100), ms=40_000)])
    result = ingest(db_conn, user, [account_play(1, at(58), ms=40_000), account_play(1, at(100), ms=40_000)])
    assert result == IngestResult(duplicates=2)
    assert len(events(db_conn, user)) == 2
    assert_exact(db_conn, user)


def test_reimporting_the_same_file_after_a_merge_adds_nothing(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    ingest(db_conn, user, [api_play(1, at(0))])
    export = [extended_play(1, at(10), ms=170_000), extended_play(3, at(5000))]
    assert ingest(db_conn, user, export) == IngestResult(added=1, merged=1)
    assert ingest(db_conn, user, export) == IngestResult(duplicates=2)
    account = [account_play(1, at(10), ms=170_000)]
    assert ingest(db_conn, user, account) == IngestResult(duplicates=1)
    assert len(events(db_conn, user)) == 2
    assert_exact(db_conn, user)


def test_two_plays_of_one_track_near_one_api_play_claim_it_once(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    ingest(db_conn, user, [api_play(1, at(0))])
    result = ingest(
        db_conn, user, [extended_play(1, at(-20), ms=40_000), extended_play(1, at(5), ms=150_000)]
    )
    assert result == IngestResult(added=1, merged=1)
    rows = events(db_conn, user)
    assert sorted(r[3] for r in rows) == [40_000, 150_000]
    assert_exact(db_conn, user)


def test_account_data_tracks_are_matched_to_known_tracks_by_name(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    ingest(db_conn, user, [extended_play(7, at(0))])
    ingest(db_conn, user, [account_play(7, at(3600)), account_play(8, at(7200))])
    tracks = db_conn.execute("SELECT spotify_id, name FROM tracks ORDER BY name").fetchall()
    assert tracks == [("trk0000000000000000007", "Track 7"), (None, "Track 8")]
    assert_exact(db_conn, user)


def test_api_data_resolves_provisional_artists_and_albums_without_double_counting(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    other = db_conn.execute("INSERT INTO users (spotify_id) VALUES ('other') RETURNING id").fetchone()[0]
    ingest(db_conn, user, [extended_play(1, at(0)), extended_play(5, at(600))])  # Artist 2 via both? no
    ingest(db_conn, other, [extended_play(1, at(100))])
    provisional = db_conn.execute("SELECT count(*) FROM artists WHERE spotify_id IS NULL").fetchone()[0]
    assert provisional >= 1
    ingest(db_conn, user, [api_play(1, at(5000))])
    assert db_conn.execute("SELECT count(*) FROM artists WHERE name = 'Artist 1'").fetchone() == (1,)
    assert db_conn.execute("SELECT spotify_id FROM artists WHERE name = 'Artist 1'").fetchone()[0]
    artist_plays = db_conn.execute(
        "SELECT s.plays FROM stat_artist s JOIN artists a ON a.id = s.artist_id "
        "WHERE s.user_id = %s AND s.grain = 0 AND a.name = 'Artist 1'",
        (user,),
    ).fetchone()
    assert artist_plays == (2,)
    assert_exact(db_conn, user)
    assert_exact(db_conn, other)


def test_an_export_record_never_fills_the_album_or_credits_of_a_stored_track(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    """A track first seen without album or artist names keeps that gap for enrichment: a later
    record with the names (from another user's import here) would otherwise change what every
    earlier play counts for without moving anyone's statistics."""
    from dataclasses import replace

    bare = extended_play(7, at(0))
    bare = replace(bare, track=replace(bare.track, artists=(), album=None))
    ingest(db_conn, user, [bare])
    other = make_user(db_conn, "other", recent_floor=RECENT_FLOOR)
    ingest(db_conn, other, [extended_play(7, at(600))])
    assert db_conn.execute(
        "SELECT album_id, (SELECT count(*) FROM track_artists WHERE track_id = t.id) FROM tracks t"
    ).fetchall() == [(None, 0)]
    assert_exact(db_conn, user)
    assert_exact(db_conn, other)
    gaps = db_conn.execute("SELECT reason FROM catalog_gaps WHERE kind = 'track'").fetchall()
    assert gaps == [("missing_duration",)]


def test_catalog_gaps_are_recorded_for_enrichment(db_conn: psycopg.Connection[Any], user: int) -> None:
    ingest(db_conn, user, [extended_play(1, at(0))])
    kinds = {r[0] for r in db_conn.execute("SELECT kind FROM catalog_gaps")}
    assert kinds == {"track", "artist", "album"}


def test_a_time_zone_change_moves_day_and_hour_buckets(db_conn: psycopg.Connection[Any], user: int) -> None:
    # 2024-03-31 00:30 UTC is 2024-03-31 02:30 in Berlin... after the DST jump: 01:30 UTC +2 = 03:30.
    from datetime import UTC, datetime

    when = datetime(2024, 3, 31, 23, 30, tzinfo=UTC)
    ingest(db_conn, user, [extended_play(1, when)])
    day = db_conn.execute("SELECT bucket FROM stat_user WHERE user_id = %s AND grain = 2", (user,)).fetchone()
    assert str(day[0]) == "2024-03-31"
    assert maintenance.change_timezone(db_conn, user, "Europe/Berlin")
    day = db_conn.execute("SELECT bucket FROM stat_user WHERE user_id = %s AND grain = 2", (user,)).fetchone()
    assert str(day[0]) == "2024-04-01"
    month = db_conn.execute(
        "SELECT bucket FROM stat_track WHERE user_id = %s AND grain = 1", (user,)
    ).fetchone()
    assert str(month[0]) == "2024-04-01"
    hour = db_conn.execute(
        "SELECT weekday, hour FROM stat_hour WHERE user_id = %s AND grain = 0", (user,)
    ).fetchone()
    assert hour == (1, 1)  # Monday 01:30 CEST
    assert_exact(db_conn, user)


def test_bulk_ingestion_applies_statistics_once_and_exactly(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    from myi.ingestion import bulk_ingest

    ingest(db_conn, user, [api_play(1, at(0))])
    with bulk_ingest(db_conn, user) as bulk:
        bulk.add([extended_play(1, at(3), ms=90_000), extended_play(2, at(500))])
        bulk.add([extended_play(2, at(500)), account_play(3, at(9000))])
    assert bulk.result == IngestResult(added=2, merged=1, duplicates=1)
    assert_exact(db_conn, user)


def test_bulk_ingestion_writes_plays_of_new_tracks_once_enough_have_gathered(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    """A batch with tracks no batch has resolved yet waits, with every batch after it, for one
    catalog pass (or flush()); a batch of resolved tracks with nothing waiting is written at once
    (in the background: flush() waits for it)."""
    from myi.ingestion import bulk_ingest

    with bulk_ingest(db_conn, user) as bulk:
        bulk.add([extended_play(1, at(0)), extended_play(2, at(60))])
        assert bulk.flush() == IngestResult(added=2)
        bulk.add([extended_play(1, at(300))])
        bulk.add([extended_play(1, at(600)), extended_play(3, at(660))])
        bulk.add([extended_play(2, at(900))])  # behind the waiting one
        bulk._writer.drain()
        assert len(events(db_conn, user)) == 3
        assert bulk.flush() == IngestResult(added=4)
    assert bulk.result == IngestResult(added=6)
    assert_exact(db_conn, user)


def test_a_failed_background_write_is_raised_and_leaves_nothing_behind(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    import pytest

    from myi.ingestion import bulk_ingest

    before = events(db_conn, user)
    with pytest.raises(psycopg.errors.CheckViolation), bulk_ingest(db_conn, user) as bulk:
        bulk.add([extended_play(1, at(0))])
        bulk.flush()
        bulk.add([extended_play(1, at(300), ms=-5)])  # breaks a constraint in the writer
        bulk.add([extended_play(1, at(600))])
    assert events(db_conn, user) == before
    assert_exact(db_conn, user)


def test_bulk_ingestion_matches_across_identities_learnt_in_later_batches(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    """A track resolved in an early batch gains another identity in a later one (a second id of
    the same artist and name): its next records still find the plays stored under that one."""
    from dataclasses import replace

    from myi.ingestion import bulk_ingest

    first = extended_play(5, at(0))
    relinked = replace(first, track=replace(first.track, spotify_id="trk-relinked"), played_at=at(7200))
    with bulk_ingest(db_conn, user) as bulk:
        bulk.add([first])
        assert bulk.flush() == IngestResult(added=1)
        bulk.add([relinked])
        assert bulk.flush() == IngestResult(added=1)
        bulk.add([extended_play(5, at(7200)), extended_play(5, at(0))])
        assert bulk.flush() == IngestResult(duplicates=2)
    assert len(events(db_conn, user)) == 2
    assert_exact(db_conn, user)


def test_a_failed_bulk_ingestion_leaves_nothing_behind(db_conn: psycopg.Connection[Any], user: int) -> None:
    import pytest

    from myi.ingestion import bulk_ingest

    ingest(db_conn, user, [api_play(1, at(0))])
    before = events(db_conn, user)
    with pytest.raises(RuntimeError), bulk_ingest(db_conn, user) as bulk:
        bulk.add([extended_play(1, at(3), ms=90_000), extended_play(2, at(500))])
        raise RuntimeError("the file turned out to be broken")
    assert events(db_conn, user) == before
    assert_exact(db_conn, user)


def test_tracks_of_a_rolled_back_import_transaction_are_resolved_again(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    """An import keeps the tracks it resolved for its next transaction, but not those of one that
    was rolled back: the tracks it created are gone with it."""
    import pytest

    from myi.ingestion import KnownTracks, bulk_ingest

    known: KnownTracks = {}
    with pytest.raises(RuntimeError), bulk_ingest(db_conn, user, known=known) as bulk:
        bulk.add([extended_play(1, at(0))])
        bulk.flush()
        raise RuntimeError("the worker stopped")
    assert known == {}
    with bulk_ingest(db_conn, user, known=known) as bulk:
        bulk.add([extended_play(1, at(0))])
    assert db_conn.execute(
        "SELECT count(*) FROM listening_events e JOIN tracks t ON t.id = e.track_id"
    ).fetchone() == (1,)
    assert_exact(db_conn, user)


def test_merging_a_provisional_artist_keeps_every_users_statistics_exact(
    db_conn: psycopg.Connection[Any], user: int
) -> None:
    from myi.ingestion import merge_artist

    other = db_conn.execute("INSERT INTO users (spotify_id) VALUES ('o2') RETURNING id").fetchone()[0]
    ingest(db_conn, user, [extended_play(1, at(0)), extended_play(4, at(900))])  # both Artist 1
    ingest(db_conn, other, [extended_play(4, at(50))])
    ingest(db_conn, user, [api_play(7, at(5000), artist=9)])  # a real artist, another name
    provisional = db_conn.execute("SELECT id FROM artists WHERE name = 'Artist 1'").fetchone()[0]
    real = db_conn.execute("SELECT id FROM artists WHERE name = 'Artist 9'").fetchone()[0]
    merge_artist(db_conn, provisional, real)
    assert db_conn.execute("SELECT count(*) FROM artists WHERE id = %s", (provisional,)).fetchone() == (0,)
    plays = db_conn.execute(
        "SELECT user_id, plays FROM stat_artist WHERE artist_id = %s AND grain = 0 ORDER BY 1", (real,)
    ).fetchall()
    assert plays == [(user, 3), (other, 1)]
    assert_exact(db_conn, user)
    assert_exact(db_conn, other)
