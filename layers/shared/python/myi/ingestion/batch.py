"""One batch of :func:`myi.ingestion.ingest` in its transaction, in one of two ways.

Both run the same steps in the same order (:func:`write_batch`): locks and staging; the catalog,
then whether it moved statistics and whether stored plays lie near; the events; the gaps, the
statistics and the caller's own write. They differ in how the statements reach the server:

- PLANNED: the staging tables are filled by COPY and analysed, and every statement is planned for
  the batch's rows. Larger batches, and batches inside a caller's transaction.
- PREPARED: a batch of at most SMALL_BATCH plays (a sync's page is 50) on a connection in
  autocommit. Its rows go in as one JSON document with its locks; its catalog statements, the
  insert of its plays, the record of its gaps and its statistics fold run as statements prepared
  once per connection (PostgreSQL would otherwise plan each of them afresh for every batch), three
  round trips when nothing stored is to be matched. Its staging tables are not analysed (that
  would make it re-plan the prepared ones), and it joins them to the catalog and the statistics
  row by row, by index: estimating the staging tables from their size (hundreds of rows for a page
  of 50), PostgreSQL would rather hash whole tables of a large catalog (30,000 tracks: 5 ms a
  statement), worse as the catalog grows. The planner settings of the staging statement hold for
  the batch's transaction, and the prepared plans are made under them (again whenever the tables
  they read are analysed).
"""

from __future__ import annotations

import functools
import uuid
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg

from myi.ingestion.catalog import CATALOG, copy_catalog, held, needed, upsert_catalog
from myi.ingestion.events import (
    ANALYZE_AND_NEIGHBOURS_SQL,
    CHECKS_SQL,
    INSERT_UNMATCHED_SQL,
    IngestResult,
    counts_of,
    insert_unmatched_sql,
    span,
    write_events,
)
from myi.ingestion.locks import CATALOG_LOCK, USER_LOCK_CLASS, check_user, lock
from myi.ingestion.merges import follow_moves
from myi.ingestion.session import EMPTY_SQL, Exec, Row, empties_itself, has_tables, transaction
from myi.ingestion.staging import Staged, stage_document
from myi.ingestion.statistics import FOLD_SQL, GAPS_SQL, fold_sql

SMALL_BATCH = 200

# A statement of the batch's last round trip and its parameters (None: it takes none).
Statement = tuple[str, Any]

# A small batch's staging rows (the document, $1: see staging.stage_document) inserted with its
# locks (the user, $2, an integer as the key of the user lock is), and its planner settings.
_STAGE_ROWS = """
WITH s0 AS (INSERT INTO tmp_artists (rk, spotify_id, name, name_key, image_url)
            SELECT (r->>0)::int, (r->>1)::text, (r->>2)::text, (r->>3)::text, (r->>4)::text
              FROM jsonb_array_elements($1->0) r),
     s1 AS (INSERT INTO tmp_albums (ak, spotify_id, name, name_key, artist_key, image_url, release_date)
            SELECT (r->>0)::int, (r->>1)::text, (r->>2)::text, (r->>3)::text, (r->>4)::text, (r->>5)::text,
                   (r->>6)::text
              FROM jsonb_array_elements($1->1) r),
     s2 AS (INSERT INTO tmp_album_artists (ak, rk, position)
            SELECT (r->>0)::int, (r->>1)::int, (r->>2)::smallint FROM jsonb_array_elements($1->2) r),
     s3 AS (INSERT INTO tmp_tracks (tk, spotify_id, name, name_key, artist_key, duration_ms, explicit, ak,
                                    full_data)
            SELECT (r->>0)::int, (r->>1)::text, (r->>2)::text, (r->>3)::text, (r->>4)::text, (r->>5)::int,
                   (r->>6)::boolean, (r->>7)::int, (r->>8)::boolean
              FROM jsonb_array_elements($1->3) r),
     s4 AS (INSERT INTO tmp_track_artists (tk, rk, position)
            SELECT (r->>0)::int, (r->>1)::int, (r->>2)::smallint FROM jsonb_array_elements($1->4) r),
     s5 AS (INSERT INTO tmp_plays (seq, tk, played_at, ms_played, origin)
            SELECT (r->>0)::int, (r->>1)::int, (r->>2)::timestamptz, (r->>3)::int, (r->>4)::text
              FROM jsonb_array_elements($1->5) r)"""
