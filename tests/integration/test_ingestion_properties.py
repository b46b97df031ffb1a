"""Properties of the ingestion core under random interleavings and concurrency (real PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from myi import stats
from myi.ingestion import ingest
from myi.plays import Play
from tests.fixtures.plays import BASE, account_play, api_play, extended_play, make_user

# Offsets chosen so that near-duplicates at the edges of both tolerances occur often.
OFFSETS = [0, 1, 29, 30, 31, 59, 60, 61, 90, 600, 3600, 86_400]


@st.composite
def batches(draw: st.DrawFn) -> list[list[Play]]:
    out: list[list[Play]] = []
    for _ in range(draw(st.integers(1, 6))):
        if out and draw(st.booleans()) and draw(st.booleans()):
            out.append(list(draw(st.sampled_from(out))))  # a repeated delivery
            continue
        origin = draw(st.sampled_from(["api", "extended", "account"]))
        plays = []
        for _ in range(draw(st.integers(1, 8))):
            track = draw(st.integers(0, 3))
            when = BASE + timedelta(
                seconds=draw(st.sampled_from(OFFSETS)) + draw(st.sampled_from([0, 0, 2, -3]))
            )
            ms = draw(st.sampled_from([31_000, 120_000, 240_000]))
            if origin == "api":
                plays.append(api_play(track, when))
            elif origin == "extended":
                plays.append(extended_play(track, when, ms=ms))
            else:
                plays.append(account_play(track, when, ms=ms))
        out.append(plays)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=batches())
def test_random_interleavings_keep_every_statistic_exact(
    db_conn: psycopg.Connection[Any], sequence: list[list[Play]]
) -> None:
    user = make_user(db_conn, spotify_id=f"prop-{uuid.uuid4().hex}")
    added_total = 0
    for batch in sequence:
        result = ingest(db_conn, user, batch)
        assert result.added + result.merged + result.duplicates == len(batch)
        added_total += result.added
        assert stats.verify(db_conn, user) == []
    stored = db_conn.execute("SELECT count(*) FROM listening_events WHERE user_id = %s", (user,)).fetchone()
    assert stored == (added_total,)
    # Replaying everything once more adds nothing.
    for batch in sequence:
        assert ingest(db_conn, user, batch).added == 0
    assert stats.verify(db_conn, user) == []


def test_concurrent_sync_and_import_of_one_user_never_lose_or_double_a_count(
    db_conn: psycopg.Connection[Any], database_url: str
) -> None:
    user = make_user(db_conn, spotify_id="concurrent")
    rounds, per_round = 12, 25
    errors: list[BaseException] = []

    def plays(kind: str, r: int) -> list[Play]:
        out = []
        for i in range(per_round):
            when = BASE + timedelta(hours=r, minutes=i * 4)
            if kind == "api":
                out.append(api_play(i % 7, when))
            else:
                out.append(extended_play(i % 7, when - timedelta(seconds=5), ms=111_000))
        return out

    def worker(kind: str) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                for r in range(rounds):
                    ingest(conn, user, plays(kind, r))
                    ingest(conn, user, plays(kind, r))  # a redelivery, racing the other source
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in ("api", "import")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = db_conn.execute(
        "SELECT count(*), sum(ms_played), bool_or(is_estimated) FROM listening_events WHERE user_id = %s",
        (user,),
    ).fetchone()
    assert rows == (rounds * per_round, rounds * per_round * 111_000, False)
    assert stats.verify(db_conn, user) == []