_SMALL_PLANS = "set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
STAGE_SHARED_SQL = f"""{_STAGE_ROWS}
SELECT pg_advisory_xact_lock_shared({CATALOG_LOCK}), pg_advisory_xact_lock({USER_LOCK_CLASS}, $2),
       (SELECT timezone FROM users WHERE id = $2), {_SMALL_PLANS}"""
STAGE_EXCLUSIVE_SQL = f"""{_STAGE_ROWS}
SELECT pg_advisory_xact_lock({CATALOG_LOCK}), pg_advisory_xact_lock({USER_LOCK_CLASS}, $2),
       (SELECT timezone FROM users WHERE id = $2), {_SMALL_PLANS}"""

# The prepared statements of small batches, by name (catalog statements by their place in CATALOG).
_CATALOG_NAME = "myi_catalog_"
_PREPARE = {
    **{f"{_CATALOG_NAME}{i}": f"PREPARE {_CATALOG_NAME}{i} AS {sql}" for i, (_, sql) in enumerate(CATALOG)},
    "myi_fold_deltas": f"PREPARE myi_fold_deltas (bigint) AS {fold_sql('$1')}",
    "myi_record_gaps": f"PREPARE myi_record_gaps AS {GAPS_SQL}",
    "myi_insert_unmatched": (
        f"PREPARE myi_insert_unmatched (bigint, uuid) AS {insert_unmatched_sql('$1', '$2')}"
    ),
    "myi_empty_staging": f"PREPARE myi_empty_staging AS {EMPTY_SQL}",
    "myi_stage_shared": f"PREPARE myi_stage_shared (jsonb, integer) AS {STAGE_SHARED_SQL}",
    "myi_stage_exclusive": f"PREPARE myi_stage_exclusive (jsonb, integer) AS {STAGE_EXCLUSIVE_SQL}",
}
PREPARED_STATEMENTS_SQL = "SELECT name FROM pg_prepared_statements"
COPY_STAGED_PLAYS_SQL = "COPY tmp_plays (seq, tk, played_at, ms_played, origin, track_id, alt_ids) FROM STDIN"
# The connections on which the statements of small batches are prepared.
_ready: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()


def write_batch(
    ex: Exec,
    user_id: int,
    st: Staged,
    way: Way,
    *,
    import_id: uuid.UUID | None,
    exclusive: bool,
    on_staged: Callable[[], None],
    and_then: Statement | None,
) -> IngestResult:
    """One batch in its transaction, locks, statistics and the caller's ``and_then`` included.
    ``exclusive``: whether to take the catalog lock exclusively (else a batch that would move
    other users' statistics raises CatalogChanges)."""
    where = span(user_id, *st.extent())
    way.stage(ex, user_id, st, exclusive=exclusive)
    on_staged()
    moves, neighbours = way.catalog(ex, st, where)
    if moves:
        follow_moves(ex, exclusive=exclusive)
    # With nothing stored near, nothing is to be matched: the plays go in with the statements after.
    counts = write_events(ex, import_id, where) if neighbours else None
    args = {"user": user_id, "import_id": import_id}
    last: list[Statement] = [] if neighbours else [(way.insert_unmatched, args)]
    last += [(way.record_gaps, None), (way.fold, args)]
    if and_then is not None:
        last.append(and_then)
    results = way.run(ex, last)
    if counts is None:
        counts = counts_of(results[0][1])
    return replace(counts, gaps=results[0 if neighbours else 1][0])


class Way:
    """How a batch's statements reach the server (see the module's docstring)."""

    insert_unmatched: str
    record_gaps: str
    fold: str

    def ready(self, conn: psycopg.Connection[Any]) -> None:
        """Make ``conn`` (in autocommit) ready for batches of this way."""

    def forget(self, conn: psycopg.Connection[Any]) -> None:
        """``conn`` lost what :meth:`ready` made (a pooler reset the session)."""

    def stage(self, ex: Exec, user_id: int, st: Staged, *, exclusive: bool) -> None:
        """Take the batch's locks and stage its rows."""
        raise NotImplementedError

    def catalog(self, ex: Exec, st: Staged, where: dict[str, Any]) -> tuple[bool, bool]:
        """Run the catalog statements; returns whether they changed the album or credits of stored
        tracks, and whether stored plays lie near the batch (events.NEIGHBOURS)."""
        raise NotImplementedError

    def run(self, ex: Exec, statements: list[Statement]) -> list[tuple[int, Row | None]]:
        """Run the batch's last statements, which end its transaction; each one's row count and
        first row."""
        raise NotImplementedError


class _Planned(Way):
    """Staged by COPY, analysed, every statement planned for the batch's rows."""

    insert_unmatched = INSERT_UNMATCHED_SQL
    record_gaps = GAPS_SQL
    fold = FOLD_SQL

    def stage(self, ex: Exec, user_id: int, st: Staged, *, exclusive: bool) -> None:
        lock(ex, user_id, exclusive_catalog=exclusive)
        copy_catalog(ex, st, analyze=False)  # analysed with the plays, below
        with ex.copy(COPY_STAGED_PLAYS_SQL) as cp:
            for play in st.plays:
                cp.write_row(play)

    def catalog(self, ex: Exec, st: Staged, where: dict[str, Any]) -> tuple[bool, bool]:
        row = ex.script(ANALYZE_AND_NEIGHBOURS_SQL, where).fetchone()
        return upsert_catalog(ex, st), bool(row and row[0])

    def run(self, ex: Exec, statements: list[Statement]) -> list[tuple[int, Row | None]]:
        out: list[tuple[int, Row | None]] = []
        for sql, params in statements:
            cur = ex(sql, params)
            out.append((cur.rowcount, cur.fetchone() if cur.description else None))
        return out


class _Prepared(Way):
    """Staged with the locks in one statement, the rest by statements prepared per connection."""

    insert_unmatched = "EXECUTE myi_insert_unmatched (%(user)s, %(import_id)s)"
    record_gaps = "EXECUTE myi_record_gaps"
    fold = "EXECUTE myi_fold_deltas (%(user)s)"

    def ready(self, conn: psycopg.Connection[Any]) -> None:
        """Prepare the statements ``conn`` lacks; the staging tables they use are created first.
        Once per connection, or again after a statement was found gone. A prepared statement is
        not part of a transaction: it outlives a rollback, and one that failed to be prepared is
        looked for again next time."""
        if conn in _ready:
            return
        if not has_tables(conn):
            with transaction(conn):  # creates them
                pass
        have = {row[0] for row in conn.execute(PREPARED_STATEMENTS_SQL).fetchall()}
        missing = [sql for name, sql in _PREPARE.items() if name not in have]
        if missing:
            conn.execute(";\n".join(missing))
        _ready.add(conn)

    def forget(self, conn: psycopg.Connection[Any]) -> None:
        _ready.discard(conn)

    def stage(self, ex: Exec, user_id: int, st: Staged, *, exclusive: bool) -> None:
        # The staging tables are the session's own: that the rows go in with the locks and not
        # after them changes nothing. Client-side binding: EXECUTE's arguments cannot be bound.
        name = "myi_stage_exclusive" if exclusive else "myi_stage_shared"
        execute = ex.mogrify(f"EXECUTE {name} (%s, %s)", (stage_document(st), user_id))
        check_user(user_id, ex(execute).fetchone())

    def catalog(self, ex: Exec, st: Staged, where: dict[str, Any]) -> tuple[bool, bool]:
        row = ex.script(f"{_catalog_executes(held(st))};\n{CHECKS_SQL}", where).fetchone()
        assert row is not None
        return bool(row[0]), bool(row[1])

    def run(self, ex: Exec, statements: list[Statement]) -> list[tuple[int, Row | None]]:
        # One round trip, so client-side binding: the server binds one statement at a time.
        texts = [sql if params is None else ex.mogrify(sql, params) for sql, params in statements]
        if empties_itself(ex):
            texts.append("EXECUTE myi_empty_staging")
        return ex.run_all(texts)


@functools.cache
def _catalog_executes(holding: frozenset[str]) -> str:
    """The prepared catalog statements a batch that holds ``holding`` has work for, as one script."""
    return ";\n".join(f"EXECUTE {_CATALOG_NAME}{i}" for i in needed(holding))


PLANNED: Way = _Planned()
PREPARED: Way = _Prepared()
