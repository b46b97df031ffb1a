"""The ingestion core: every play stored once, statistics always exact, set-based in bulk.

One entry point, :func:`ingest`, serves the sync worker (50 API plays) and the history import
(batches of thousands of export records). A batch costs a fixed number of SQL statements whatever
its size: the batch is staged into temporary tables with COPY (a small batch, see SMALL_BATCH, as
one JSON document sent with its locks), then the catalog, the events and the statistics are
written with ``INSERT .. SELECT .. ON CONFLICT`` and ``UPDATE .. FROM`` statements.

Per batch, in one transaction:

1. Locks. ``pg_advisory_xact_lock(user)`` serialises batches of one user, so merges cannot race and
   concurrent sync and import of one user never lose or double a count. Batches carrying full API
   track objects may change the album or credits of existing tracks, which moves statistics of every
   user who played them: that takes the catalog lock exclusively, every other batch takes it shared.
   A sync's batch rarely does, so it takes the lock shared, and when its catalog statements find
   an album or credit change, it rolls back and runs again holding the lock exclusively.
2. Catalog. Artists, albums and tracks are upserted (sorted keys, so concurrent users' batches lock
   rows in one order). Export records create what is missing and fill a missing duration, never
   an existing track's album or credits (enrichment does, with full objects); full API objects
   fill and correct. When an existing track's album or credits change, the album and artist
   statistics of every user move from the old to the new, derived from ``stat_track`` (an
   artist's statistics are the sum of the statistics of the tracks credited to it), and
   provisional artists and albums with the same normalised name as the real ones that replace them
   are merged into them (:func:`merge_artist`, :func:`merge_album`).
3. Events. Dedupe and merge per DESIGN.md: see ``_MATCH_SQL``. A batch with no stored play within
   reach of its span (``_NEIGHBOURS``; a sync's page after its cursor, mostly) has nothing to
   match: only its own repeats are duplicates.
4. Statistics. Deltas are taken only from rows this transaction inserted (``RETURNING``) or changed
   (merges: the difference between the real and the estimated ``ms_played``), aggregated in SQL and
   added with ``ON CONFLICT DO UPDATE SET plays = plays + excluded.plays``; plays at or after the
   user's recent floor are added to the recent rows (grain 3) too (migration 0009).
5. Catalog gaps (tracks without duration or album, provisional artists and albums) are recorded in
   ``catalog_gaps`` for the enrichment worker.

Partitions: when ``conn`` is in autocommit, :func:`ingest` makes sure the monthly partitions of the
batch's span exist before opening its transaction. A caller that runs ingest inside its own
transaction must call ``myi.partitions.ensure_range`` for the span first, outside it.
"""

from __future__ import annotations

import functools
import json
import queue
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from myi import partitions
from myi.catalog import name_key
from myi.plays import AlbumRef, ArtistRef, Play, TrackRef

CATALOG_LOCK = 0x4D594943  # "MYIC": taken shared by every batch, exclusively by catalog changes
USER_LOCK_CLASS = 0x4D5955  # "MYU": the class of the per-user advisory lock
MAX_ATTEMPTS = 5
BULK_WORK_MEM = "64MB"
# Plays per BulkIngest.add call of an import: bounds the Python objects and COPY data held at once.
BULK_BATCH_SIZE = 10_000
# A bulk ingestion queues batches with new tracks until this many new tracks (or plays) gather,
# then resolves them all in one catalog pass.
PENDING_TRACKS = 5_000
# How far apart the candidates of the cross-source merge are looked for (see _MATCH_SQL).
MERGE_REACH = timedelta(seconds=90)
QUEUED_PLAYS = 100_000
# A batch of ingest() of at most this many plays (a sync's page is 50), on a connection in
# autocommit, is a small batch: its catalog statements, the insert of its plays, the record of its
# gaps and its statistics fold run as statements prepared once per connection (PostgreSQL would
# otherwise plan each of them afresh for every batch), and its staging tables are not analysed
# (that would make it re-plan the prepared ones). It joins its staging tables to the catalog and
# the statistics row by row, by index: estimating the staging tables from their size (hundreds of
# rows for a page of 50), PostgreSQL would rather hash whole tables of a large catalog (30,000
# tracks: 5 ms a statement), worse as the catalog grows. The planner settings of _SMALL_PLANS hold
# for the batch's transaction, and the prepared plans are made under them (again whenever the
# tables they read are analysed). Larger batches, and bulk ingestion, are analysed and planned
# each time.
SMALL_BATCH = 200
_SMALL_PLANS = ", set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
_CATALOG_NAME = "myi_catalog_"
_INSERT = "myi_insert_unmatched"
_GAPS = "myi_record_gaps"
_FOLD = "myi_fold_deltas"
_EMPTY = "myi_empty_staging"
_STAGE_SHARED = "myi_stage_shared"
_STAGE_EXCLUSIVE = "myi_stage_exclusive"
# What a batch of ingest() is tried again after (the transaction rolled back): a deadlock or
# serialisation failure, and a prepared statement gone (a pooler resetting the session).
_RETRIED = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.InvalidSqlStatementName)


@dataclass(frozen=True)
class IngestResult:
    added: int = 0
    merged: int = 0
    duplicates: int = 0
    # catalog gaps newly recorded for the enrichment worker (by ingest(); not part of the counts)
    gaps: int = field(default=0, compare=False)

    def __add__(self, other: IngestResult) -> IngestResult:
        return IngestResult(
            self.added + other.added,
            self.merged + other.merged,
            self.duplicates + other.duplicates,
            self.gaps + other.gaps,
        )


@dataclass
class StatementCounter:
    """Counts the SQL statements the ingestion core sends, and the round trips they take (a
    script's statements go in one), for ``make bench``."""

    count: int = 0
    round_trips: int = 0


@dataclass
class _Staged:
    artists: dict[tuple[str, ...], list[Any]] = field(default_factory=dict)
    albums: dict[tuple[str, ...], list[Any]] = field(default_factory=dict)
    album_artists: dict[tuple[int, int], int] = field(default_factory=dict)
    tracks: dict[tuple[str, ...], list[Any]] = field(default_factory=dict)
    track_artists: dict[tuple[int, int], int] = field(default_factory=dict)
    plays: list[tuple[Any, ...]] = field(default_factory=list)
    has_full: bool = False


# Track key -> (track id, its (artist key, name key)): tracks a bulk ingestion has resolved. A
# track's id never changes (tracks are never deleted), so an import keeps this across its
# transactions; the identity of a track (every track of its artist and name) may grow meanwhile,
# so the statements that dedupe and merge against stored plays look it up again.
KnownTracks = dict[tuple[str, ...], tuple[int, tuple[str, str]]]


# The batch's staging tables. They have no keys, and they keep their rows at commit: every
# transaction that stages rows empties them itself before it ends (see _transaction). At each
# commit of a transaction that used any temporary table, PostgreSQL empties every ON COMMIT DELETE
# ROWS one and rebuilds each index it has (a text or array column brings the index of a TOAST
# table), about half a millisecond an index: a small batch's DELETE costs a fraction of that. A
# batch's joins hash on these columns instead of keys (they are unique by construction in _stage).
_TEMP_TABLES = """
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
_BATCH_TABLES = (
    "tmp_artists, tmp_albums, tmp_album_artists, tmp_tracks, tmp_track_artists, tmp_plays, "
    "tmp_album_moves, tmp_credit_moves, tmp_artist_merges, tmp_album_merges"
)
_STAGING_TABLES = f"{_BATCH_TABLES}, tmp_delta"
# Emptying the staging tables by DELETE leaves their dead rows behind (nothing vacuums temporary
# tables): one small batch in EMPTYING_ROUNDS truncates them instead.
EMPTYING_ROUNDS = 32
_EMPTY_SQL = (
    f"WITH {', '.join(f'd{i} AS (DELETE FROM {t})' for i, t in enumerate(_BATCH_TABLES.split(', ')))} "
    "DELETE FROM tmp_delta"
)
_prepared: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()


@functools.lru_cache(maxsize=64)
def _split(script: str) -> tuple[int, str]:
    """A script of ours (no semicolons inside literals) as (its number of statements, the text to
    send), comments dropped; our scripts are a few constants, so each is split once."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    statements = [part.strip() for part in "\n".join(lines).split(";") if part.strip()]
    return len(statements), ";\n".join(statements)


class _Exec:
    """Runs the statements of one batch, counting them."""

    def __init__(self, cur: psycopg.Cursor[Any], counter: StatementCounter | None) -> None:
        self.cur = cur
        self.counter = counter
        self.emptied = False  # the staging tables emptied by the batch's last statement (_emptying)

    def __call__(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        if self.counter is not None:
            self.counter.count += 1
            self.counter.round_trips += 1
        return self.cur.execute(sql, params)

    def script(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        """Several statements in one round trip: the parameters are bound here (psycopg quotes
        them), as the server binds only one statement at a time. Each counts as a statement.
        Returns the cursor at the last statement's result."""
        count, text = _split(sql)
        if self.counter is not None:
            self.counter.count += count
            self.counter.round_trips += 1
        if params:
            text = psycopg.ClientCursor(self.cur.connection).mogrify(text, params)
        self.cur.execute(text)
        while self.cur.nextset():
            pass
        return self.cur

    @contextmanager
    def copy(self, sql: str) -> Iterator[Any]:
        if self.counter is not None:
            self.counter.count += 1
            self.counter.round_trips += 1
        with self.cur.copy(sql) as cp:
            yield cp


# ---------------------------------------------------------------------------------------------
# Staging: plays -> rows of the temporary tables (Python, one pass, no database round trips)
# ---------------------------------------------------------------------------------------------
def _artist_key(a: ArtistRef) -> tuple[str, ...]:
    return ("s", a.spotify_id) if a.spotify_id else ("p", name_key(a.name))


def _is_full(t: TrackRef) -> bool:
    """A full API track object: ids for the track, its album and every artist."""
    return bool(
        t.spotify_id
        and t.album is not None
        and t.album.spotify_id
        and t.artists
        and all(a.spotify_id for a in t.artists)
    )


def _track_key(t: TrackRef) -> tuple[str, ...]:
    """A track's key in a batch: its Spotify id, or its normalised artist and name."""
    if t.spotify_id:
        return ("s", t.spotify_id)
    return ("p", name_key(t.artists[0].name if t.artists else ""), name_key(t.name))


def _stage(plays: Sequence[Play]) -> _Staged:
    """Rows for the temporary tables (Python, one pass, no database round trips)."""
    st = _Staged()

    def artist(a: ArtistRef) -> int:
        key = _artist_key(a)
        row = st.artists.get(key)
        if row is None:
            row = [len(st.artists), a.spotify_id, a.name, name_key(a.name), a.image_url]
            st.artists[key] = row
        elif a.image_url and not row[4]:
            row[4] = a.image_url
        return int(row[0])

    def album(al: AlbumRef, fallback_artists: tuple[ArtistRef, ...]) -> int:
        credited = al.artists or fallback_artists[:1]
        akey = name_key(credited[0].name) if credited else ""
        key: tuple[str, ...] = ("s", al.spotify_id) if al.spotify_id else ("p", akey, name_key(al.name))
        row = st.albums.get(key)
        if row is None:
            row = [
                len(st.albums),
                al.spotify_id,
                al.name,
                name_key(al.name),
                akey,
                al.image_url,
                al.release_date,
            ]
            st.albums[key] = row
            for pos, a in enumerate(credited):
                st.album_artists.setdefault((row[0], artist(a)), pos)
        elif al.image_url and not row[5]:
            row[5] = al.image_url
        return int(row[0])

    for seq, play in enumerate(plays):
        t: TrackRef = play.track
        full = _is_full(t)
        key = _track_key(t)
        akey = key[1] if len(key) == 3 else name_key(t.artists[0].name if t.artists else "")
        row = st.tracks.get(key)
        if row is None or (full and not row[8]):
            tk = row[0] if row is not None else len(st.tracks)
            ak = album(t.album, t.artists) if t.album is not None and t.album.name else None
            row = [tk, t.spotify_id, t.name, name_key(t.name), akey, t.duration_ms, t.explicit, ak, full]
            st.tracks[key] = row
            if full:
                st.has_full = True
                for stale in [k for k in st.track_artists if k[0] == tk]:
                    del st.track_artists[stale]
            for pos, a in enumerate(t.artists):
                st.track_artists.setdefault((tk, artist(a)), pos)
        elif row[5] is None and t.duration_ms is not None:
            row[5] = t.duration_ms
        ms = play.ms_played if play.origin != "api" else None
        st.plays.append((seq, row[0], play.played_at, ms, play.origin, None, None))
    return st


# ---------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------
def ingest(
    conn: psycopg.Connection[Any],
    user_id: int,
    plays: Sequence[Play],
    *,
    import_id: uuid.UUID | None = None,
    counter: StatementCounter | None = None,
    on_staged: Callable[[], None] | None = None,
    and_then: tuple[str, dict[str, Any]] | None = None,
) -> IngestResult:
    """Store a batch of plays of one user; returns what happened to them.

    Works in autocommit (its own transaction, retried on deadlock or serialisation failure) and
    inside a caller's transaction (a savepoint; the caller commits and retries).

    ``on_staged`` is called once, when the batch is in the staging tables and what is left is the
    database's work: what the caller starts then (a message to send) runs beside that work instead
    of competing with the staging for the interpreter.

    ``and_then`` (a statement and its named parameters) is the caller's own write, run last in the
    batch's transaction: it commits with the batch, or neither does.
    """
    if not plays:
        return IngestResult()
    staged = _stage_checked(plays)
    callbacks = [on_staged] if on_staged is not None else []

    def fire() -> None:
        while callbacks:
            callbacks.pop()()

    outer = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    if not outer:
        times = [p.played_at for p in plays]
        partitions.ensure_range(conn, min(times), max(times))
    attempts = 1 if outer else MAX_ATTEMPTS
    small = not outer and len(plays) <= SMALL_BATCH
    # Inside a caller's transaction, a shared lock would be held until it ends: no second try.
    exclusive = staged.has_full and outer
    failures = 0
    while True:
        try:
            if small:
                _ensure_prepared(conn)
            with _transaction(conn, counter) as ex:
                batch = _ingest_small if small else _ingest_batch
                counts = batch(ex, user_id, staged, import_id, fire, exclusive, and_then)
            return counts
        except _CatalogChanges:
            exclusive = True  # once: holding the lock exclusively, it is not raised
        except _RETRIED as exc:
            if isinstance(exc, pg_errors.InvalidSqlStatementName):
                _ready.discard(conn)  # deallocated behind our back: prepared anew on the retry
            failures += 1
            if failures == attempts:
                raise


class _CatalogChanges(Exception):
    """A batch holding the catalog lock shared would move statistics of other users (an album or
    credit change of a stored track): it is rolled back and runs again holding it exclusively."""


class BulkIngest:
    """Many batches of one user's export records in ONE transaction, statistics applied once at
    the end (an import's apply phase). Use :func:`bulk_ingest`; the caller ensures partitions for the
    span first. Export records only: full API objects belong to :func:`ingest`.

    Every play gets its track id before its event is written. Tracks that an earlier batch (or an
    earlier transaction of the same import, through ``known``) resolved skip the catalog. A batch
    with tracks not resolved yet is queued, and so is every batch after it, until
    ``PENDING_TRACKS`` new tracks or ``QUEUED_PLAYS`` plays have gathered (or :meth:`flush`): one
    catalog pass resolves them all, then the queued batches are written in their order, each as
    if it had been written on its own. A batch's events are written one of two ways:

    - copied straight into ``listening_events`` (and ``tmp_delta``) when nothing stored can repeat
      or match them: plays of tracks the catalog pass just created, and batches whose span holds
      no stored play of the user that they could repeat or, from another origin, merge with (a
      first import, read in time order);
    - otherwise through the general path of :func:`ingest` (dedupe and merge in SQL).

    So the events and counts are exactly those of :func:`ingest` called batch by batch.
    """

    def __init__(
        self, ex: _Exec, user_id: int, import_id: uuid.UUID | None, known: KnownTracks | None = None
    ) -> None:
        self._ex = ex
        self._user_id = user_id
        self._import_id = import_id
        self._known: KnownTracks = {} if known is None else known
        # The caller's side: batches waiting for a catalog pass, entries (track id, or the track's
        # key while unresolved; played_at, ms, origin), and the unresolved keys with their tracks.
        self._queue: list[list[tuple[Any, datetime, int | None, str]]] = []
        self._queued = 0
        self._new: dict[tuple[str, ...], TrackRef] = {}
        # Spotify ids handed to the writer to resolve: known by the time it writes what follows.
        self._resolving: set[tuple[str, ...]] = set()
        # The writer's side.
        self._learnt: list[tuple[str, ...]] = []  # keys this transaction added to ``known``
        self._fresh: set[int] = set()
        self._since_flush = IngestResult()
        self.result = IngestResult()
        self._finished = False
        self._writer = _Writer()

    def add(self, plays: Sequence[Play]) -> None:
        """Take a batch. It is written in the background, in order; :meth:`flush` waits for what
        was taken and tells what happened to it."""
        if self._finished:
            raise RuntimeError("this bulk ingestion is finished")
        entries: list[tuple[Any, datetime, int | None, str]] = []
        known, new = self._known, self._new
        for play in plays:
            t = play.track
            if play.played_at.tzinfo is None:
                raise ValueError("played_at must be timezone-aware")
            if t.album is not None and t.album.spotify_id and _is_full(t):
                raise ValueError("bulk ingestion takes export records only")
            key = _track_key(t)
            hit = known.get(key)
            if hit is not None:
                entries.append((hit[0], play.played_at, play.ms_played, play.origin))
                continue
            entries.append((key, play.played_at, play.ms_played, play.origin))
            if key in self._resolving:
                continue
            held = new.get(key)
            if held is None or (held.album is None and t.album is not None):
                new[key] = t
        if not entries:
            return
        if not self._queue and not new:
            self._writer.submit(self._write_batch, entries)
            return
        self._queue.append(entries)
        self._queued += len(entries)
        if len(new) >= PENDING_TRACKS or self._queued >= QUEUED_PLAYS:
            self._submit_queue()

    def flush(self) -> IngestResult:
        """Write everything taken so far; returns what happened to the plays taken since the last
        flush. Raises what the background writing raised."""
        self._submit_queue()
        self._writer.drain()
        counts, self._since_flush = self._since_flush, IngestResult()
        return counts

    def finish(self) -> IngestResult:
        """Write everything taken and then the statistics of all of it; returns :attr:`result`.
        Nothing can be added afterwards."""
        if not self._finished:
            self.flush()
            self.close()
            # The statistics of many batches at once: sorts and hashes of that size fit in memory.
            self._ex(f"SET LOCAL work_mem = '{BULK_WORK_MEM}'")
            _apply_deltas(self._ex, self._user_id)
            self._finished = True
        return self.result

    def close(self) -> None:
        """Stop the background writer (after the statement it runs, if any)."""
        self._writer.close()

    def forget(self) -> None:
        """The transaction is rolled back: the tracks it resolved (some it created) are unknown
        again to whoever keeps ``known`` for the next transaction."""
        for key in self._learnt:
            self._known.pop(key, None)
        self._learnt.clear()

    def _submit_queue(self) -> None:
        if self._new:
            self._resolving.update(k for k in self._new if k[0] == "s")
            tracks, self._new = list(self._new.values()), {}
            self._writer.submit(self._resolve_tracks, tracks)
        for entries in self._queue:
            self._writer.submit(self._write_batch, entries)
        if self._queue:
            self._writer.submit(self._forget_fresh)
        self._queue, self._queued = [], 0

    # --- the writer's side (the background thread) ------------------------------------------

    def _resolve_tracks(self, tracks: list[TrackRef]) -> None:
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        self._fresh = self._resolve(_stage([Play(t, epoch, "extended", 0) for t in tracks]))

    def _forget_fresh(self) -> None:
        self._fresh = set()

    def _write_batch(self, entries: list[tuple[Any, datetime, int | None, str]]) -> None:
        known = self._known
        resolved = [
            (ref if isinstance(ref, int) else known[ref][0], at, ms, origin)
            for ref, at, ms, origin in entries
        ]
        counts = self._write(resolved, self._fresh)
        if self._fresh:
            self._fresh.difference_update(e[0] for e in resolved)
        self.result = self.result + counts
        self._since_flush = self._since_flush + counts

    def _resolve(self, staged: _Staged) -> set[int]:
        """Catalog rows for the tracks of ``staged``, which join the known tracks. Returns the
        tracks this pass created that share their identity with no other track: no stored play
        can be theirs."""
        ex = self._ex
        ex(f"TRUNCATE {_BATCH_TABLES}")
        _copy_catalog(ex, staged)
        _upsert_catalog(ex, staged)
        ex(_IDENTITY_SQL)
        _record_gaps(ex)
        # A track this pass created may be the real track that name-only records of the same artist
        # and name should now resolve to: those keys are looked up again. (A Spotify id's track
        # never changes.)
        by_tk = {row[0]: key for key, row in staged.tracks.items()}
        rows = ex("SELECT tk, id, alt_ids, artist_key, name_key, is_new FROM tmp_tracks").fetchall()
        stale = {(r[3], r[4]) for r in rows if r[5]}
        if stale:
            for key in [k for k, v in self._known.items() if k[0] == "p" and v[1] in stale]:
                del self._known[key]
        fresh: set[int] = set()
        for tk, track_id, alt_ids, artist_key, track_name_key, is_new in rows:
            self._known[by_tk[tk]] = (int(track_id), (artist_key, track_name_key))
            self._learnt.append(by_tk[tk])
            if is_new and len(alt_ids) == 1:
                fresh.add(int(track_id))
        return fresh

    def _write(self, entries: list[tuple[int, datetime, int | None, str]], fresh: set[int]) -> IngestResult:
        """Write resolved plays (track id, played_at, ms, origin); ``fresh``: tracks nothing stored
        can refer to."""
        new = [e for e in entries if e[0] in fresh] if fresh else []
        rest = [e for e in entries if e[0] not in fresh] if fresh else entries
        if not rest:
            return self._copy(entries)
        span = _span(self._user_id, min(e[1] for e in rest), max(e[1] for e in rest), {e[3] for e in rest})
        row = self._ex(_NEIGHBOURS_SQL, span).fetchone()
        if not (row and row[0]):  # nothing stored can be repeated or matched
            return self._copy(entries)
        ex = self._ex
        ex(f"TRUNCATE {_BATCH_TABLES}")
        with ex.copy("COPY tmp_plays (seq, tk, played_at, ms_played, origin, track_id) FROM STDIN") as cp:
            for seq, (track_id, at, ms, origin) in enumerate(rest):
                cp.write_row((seq, -1, at, ms, origin, track_id))
        ex("ANALYZE tmp_plays")
        ex(_PLAY_IDENTITY_SQL)
        counts = _write_events(ex, self._import_id, span)
        return counts + self._copy(new) if new else counts

    def _copy(self, entries: list[tuple[int, datetime, int | None, str]]) -> IngestResult:
        """Plays no stored event can repeat or match: only their own repeats are duplicates, every
        other play is copied straight in, and tmp_delta receives the same rows."""
        rows = entries
        # Plays strictly in time order cannot repeat one another; others are looked at one by one.
        if any(a[1] >= b[1] for a, b in pairwise(entries)):
            seen: set[tuple[int, datetime]] = set()
            rows = []
            for e in entries:
                if (e[0], e[1]) not in seen:
                    seen.add((e[0], e[1]))
                    rows.append(e)
        ex = self._ex
        with ex.copy(
            "COPY listening_events (track_id, played_at, ms_played, origin, user_id, import_id) "
            "FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.set_types(_EVENT_TYPES)
            tail = (self._user_id, self._import_id)
            for row in rows:
                cp.write_row(row + tail)
        with ex.copy("COPY tmp_delta (track_id, played_at, ms) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(("int8", "timestamptz", "int8"))
            for row in rows:
                cp.write_row(row[:3])
        return IngestResult(added=len(rows), duplicates=len(entries) - len(rows))


class _Writer:
    """One background thread that runs jobs in the order they come (the database side of a bulk
    ingestion, so the caller reads and stages the next batch while PostgreSQL writes this one).
    The first error stops it; later jobs are dropped and the error is raised to the caller."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]] | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="myi-bulk-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[..., None], *args: Any) -> None:
        self._raise()
        self._jobs.put((job, args))

    def drain(self) -> None:
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    job, args = item
                    job(*args)
            except BaseException as exc:  # handed to the caller by submit() or drain()
                self._error = exc
            finally:
                self._jobs.task_done()


_EVENT_TYPES = ("int8", "timestamptz", "int4", "text", "int8", "uuid")


@contextmanager
def bulk_ingest(
    conn: psycopg.Connection[Any],
    user_id: int,
    *,
    import_id: uuid.UUID | None = None,
    counter: StatementCounter | None = None,
    known: KnownTracks | None = None,
) -> Iterator[BulkIngest]:
    """``with bulk_ingest(conn, user) as bulk: bulk.add(batch) ...``: every batch and the statistics
    of all of them commit together when the block ends (or nothing does). ``bulk.finish()`` writes
    the statistics before the block ends, so the caller's own statements come last (the fewer
    statements after them, the shorter their row locks last). ``known``: the tracks an earlier
    transaction of the same import resolved (filled as batches resolve more)."""
    bulk: BulkIngest | None = None
    try:
        with _transaction(conn, counter) as ex:
            _lock(ex, user_id, exclusive_catalog=False)
            bulk = BulkIngest(ex, user_id, import_id, known)
            try:
                yield bulk
                bulk.finish()
            finally:
                bulk.close()
    except BaseException:
        if bulk is not None:
            bulk.forget()
        raise


def _stage_checked(plays: Sequence[Play]) -> _Staged:
    for play in plays:
        if play.played_at.tzinfo is None:
            raise ValueError("played_at must be timezone-aware")
    return _stage(plays)


def _lock(ex: _Exec, user_id: int, *, exclusive_catalog: bool) -> None:
    """The batch's locks."""
    _check_user(user_id, ex(_lock_statement(exclusive_catalog, small=False), {"user": user_id}).fetchone())


def _lock_statement(exclusive_catalog: bool, *, small: bool) -> str:
    """The statement that takes a batch's locks (and a small batch's planner settings: see
    _SMALL_PLANS), and looks for its user (``%(user)s``)."""
    lock = "pg_advisory_xact_lock" if exclusive_catalog else "pg_advisory_xact_lock_shared"
    sql = (
        f"SELECT {lock}({CATALOG_LOCK}), pg_advisory_xact_lock({USER_LOCK_CLASS}, %(user)s), "
        "(SELECT timezone FROM users WHERE id = %(user)s)"
    )
    return sql + (_SMALL_PLANS if small else "")


def _check_user(user_id: int, row: tuple[Any, ...] | None) -> None:
    if row is None or row[2] is None:
        raise LookupError(f"no user {user_id}")


# A small batch's staging tables and the types of their columns (see _lock_and_stage).
_SMALL_STAGING = (
    ("tmp_artists (rk, spotify_id, name, name_key, image_url)", "int, text, text, text, text"),
    (
        "tmp_albums (ak, spotify_id, name, name_key, artist_key, image_url, release_date)",
        "int, text, text, text, text, text, text",
    ),
    ("tmp_album_artists (ak, rk, position)", "int, int, smallint"),
    (
        "tmp_tracks (tk, spotify_id, name, name_key, artist_key, duration_ms, explicit, ak, full_data)",
        "int, text, text, text, text, int, boolean, int, boolean",
    ),
    ("tmp_track_artists (tk, rk, position)", "int, int, smallint"),
    ("tmp_plays (seq, tk, played_at, ms_played, origin)", "int, int, timestamptz, int, text"),
)


def _lock_and_stage_sql(exclusive_catalog: bool) -> str:
    """The prepared statement of _lock_and_stage ($1 the document, $2 the user, an integer as the
    key of the user lock is): one data-modifying CTE per staging table, each from its rows in the
    document (an array per table, in the order of _SMALL_STAGING, of arrays in the order of its
    columns), and the lock statement."""
    inserts = []
    for i, (target, columns) in enumerate(_SMALL_STAGING):
        values = ", ".join(f"(r->>{k})::{t}" for k, t in enumerate(columns.split(", ")))
        inserts.append(f"s{i} AS (INSERT INTO {target} SELECT {values} FROM jsonb_array_elements($1->{i}) r)")
    lock = _lock_statement(exclusive_catalog, small=True).replace("%(user)s", "$2")
    return f"WITH {', '.join(inserts)}\n{lock}"


def _stage_document(st: _Staged) -> str:
    """The rows of every staging table, as _lock_and_stage_sql reads them: serialising them as
    JSON costs a fraction of what binding an array per column does."""
    return json.dumps(
        [
            list(st.artists.values()),
            list(st.albums.values()),
            [(ak, rk, pos) for (ak, rk), pos in st.album_artists.items()],
            list(st.tracks.values()),
            [(tk, rk, pos) for (tk, rk), pos in st.track_artists.items()],
            [(p[0], p[1], p[2].isoformat(), p[3], p[4]) for p in st.plays],
        ]
    )


def _lock_and_stage(ex: _Exec, user_id: int, st: _Staged, *, exclusive: bool) -> None:
    """A small batch's locks and its staging rows in one statement (the staging tables are the
    session's own: that the rows go in with the locks and not after them changes nothing)."""
    name = _STAGE_EXCLUSIVE if exclusive else _STAGE_SHARED
    execute = psycopg.ClientCursor(ex.cur.connection).mogrify(
        f"EXECUTE {name} (%s, %s)", (_stage_document(st), user_id)
    )
    _check_user(user_id, ex(execute).fetchone())


@contextmanager
def _transaction(conn: psycopg.Connection[Any], counter: StatementCounter | None) -> Iterator[_Exec]:
    """A transaction (a savepoint inside a caller's) with the batch's temporary tables, empty.

    The tables are created once per connection. Every transaction empties them before it ends:
    the batch's last statement does (_emptying), or the TRUNCATE here; a rollback discards
    whatever it staged (a savepoint's rollback, too). So they are empty at every start, inside a
    caller's transaction as well. A connection counts as prepared once the transaction that
    created them has committed (a rolled-back CREATE leaves no table); inside a caller's
    transaction, which may still roll back, they are looked for."""
    nested = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    created = False
    with conn.transaction(), conn.cursor() as cur:
        ex = _Exec(cur, counter)
        if nested:
            row = ex("SELECT to_regclass('pg_temp.tmp_delta') IS NOT NULL").fetchone()
            if not (row and row[0]):
                ex.script(_TEMP_TABLES)
        elif conn not in _prepared:
            ex.script(_TEMP_TABLES)
            created = True
        yield ex
        if not ex.emptied:
            ex(f"TRUNCATE {_STAGING_TABLES}")
    if created:
        _prepared.add(conn)


# Small batches on each connection since its staging tables were last truncated (see _emptying).
_rounds: weakref.WeakKeyDictionary[psycopg.Connection[Any], int] = weakref.WeakKeyDictionary()


def _emptying(ex: _Exec) -> str | None:
    """The statement with which a small batch empties the staging tables as it ends (they count
    as emptied), or None: one small batch in EMPTYING_ROUNDS on a connection leaves them to
    _transaction's TRUNCATE, which drops the dead rows that the DELETEs before it left."""
    conn = ex.cur.connection
    rounds = _rounds.get(conn, 0) + 1
    _rounds[conn] = rounds % EMPTYING_ROUNDS
    if rounds == EMPTYING_ROUNDS:
        return None
    ex.emptied = True
    return f"EXECUTE {_EMPTY}"


# The connections on which the statements of small batches are prepared (see SMALL_BATCH).
_ready: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()


@functools.cache
def _prepare_statements() -> dict[str, str]:
    """The statements of small batches: name -> the PREPARE that makes it."""
    out = {
        f"{_CATALOG_NAME}{i}": f"PREPARE {_CATALOG_NAME}{i} AS {sql}" for i, (_, sql) in enumerate(_CATALOG)
    }
    out[_FOLD] = f"PREPARE {_FOLD} (bigint) AS {_DELTA_SQL.replace('%(user)s', '$1')}"
    out[_GAPS] = f"PREPARE {_GAPS} AS {_GAPS_SQL}"
    insert = _insert_sql(_UNMATCHED_PLAYS).replace("%(user)s", "$1").replace("%(import_id)s", "$2")
    out[_INSERT] = f"PREPARE {_INSERT} (bigint, uuid) AS {insert}"
    out[_EMPTY] = f"PREPARE {_EMPTY} AS {_EMPTY_SQL}"
    for name, exclusive in ((_STAGE_SHARED, False), (_STAGE_EXCLUSIVE, True)):
        out[name] = f"PREPARE {name} (jsonb, integer) AS {_lock_and_stage_sql(exclusive)}"
    return out


def _ensure_prepared(conn: psycopg.Connection[Any]) -> None:
    """Prepare, on ``conn`` (in autocommit), the statements of small batches it lacks; the staging
    tables they use are created first. Once per connection, or again after a statement was found
    gone (see ingest()). A prepared statement is not part of a transaction: it outlives a
    rollback, and one that failed to be prepared is looked for again next time."""
    if conn in _ready:
        return
    if conn not in _prepared:
        with _transaction(conn, None):  # creates the staging tables
            pass
    have = {row[0] for row in conn.execute("SELECT name FROM pg_prepared_statements").fetchall()}
    missing = [sql for name, sql in _prepare_statements().items() if name not in have]
    if missing:
        conn.execute(";\n".join(missing))
    _ready.add(conn)


def _execute_all(ex: _Exec, statements: list[str]) -> list[tuple[int, tuple[Any, ...] | None]]:
    """Run ``statements`` (their arguments bound) in one round trip; each one's row count and
    first row."""
    if ex.counter is not None:
        ex.counter.count += len(statements)
        ex.counter.round_trips += 1
    cur = ex.cur
    cur.execute(";\n".join(statements))
    out: list[tuple[int, tuple[Any, ...] | None]] = []
    while True:
        out.append((cur.rowcount, cur.fetchone() if cur.description else None))
        if not cur.nextset():
            return out


# The two ways of one batch of ingest() in its transaction, locks, statistics and the caller's
# ``and_then`` included; ingest() takes one or the other.
def _ingest_batch(
    ex: _Exec,
    user_id: int,
    st: _Staged,
    import_id: uuid.UUID | None,
    on_staged: Callable[[], None],
    exclusive: bool,
    and_then: tuple[str, dict[str, Any]] | None,
) -> IngestResult:
    """A batch planned for its rows (staging tables analysed)."""
    _lock(ex, user_id, exclusive_catalog=exclusive)
    span = _staged_span(user_id, st)
    _copy_staged(ex, st)
    row = ex.script(_STAGED_SQL, span).fetchone()
    neighbours = bool(row and row[0])
    on_staged()
    _upsert_catalog(ex, st, exclusive=exclusive)
    counts = replace(_write_events(ex, import_id, span, neighbours=neighbours), gaps=_record_gaps(ex))
    _apply_deltas(ex, user_id)
    if and_then is not None:
        ex(*and_then)
    return counts


def _ingest_small(
    ex: _Exec,
    user_id: int,
    st: _Staged,
    import_id: uuid.UUID | None,
    on_staged: Callable[[], None],
    exclusive: bool,
    and_then: tuple[str, dict[str, Any]] | None,
) -> IngestResult:
    """A small batch (see SMALL_BATCH): what _ingest_batch does, by the prepared statements, in
    three round trips when nothing stored is to be matched."""
    span = _staged_span(user_id, st)
    _lock_and_stage(ex, user_id, st, exclusive=exclusive)
    on_staged()
    # The catalog, then whether it moved statistics and whether stored plays lie near.
    checks = f"{_catalog_executes(_held(st))};\n{_CHECKS_SQL}"
    row = ex.script(checks, span).fetchone()
    assert row is not None
    moves, neighbours = bool(row[0]), bool(row[1])
    if moves:
        _follow_moves(ex, exclusive=exclusive)
    counts = None
    if neighbours:
        counts = _write_events(ex, import_id, span)
    # The plays (when nothing was to be matched), the gaps, the statistics and the caller's write.
    mogrify = psycopg.ClientCursor(ex.cur.connection).mogrify
    args = {"user": user_id, "import_id": import_id}
    rest = [] if neighbours else [mogrify(f"EXECUTE {_INSERT} (%(user)s, %(import_id)s)", args)]
    rest += [f"EXECUTE {_GAPS}", mogrify(f"EXECUTE {_FOLD} (%(user)s)", args)]
    if and_then is not None:
        rest.append(mogrify(*and_then))
    empty = _emptying(ex)
    results = _execute_all(ex, [*rest, empty] if empty else rest)
    if counts is None:
        counts = _counts(results[0][1])
    return replace(counts, gaps=results[0 if neighbours else 1][0])


def _staged_span(user_id: int, st: _Staged) -> dict[str, Any]:
    times = [p[2] for p in st.plays]
    return _span(user_id, min(times), max(times), {p[4] for p in st.plays})


def _copy_staged(ex: _Exec, st: _Staged) -> None:
    """Stage the batch (not analysed: see _STAGED_SQL)."""
    _copy_catalog(ex, st, analyze=False)
    with ex.copy(
        "COPY tmp_plays (seq, tk, played_at, ms_played, origin, track_id, alt_ids) FROM STDIN"
    ) as cp:
        for play in st.plays:
            cp.write_row(play)


def _copy_catalog(ex: _Exec, st: _Staged, *, analyze: bool = True) -> None:
    with ex.copy("COPY tmp_artists (rk, spotify_id, name, name_key, image_url) FROM STDIN") as cp:
        for row in st.artists.values():
            cp.write_row(row)
    if st.albums:
        with ex.copy(
            "COPY tmp_albums (ak, spotify_id, name, name_key, artist_key, image_url, release_date) FROM STDIN"
        ) as cp:
            for row in st.albums.values():
                cp.write_row(row)
        with ex.copy("COPY tmp_album_artists (ak, rk, position) FROM STDIN") as cp:
            for (ak, rk), pos in st.album_artists.items():
                cp.write_row((ak, rk, pos))
    with ex.copy(
        "COPY tmp_tracks (tk, spotify_id, name, name_key, artist_key, duration_ms, explicit, ak, full_data) "
        "FROM STDIN"
    ) as cp:
        for row in st.tracks.values():
            cp.write_row(row)
    with ex.copy("COPY tmp_track_artists (tk, rk, position) FROM STDIN") as cp:
        for (tk, rk), pos in st.track_artists.items():
            cp.write_row((tk, rk, pos))
    if analyze:
        ex("ANALYZE tmp_artists, tmp_albums, tmp_album_artists, tmp_tracks, tmp_track_artists")


# ---------------------------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------------------------
# The catalog statements, each with what a batch must hold for it to have any work (None: every
# batch): ``real_*`` and ``named_*``, artists, albums or tracks with and without a Spotify id;
# ``albums``, any album; ``full``, a full API track object. See _held.
# The credits of a batch's tracks: of new tracks, and every credit of full API objects.
_CREDITS = """
SELECT DISTINCT ON (t.id, ar.id) t.id AS track_id, ar.id AS artist_id, ta.position FROM tmp_tracks t
  JOIN tmp_track_artists ta USING (tk) JOIN tmp_artists ar USING (rk)
 WHERE t.is_new OR t.full_data
 ORDER BY t.id, ar.id, t.full_data DESC, t.is_new DESC, ta.position"""
_CATALOG: tuple[tuple[str | None, str], ...] = (
    # Artists: real ones by Spotify id (names and images corrected), provisional ones by name.
    (
        "real_artists",
        """
INSERT INTO artists (spotify_id, name, name_key, image_url)
SELECT spotify_id, name, name_key, image_url FROM tmp_artists WHERE spotify_id IS NOT NULL
ORDER BY spotify_id
ON CONFLICT (spotify_id) DO NOTHING""",
    ),
    (
        "named_artists",
        """
INSERT INTO artists (name, name_key)
SELECT name, name_key FROM tmp_artists WHERE spotify_id IS NULL ORDER BY name_key
ON CONFLICT (name_key) WHERE spotify_id IS NULL DO NOTHING""",
    ),
    # Real artists' names and images corrected (apart from the insert: an upsert locks every row
    # it meets, changed or not, and concurrent syncs of other users naming the same artists would
    # wait for one another), and the batch's ids.
    (
        "real_artists",
        """
WITH corrected AS (
    UPDATE artists a SET name = t.name, name_key = t.name_key, image_url = COALESCE(t.image_url, a.image_url),
           updated_at = now()
      FROM tmp_artists t
     WHERE t.spotify_id IS NOT NULL AND a.spotify_id = t.spotify_id
       AND (a.name, a.image_url) IS DISTINCT FROM (t.name, COALESCE(t.image_url, a.image_url))
)
UPDATE tmp_artists t SET id = a.id FROM artists a
 WHERE t.spotify_id IS NOT NULL AND a.spotify_id = t.spotify_id""",
    ),
    (
        "named_artists",
        """
UPDATE tmp_artists t SET id = a.id FROM artists a
 WHERE t.spotify_id IS NULL AND a.spotify_id IS NULL AND a.name_key = t.name_key""",
    ),
    # Albums, the same way; provisional albums are keyed by (artist name, album name).
    (
        "real_albums",
        """
INSERT INTO albums (spotify_id, name, name_key, artist_key, image_url, release_date)
SELECT spotify_id, name, name_key, artist_key, image_url, release_date FROM tmp_albums
 WHERE spotify_id IS NOT NULL ORDER BY spotify_id
ON CONFLICT (spotify_id) DO NOTHING""",
    ),
    (
        "named_albums",
        """
INSERT INTO albums (name, name_key, artist_key)
SELECT name, name_key, artist_key FROM tmp_albums WHERE spotify_id IS NULL ORDER BY artist_key, name_key
ON CONFLICT (artist_key, name_key) WHERE spotify_id IS NULL DO NOTHING""",
    ),
    (
        "real_albums",
        """
WITH corrected AS (
    UPDATE albums a SET name = t.name, name_key = t.name_key, artist_key = t.artist_key,
           image_url = COALESCE(t.image_url, a.image_url),
           release_date = COALESCE(t.release_date, a.release_date), updated_at = now()
      FROM tmp_albums t
     WHERE t.spotify_id IS NOT NULL AND a.spotify_id = t.spotify_id
       AND (a.name, a.image_url, a.release_date) IS DISTINCT FROM
           (t.name, COALESCE(t.image_url, a.image_url), COALESCE(t.release_date, a.release_date))
)
UPDATE tmp_albums t SET id = a.id FROM albums a
 WHERE t.spotify_id IS NOT NULL AND a.spotify_id = t.spotify_id""",
    ),
    (
        "named_albums",
        """
UPDATE tmp_albums t SET id = a.id FROM albums a
 WHERE t.spotify_id IS NULL AND a.spotify_id IS NULL AND a.artist_key = t.artist_key
   AND a.name_key = t.name_key""",
    ),
    (
        "albums",
        """
INSERT INTO album_artists (album_id, artist_id, position)
SELECT al.id, ar.id, aa.position FROM tmp_album_artists aa
  JOIN tmp_albums al USING (ak) JOIN tmp_artists ar USING (rk)
 ORDER BY 1, 2
ON CONFLICT DO NOTHING""",
    ),
    (
        "albums",
        """
UPDATE tmp_tracks t SET album_id = al.id FROM tmp_albums al WHERE al.ak = t.ak""",
    ),
    # Tracks known by Spotify id: new ones inserted, existing ones looked up.
    (
        "real_tracks",
        """
WITH new AS (
    INSERT INTO tracks (spotify_id, name, name_key, artist_key, album_id, duration_ms, explicit)
    SELECT spotify_id, name, name_key, artist_key, album_id, duration_ms, explicit FROM tmp_tracks
     WHERE spotify_id IS NOT NULL ORDER BY spotify_id
    ON CONFLICT (spotify_id) DO NOTHING
    RETURNING id, spotify_id
)
UPDATE tmp_tracks t SET id = new.id, is_new = true FROM new WHERE new.spotify_id = t.spotify_id""",
    ),
    (
        "real_tracks",
        """
UPDATE tmp_tracks t SET id = x.id FROM tracks x
 WHERE t.id IS NULL AND t.spotify_id IS NOT NULL AND x.spotify_id = t.spotify_id""",
    ),
    # Tracks known by name only (account data): an existing track of that artist and name (a real one
    # first), else a provisional name-only track.
    (
        "named_tracks",
        """
UPDATE tmp_tracks t SET id = (
    SELECT x.id FROM tracks x WHERE x.artist_key = t.artist_key AND x.name_key = t.name_key
     ORDER BY (x.spotify_id IS NULL), x.id LIMIT 1)
 WHERE t.spotify_id IS NULL""",
    ),
    (
        "named_tracks",
        """
WITH new AS (
    INSERT INTO tracks (name, name_key, artist_key, album_id, duration_ms)
    SELECT name, name_key, artist_key, album_id, duration_ms FROM tmp_tracks
     WHERE spotify_id IS NULL AND id IS NULL ORDER BY artist_key, name_key
    ON CONFLICT (artist_key, name_key) WHERE spotify_id IS NULL DO NOTHING
    RETURNING id, artist_key, name_key
)
UPDATE tmp_tracks t SET id = new.id, is_new = true FROM new
 WHERE t.spotify_id IS NULL AND new.artist_key = t.artist_key AND new.name_key = t.name_key""",
    ),
    (
        "named_tracks",
        """
UPDATE tmp_tracks t SET id = x.id FROM tracks x
 WHERE t.id IS NULL AND x.spotify_id IS NULL AND x.artist_key = t.artist_key AND x.name_key = t.name_key""",
    ),
    # Album changes of existing tracks come from full API data only (it corrects, and the statistics of
    # every user move with it under the exclusive catalog lock). Export data never changes an existing
    # track's album or credits, not even a missing one: other users' batches may be counting its plays
    # at the same time under the shared lock. Such a track is a catalog gap that enrichment fills.
    (
        "full",
        """
INSERT INTO tmp_album_moves (track_id, old_album, new_album)
SELECT x.id, x.album_id, t.album_id FROM tmp_tracks t JOIN tracks x ON x.id = t.id
 WHERE NOT t.is_new AND t.album_id IS NOT NULL AND x.album_id IS DISTINCT FROM t.album_id
   AND t.full_data""",
    ),
    (
        None,
        """
UPDATE tracks x SET
       name = CASE WHEN t.full_data THEN t.name ELSE x.name END,
       name_key = CASE WHEN t.full_data THEN t.name_key ELSE x.name_key END,
       artist_key = CASE WHEN t.full_data THEN t.artist_key ELSE x.artist_key END,
       album_id = CASE WHEN t.full_data THEN COALESCE(t.album_id, x.album_id) ELSE x.album_id END,
       duration_ms = CASE WHEN t.full_data THEN COALESCE(t.duration_ms, x.duration_ms)
                          ELSE COALESCE(x.duration_ms, t.duration_ms) END,
       explicit = COALESCE(t.explicit, x.explicit),
       updated_at = now()
  FROM tmp_tracks t
 WHERE x.id = t.id AND NOT t.is_new
   AND ((t.full_data AND (x.name, x.artist_key, x.album_id, x.duration_ms, x.explicit)
                         IS DISTINCT FROM (t.name, t.artist_key, COALESCE(t.album_id, x.album_id),
                                           COALESCE(t.duration_ms, x.duration_ms),
                                           COALESCE(t.explicit, x.explicit)))
        OR (NOT t.full_data AND x.duration_ms IS NULL AND t.duration_ms IS NOT NULL))""",
    ),
    # Credits: full API data replaces the credits of existing tracks (statistics move with them); new
    # tracks take the credits of the batch.
    (
        "full",
        """
INSERT INTO tmp_credit_moves (track_id, artist_id, sign)
SELECT old.track_id, old.artist_id, -1 FROM track_artists old
  JOIN tmp_tracks t ON t.id = old.track_id AND t.full_data AND NOT t.is_new
 WHERE NOT EXISTS (SELECT 1 FROM tmp_track_artists ta JOIN tmp_artists ar USING (rk)
                    WHERE ta.tk = t.tk AND ar.id = old.artist_id)
UNION ALL
SELECT t.id, ar.id, 1 FROM tmp_tracks t
  JOIN tmp_track_artists ta USING (tk) JOIN tmp_artists ar USING (rk)
 WHERE NOT t.is_new
   AND t.full_data AND NOT EXISTS (SELECT 1 FROM track_artists x
                                    WHERE x.track_id = t.id AND x.artist_id = ar.id)""",
    ),
    (
        "full",
        """
DELETE FROM track_artists x USING tmp_credit_moves m
 WHERE m.sign = -1 AND x.track_id = m.track_id AND x.artist_id = m.artist_id""",
    ),
    # (Two keys of a batch can name one track, its Spotify id and its artist and name: one credit.)
    # Stored credits whose order full API data corrects are updated apart from the insert, as for
    # artists: an upsert would lock every credit it meets.
    (
        None,
        f"""
WITH credits AS ({_CREDITS}
), reordered AS (
    UPDATE track_artists x SET position = c.position FROM credits c
     WHERE x.track_id = c.track_id AND x.artist_id = c.artist_id AND x.position <> c.position
)
INSERT INTO track_artists (track_id, artist_id, position)
SELECT * FROM credits
ON CONFLICT (track_id, artist_id) DO NOTHING""",
    ),
)

# Statistics of every user follow album and credit changes of the tracks they played: (table,
# key, stat_counts column, the rows to add, the moved keys whose rows may have emptied).
_MOVES = (
    (
        "stat_album",
        "album_id",
        "albums",
        """SELECT st.user_id, st.grain, st.bucket, m.album_id, sum(m.sign * st.plays),
                  sum(m.sign * st.ms_played)
             FROM (SELECT track_id, old_album AS album_id, -1 AS sign FROM tmp_album_moves
                    WHERE old_album IS NOT NULL
                   UNION ALL
                   SELECT track_id, new_album, 1 FROM tmp_album_moves WHERE new_album IS NOT NULL) m
             JOIN stat_track st ON st.track_id = m.track_id AND st.grain IN (0, 3)
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""",
        "SELECT old_album FROM tmp_album_moves UNION SELECT new_album FROM tmp_album_moves",
    ),
    (
        "stat_artist",
        "artist_id",
        "artists",
        """SELECT st.user_id, st.grain, st.bucket, m.artist_id, sum(m.sign * st.plays),
                  sum(m.sign * st.ms_played)
             FROM tmp_credit_moves m JOIN stat_track st ON st.track_id = m.track_id AND st.grain IN (0, 3)
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""",
        "SELECT artist_id FROM tmp_credit_moves",
    ),
)


def _add_counted(ex: _Exec, table: str, key: str, select: str) -> list[tuple[int, int, int]]:
    """Add ``select``'s rows (user, grain, bucket, key, plays, ms) to ``table``; the rows new to a
    user, per user and grain."""
    return ex(
        f"""
        WITH added AS (
            INSERT INTO {table} (user_id, grain, bucket, {key}, plays, ms_played) {select}
            ON CONFLICT (user_id, grain, bucket, {key}) DO UPDATE
               SET plays = {table}.plays + EXCLUDED.plays, ms_played = {table}.ms_played + EXCLUDED.ms_played
            RETURNING user_id, grain, xmax = 0 AS inserted
        )
        SELECT user_id, grain, count(*) FROM added WHERE inserted GROUP BY 1, 2
        """
    ).fetchall()


def _delete_counted(ex: _Exec, table: str, where: str, params: Any = None) -> list[tuple[int, int, int]]:
    """Delete ``table``'s rows matching ``where`` (alias s); minus the rows gone, per user and grain."""
    return ex(
        f"""
        WITH gone AS (DELETE FROM {table} s WHERE {where} RETURNING s.user_id, s.grain)
        SELECT user_id, grain, -count(*) FROM gone GROUP BY 1, 2
        """,
        params,
    ).fetchall()


def count_rows(ex: Callable[..., Any], column: str, deltas: Sequence[tuple[int, int, int]]) -> None:
    """Add (user, grain, delta) rows to ``stat_counts.<column>`` (``ex``: runs a statement)."""
    if not deltas:
        return
    users, grains, counts = zip(*deltas, strict=True)
    ex(
        f"""
        INSERT INTO stat_counts (user_id, grain, {column})
        SELECT u, g, sum(n) FROM unnest(%s::bigint[], %s::smallint[], %s::bigint[]) x (u, g, n)
         GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (user_id, grain) DO UPDATE SET {column} = stat_counts.{column} + EXCLUDED.{column}
        """,
        (list(users), list(grains), list(counts)),
    )


def _add_and_delete(ex: _Exec, table: str, key: str, column: str, select: str, delete: str) -> None:
    """Add ``select``'s rows to ``table``, then delete the rows matching ``delete``, counting in
    ``stat_counts.<column>`` the rows that came and went."""
    added = _add_counted(ex, table, key, select)
    gone = _delete_counted(ex, table, delete)
    count_rows(ex, column, added + gone)


def _move_statistics(ex: _Exec) -> None:
    for table, key, column, select, moved in _MOVES:
        emptied = f"s.{key} IN ({moved}) AND s.grain IN (0, 3) AND s.plays = 0 AND s.ms_played = 0"
        _add_and_delete(ex, table, key, column, select, emptied)


def _held(st: _Staged) -> frozenset[str]:
    """What ``st`` holds of what the statements of _CATALOG need to have any work (an API batch has
    no rows without a Spotify id, an export batch no full track object)."""
    holds = (
        ("real_artists", any(row[1] for row in st.artists.values())),
        ("named_artists", any(not row[1] for row in st.artists.values())),
        ("real_albums", any(row[1] for row in st.albums.values())),
        ("named_albums", any(not row[1] for row in st.albums.values())),
        ("albums", bool(st.albums)),
        ("real_tracks", any(row[1] for row in st.tracks.values())),
        ("named_tracks", any(not row[1] for row in st.tracks.values())),
        ("full", st.has_full),
    )
    return frozenset(name for name, held in holds if held)


def _catalog_needed(held: frozenset[str]) -> list[int]:
    """The statements of _CATALOG (their places) a batch that holds ``held`` has work for."""
    return [i for i, (need, _) in enumerate(_CATALOG) if need is None or need in held]


@functools.cache
def _catalog_text(held: frozenset[str]) -> str:
    """Those statements as one script."""
    return ";\n".join(_CATALOG[i][1] for i in _catalog_needed(held))


@functools.cache
def _catalog_executes(held: frozenset[str]) -> str:
    """The same, by the statements prepared for small batches."""
    return ";\n".join(f"EXECUTE {_CATALOG_NAME}{i}" for i in _catalog_needed(held))


def _upsert_catalog(ex: _Exec, st: _Staged, *, exclusive: bool = True) -> None:
    """The catalog rows of ``st``, and what follows their album and credit changes (``exclusive``:
    whether the catalog lock is held exclusively, which they need)."""
    ex.script(_catalog_text(_held(st)))
    if not st.has_full:
        return
    # Only full API objects can change an existing track's album or credits; mostly they do not.
    row = ex(
        "SELECT EXISTS (SELECT 1 FROM tmp_album_moves) OR EXISTS (SELECT 1 FROM tmp_credit_moves)"
    ).fetchone()
    if row and row[0]:
        _follow_moves(ex, exclusive=exclusive)


def _follow_moves(ex: _Exec, *, exclusive: bool = True) -> None:
    """Statistics and provisional rows follow the album and credit changes of tmp_album_moves and
    tmp_credit_moves; without the catalog lock held exclusively, raises _CatalogChanges."""
    if not exclusive:
        raise _CatalogChanges
    _move_statistics(ex)
    # Provisional artists and albums that real ones replaced on a track, under the same name, are
    # the same artist or album: merge them (exclusive catalog lock held).
    ex(
        """
        INSERT INTO tmp_artist_merges (p, r)
        SELECT DISTINCT ON (p.id) p.id, r.id FROM tmp_credit_moves out
          JOIN artists p ON p.id = out.artist_id AND p.spotify_id IS NULL
          JOIN tmp_credit_moves inn ON inn.track_id = out.track_id AND inn.sign = 1
          JOIN artists r ON r.id = inn.artist_id AND r.spotify_id IS NOT NULL AND r.name_key = p.name_key
         WHERE out.sign = -1
         ORDER BY p.id, r.id
        """
    )
    _merge_artists(ex)
    ex(
        """
        INSERT INTO tmp_album_merges (p, r)
        SELECT DISTINCT ON (p.id) p.id, r.id FROM tmp_album_moves m
          JOIN albums p ON p.id = m.old_album AND p.spotify_id IS NULL
          JOIN albums r ON r.id = m.new_album AND r.spotify_id IS NOT NULL AND r.name_key = p.name_key
         ORDER BY p.id, r.id
        """
    )
    _merge_albums(ex)


def _merge_artists(ex: _Exec) -> None:
    """Fold the provisional artists of ``tmp_artist_merges`` into their real ones: credits move,
    every user's statistics move (a track credited to both counts once), the provisional rows go."""
    _add_and_delete(
        ex,
        "stat_artist",
        "artist_id",
        "artists",
        """SELECT st.user_id, st.grain, st.bucket, m.r, sum(st.plays), sum(st.ms_played)
             FROM tmp_artist_merges m
             JOIN track_artists ta ON ta.artist_id = m.p
             JOIN stat_track st ON st.track_id = ta.track_id AND st.grain IN (0, 3)
            WHERE NOT EXISTS (SELECT 1 FROM track_artists x
                               WHERE x.track_id = ta.track_id AND x.artist_id = m.r)
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""",
        "s.artist_id IN (SELECT p FROM tmp_artist_merges)",
    )
    ex(
        """
        UPDATE track_artists ta SET artist_id = m.r FROM tmp_artist_merges m
         WHERE ta.artist_id = m.p
           AND NOT EXISTS (SELECT 1 FROM track_artists x
                            WHERE x.track_id = ta.track_id AND x.artist_id = m.r)
        """
    )
    ex("DELETE FROM track_artists ta USING tmp_artist_merges m WHERE ta.artist_id = m.p")
    ex(
        """
        INSERT INTO album_artists (album_id, artist_id, position)
        SELECT aa.album_id, m.r, aa.position
          FROM album_artists aa JOIN tmp_artist_merges m ON aa.artist_id = m.p
         ORDER BY 1, 2
        ON CONFLICT DO NOTHING
        """
    )
    ex("DELETE FROM album_artists aa USING tmp_artist_merges m WHERE aa.artist_id = m.p")
    ex("DELETE FROM catalog_gaps g USING tmp_artist_merges m WHERE g.kind = 'artist' AND g.entity_id = m.p")
    ex("DELETE FROM artists a USING tmp_artist_merges m WHERE a.id = m.p")


def _merge_albums(ex: _Exec) -> None:
    """Fold the provisional albums of ``tmp_album_merges`` into their real ones: tracks and every
    user's statistics move, the provisional rows go."""
    _add_and_delete(
        ex,
        "stat_album",
        "album_id",
        "albums",
        """SELECT st.user_id, st.grain, st.bucket, m.r, sum(st.plays), sum(st.ms_played)
             FROM tmp_album_merges m
             JOIN tracks x ON x.album_id = m.p
             JOIN stat_track st ON st.track_id = x.id AND st.grain IN (0, 3)
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""",
        "s.album_id IN (SELECT p FROM tmp_album_merges)",
    )
    ex(
        "UPDATE tracks x SET album_id = m.r, updated_at = now() "
        "FROM tmp_album_merges m WHERE x.album_id = m.p"
    )
    ex("DELETE FROM catalog_gaps g USING tmp_album_merges m WHERE g.kind = 'album' AND g.entity_id = m.p")
    ex("DELETE FROM album_artists aa USING tmp_album_merges m WHERE aa.album_id = m.p")
    ex("DELETE FROM albums a USING tmp_album_merges m WHERE a.id = m.p")


def _merge_one(conn: psycopg.Connection[Any], table: str, provisional_id: int, real_id: int) -> None:
    with _transaction(conn, None) as ex:
        ex("SELECT pg_advisory_xact_lock(%s)", (CATALOG_LOCK,))
        ex(f"INSERT INTO {table} (p, r) VALUES (%s, %s)", (provisional_id, real_id))
        if table == "tmp_artist_merges":
            _merge_artists(ex)
        else:
            _merge_albums(ex)


def merge_artist(conn: psycopg.Connection[Any], provisional_id: int, real_id: int) -> None:
    """Resolve a provisional artist to a real one (enrichment); statistics stay exact."""
    _merge_one(conn, "tmp_artist_merges", provisional_id, real_id)


def merge_album(conn: psycopg.Connection[Any], provisional_id: int, real_id: int) -> None:
    """Resolve a provisional album to a real one (enrichment); statistics stay exact."""
    _merge_one(conn, "tmp_album_merges", provisional_id, real_id)


# ---------------------------------------------------------------------------------------------
# Events: dedupe and merge
# ---------------------------------------------------------------------------------------------
# A track's identity for matching: itself and every track of the same artist and name (an
# account-data record named a track that was provisional then and is known by id now, or the
# other way round).
_IDENTITY_SQL = """
UPDATE tmp_tracks t SET alt_ids = ARRAY(
    SELECT t.id UNION
    SELECT x.id FROM tracks x WHERE x.artist_key = t.artist_key AND x.name_key = t.name_key)
"""

# The same for plays whose track was resolved before (by an earlier batch).
_PLAY_IDENTITY_SQL = """
UPDATE tmp_plays p SET alt_ids = i.ids
  FROM (SELECT t.id, ARRAY(SELECT t.id UNION
                           SELECT x.id FROM tracks x WHERE x.artist_key = t.artist_key
                              AND x.name_key = t.name_key) AS ids
          FROM tracks t WHERE t.id IN (SELECT track_id FROM tmp_plays)) i
 WHERE p.track_id = i.id
"""

# Whether a batch of plays from ``first`` to ``last`` (of ``origins``) could repeat a stored
# play (one stored inside its span) or match one of another origin (within the merge's reach,
# MERGE_REACH either side: see the candidates of _MATCH_SQL).
_NEIGHBOURS = """EXISTS (
    SELECT 1 FROM listening_events
     WHERE user_id = %(user)s
       AND played_at BETWEEN %(reach_first)s AND %(reach_last)s
       AND (played_at BETWEEN %(first)s AND %(last)s OR origin <> ALL (%(origins)s::text[])))"""
_NEIGHBOURS_SQL = f"SELECT {_NEIGHBOURS}"
# A small batch's checks after its catalog statements: whether they moved statistics (only full API
# objects can change an existing track's album or credits; mostly they do not), and _NEIGHBOURS.
# Not prepared: a generic plan of listening_events would take every monthly partition, where the
# plan of these timestamps takes one or two.
_CHECKS_SQL = f"""
SELECT EXISTS (SELECT 1 FROM tmp_album_moves) OR EXISTS (SELECT 1 FROM tmp_credit_moves), {_NEIGHBOURS}"""
# After staging a batch that is not small: temporary tables have no statistics until analysed, and
# the plans of the statements that follow depend on them; with it, whether stored plays lie near.
_STAGED_SQL = f"""
ANALYZE tmp_artists, tmp_albums, tmp_album_artists, tmp_tracks, tmp_track_artists, tmp_plays;
{_NEIGHBOURS_SQL}
"""


def _span(user_id: int, first: datetime, last: datetime, origins: set[str]) -> dict[str, Any]:
    """The parameters of _NEIGHBOURS and of the statements that dedupe and merge plays from
    ``first`` to ``last``: every stored play they can meet lies within MERGE_REACH of that span, and
    saying so with plain timestamps (no arithmetic in SQL) lets the planner leave out every other
    month's partition at once."""
    return {
        "user": user_id,
        "first": first,
        "last": last,
        "reach_first": first - MERGE_REACH,
        "reach_last": last + MERGE_REACH,
        "origins": sorted(origins),
    }


_MATCH_SQL = (
    _IDENTITY_SQL
    + """;
UPDATE tmp_plays p SET track_id = t.id, alt_ids = t.alt_ids,
       ms_played = CASE WHEN p.origin = 'api' THEN COALESCE(x.duration_ms, 0) ELSE p.ms_played END
  FROM tmp_tracks t JOIN tracks x ON x.id = t.id
 WHERE t.tk = p.tk;

-- The same key twice in one batch: the first counts, the others are duplicates.
UPDATE tmp_plays p SET action = 'duplicate' FROM (
    SELECT seq, row_number() OVER (PARTITION BY track_id, played_at ORDER BY seq) AS n FROM tmp_plays
) d WHERE d.seq = p.seq AND d.n > 1;

-- A record stored before, under another identity of its track: a duplicate.
UPDATE tmp_plays p SET action = 'duplicate'
 WHERE p.action IS NULL AND cardinality(p.alt_ids) > 1 AND EXISTS (
       SELECT 1 FROM listening_events e WHERE e.user_id = %(user)s AND e.track_id = ANY (p.alt_ids)
          AND e.played_at BETWEEN %(reach_first)s AND %(reach_last)s
          AND e.played_at = p.played_at AND e.origin = p.origin);

-- Another origin's record of the same play: same track, within 30 s (an account-data record, of
-- minute precision, stands for its whole minute: see play_distance). A stored play takes one record
-- of each other origin:
-- its <origin>_twin_at slot is free (the record claims it), or holds this very record's time (a
-- repeat: duplicate); a slot taken by another record is passed over. Closest first.
WITH cand AS (
    SELECT p.seq, p.origin, p.played_at, e.track_id, e.played_at AS target, e.origin AS e_origin,
           e.is_estimated,
           CASE p.origin WHEN 'api' THEN e.api_twin_at WHEN 'extended' THEN e.extended_twin_at
                ELSE e.account_twin_at END AS slot,
           LEAST(play_distance(e.played_at, e.origin, p.played_at, p.origin),
                 play_distance(e.extended_twin_at, 'extended', p.played_at, p.origin)) AS dist
      FROM tmp_plays p
     CROSS JOIN LATERAL (
           SELECT * FROM listening_events e
            WHERE e.user_id = %(user)s AND e.track_id = ANY (p.alt_ids)
              AND e.played_at BETWEEN %(reach_first)s AND %(reach_last)s
              AND e.played_at BETWEEN p.played_at - interval '90 seconds'
                                  AND p.played_at + interval '90 seconds'
              AND e.origin <> p.origin
           OFFSET 0) e  -- a fence: one index probe per record, whatever the statistics say
     WHERE p.action IS NULL
), eligible AS (
    SELECT * FROM cand
     WHERE (slot IS NULL OR slot = played_at)
       AND dist <= 30
), best AS (
    SELECT DISTINCT ON (seq) * FROM eligible ORDER BY seq, (slot IS NOT NULL) DESC, dist, target
), claimed AS (
    SELECT DISTINCT ON (track_id, target) * FROM best
     ORDER BY track_id, target, (slot IS NOT NULL) DESC, dist, seq
)
UPDATE tmp_plays p SET target = c.target, target_track = c.track_id,
       action = CASE WHEN c.slot IS NOT NULL THEN 'duplicate'
                     WHEN c.e_origin = 'api' AND c.is_estimated AND p.origin <> 'api' THEN 'merge'
                     ELSE 'claim' END
  FROM claimed c WHERE c.seq = p.seq;
"""
)


def _write_events(
    ex: _Exec,
    import_id: uuid.UUID | None,
    span: dict[str, Any],
    *,
    neighbours: bool = True,
) -> IngestResult:
    """Dedupe, merge and insert the plays of tmp_plays, which lie within ``span`` (see :func:`_span`).
    ``neighbours=False``: no stored play lies within reach of the span (_NEIGHBOURS), so there is
    nothing to match, and only a batch's own repeats are duplicates."""
    params = {"user": span["user"], "reach_first": span["reach_first"], "reach_last": span["reach_last"]}
    if not neighbours:
        return _insert_events(ex, import_id, params, matched=False)
    ex.script(_MATCH_SQL, params)
    # Merges: the statistics move by the difference between the real and the estimated figure. An
    # import keeps the rows it changes as they were (import_merges), for a failure to put back.
    ex(
        """
        WITH old AS (
            SELECT e.track_id, e.played_at, e.ms_played, e.is_estimated, e.api_twin_at,
                   e.extended_twin_at, e.account_twin_at FROM listening_events e
              JOIN tmp_plays p ON p.action IN ('merge', 'claim') AND e.user_id = %(user)s
               AND e.played_at BETWEEN %(reach_first)s AND %(reach_last)s
               AND e.track_id = p.target_track AND e.played_at = p.target
        ), changed AS (
            UPDATE listening_events e SET
                   api_twin_at = CASE WHEN p.origin = 'api' THEN p.played_at ELSE e.api_twin_at END,
                   extended_twin_at = CASE WHEN p.origin = 'extended' THEN p.played_at
                                           ELSE e.extended_twin_at END,
                   account_twin_at = CASE WHEN p.origin = 'account' THEN p.played_at
                                          ELSE e.account_twin_at END,
                   ms_played = CASE WHEN p.action = 'merge' THEN p.ms_played ELSE e.ms_played END,
                   is_estimated = CASE WHEN p.action = 'merge' THEN false ELSE e.is_estimated END
              FROM tmp_plays p
             WHERE p.action IN ('merge', 'claim') AND e.user_id = %(user)s
               AND e.played_at BETWEEN %(reach_first)s AND %(reach_last)s
               AND e.track_id = p.target_track AND e.played_at = p.target
            RETURNING e.track_id, e.played_at, e.ms_played
        ), kept AS (
            INSERT INTO import_merges (import_id, user_id, track_id, played_at, ms_played, is_estimated,
                                       api_twin_at, extended_twin_at, account_twin_at)
            SELECT %(import_id)s, %(user)s, o.track_id, o.played_at, o.ms_played, o.is_estimated,
                   o.api_twin_at, o.extended_twin_at, o.account_twin_at
              FROM old o WHERE %(import_id)s::uuid IS NOT NULL
            ON CONFLICT DO NOTHING
        )
        INSERT INTO tmp_delta (track_id, played_at, plays, ms)
        SELECT c.track_id, c.played_at, 0, c.ms_played - old.ms_played
          FROM changed c JOIN old USING (track_id, played_at)
         WHERE c.ms_played <> old.ms_played
        """,
        {**params, "import_id": import_id},
    )
    return _insert_events(ex, import_id, params, matched=True)


# The plays to insert: those of tmp_plays that matching left unmarked (not a duplicate, merged or
# claimed); when nothing was matched, every play with its track, the first of a batch's repeats
# first (those after it are then duplicates).
_MATCHED_PLAYS = """
SELECT %(user)s, track_id, played_at, ms_played, origin = 'api', origin, %(import_id)s
  FROM tmp_plays WHERE action IS NULL
 ORDER BY track_id, played_at"""
_UNMATCHED_PLAYS = """
SELECT %(user)s, t.id, p.played_at,
       CASE WHEN p.origin = 'api' THEN COALESCE(x.duration_ms, 0) ELSE p.ms_played END,
       p.origin = 'api', p.origin, %(import_id)s
  FROM tmp_plays p JOIN tmp_tracks t ON t.tk = p.tk JOIN tracks x ON x.id = t.id
 ORDER BY t.id, p.played_at, p.seq"""


def _insert_sql(source: str) -> str:
    return f"""
WITH added AS (
    INSERT INTO listening_events (user_id, track_id, played_at, ms_played, is_estimated, origin, import_id)
    {source}
    ON CONFLICT (user_id, played_at, track_id) DO NOTHING
    RETURNING track_id, played_at, ms_played
), delta AS (
    INSERT INTO tmp_delta (track_id, played_at, plays, ms)
    SELECT track_id, played_at, 1, ms_played FROM added
    RETURNING 1
)
SELECT (SELECT count(*) FROM delta),
       (SELECT count(*) FROM tmp_plays WHERE action = 'merge'),
       (SELECT count(*) FROM tmp_plays)"""


def _insert_events(
    ex: _Exec, import_id: uuid.UUID | None, params: dict[str, Any], *, matched: bool
) -> IngestResult:
    """Insert the plays of tmp_plays (``matched``: as _MATCH_SQL left them); a conflict on the
    unique key means the play is already stored: a duplicate."""
    source = _MATCHED_PLAYS if matched else _UNMATCHED_PLAYS
    return _counts(ex(_insert_sql(source), {**params, "import_id": import_id}).fetchone())


def _counts(row: tuple[Any, ...] | None) -> IngestResult:
    """What the insert of events tells: (added, merged, plays of the batch)."""
    assert row is not None
    added, merged, total = int(row[0]), int(row[1]), int(row[2])
    return IngestResult(added=added, merged=merged, duplicates=total - added - merged)


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------
def _add_rows(name: str, table: str, keys: tuple[str, ...], source: str, *, counted: bool = False) -> str:
    """Two data-modifying CTEs adding ``source`` (columns g, bucket, <keys>, plays, ms, new) to a
    statistics table: rows of months the user had no statistics for are plain inserts, the rest
    are added to what is stored. ``counted``: both return ``grain, inserted`` (whether the row is
    new), for ``stat_counts``."""
    key = "".join(f", {k}" for k in keys)
    cols = f"user_id, grain, bucket{key}, plays, ms_played"
    order = ", ".join(str(i) for i in range(2, 4 + len(keys)))
    select = f"SELECT %(user)s, g, bucket{key}, plays, ms FROM {source}"
    new = " RETURNING grain, true AS inserted" if counted else ""
    old = " RETURNING grain, xmax = 0 AS inserted" if counted else ""
    return f"""
{name}_new AS (
    INSERT INTO {table} ({cols}) {select} WHERE new ORDER BY {order}{new}
), {name}_old AS (
    INSERT INTO {table} ({cols}) {select} WHERE NOT new ORDER BY {order}
    ON CONFLICT (user_id, grain, bucket{key}) DO UPDATE
       SET plays = {table}.plays + EXCLUDED.plays, ms_played = {table}.ms_played + EXCLUDED.ms_played{old}
)"""


def _counted(name: str, column: str) -> str:
    """The rows the CTEs of ``_add_rows(name, counted=True)`` added, one per row, for ``column``."""
    cols = ", ".join("1" if c == column else "0" for c in ("tracks", "artists", "albums"))
    return f"""SELECT grain, {cols} FROM {name}_new
               UNION ALL SELECT grain, {cols} FROM {name}_old WHERE inserted"""


# Rows new to the user's all-time and recent statistics are counted in stat_counts.
_COUNT_ROWS = f"""
cnt AS (
    INSERT INTO stat_counts (user_id, grain, tracks, artists, albums)
    SELECT %(user)s, grain, sum(t), sum(a), sum(b) FROM (
        {_counted("t0", "tracks")} UNION ALL {_counted("a", "artists")} UNION ALL {_counted("b", "albums")}
    ) x (grain, t, a, b)
    GROUP BY grain
    ON CONFLICT (user_id, grain) DO UPDATE
       SET tracks = stat_counts.tracks + EXCLUDED.tracks, artists = stat_counts.artists + EXCLUDED.artists,
           albums = stat_counts.albums + EXCLUDED.albums
)"""


# A track's months of tmp_delta, flagged new where the user had no statistics for the month.
_TRACK_MONTHS = """(SELECT 1 AS g, bucket, track_id, plays, ms, bucket IN (SELECT bucket FROM fresh) AS new
                     FROM m) tm"""

# The statistics of the plays in tmp_delta, in the user's zone. A month without a row in stat_user
# (grain 1) has no statistics in any table (every statement that writes statistics writes that
# row too), so its rows are inserted without looking for a conflict: a first import's months are.
_DELTA_SQL = f"""
WITH d AS MATERIALIZED (
    SELECT d.track_id, d.plays, d.ms, (d.played_at AT TIME ZONE u.timezone) AS local,
           d.played_at >= u.recent_floor AS recent
      FROM tmp_delta d CROSS JOIN (SELECT timezone, recent_floor FROM users WHERE id = %(user)s) u
), m AS MATERIALIZED (
    SELECT track_id, date_trunc('month', local)::date AS bucket, sum(plays) AS plays, sum(ms) AS ms
      FROM d GROUP BY 1, 2
), fresh AS MATERIALIZED (
    SELECT DISTINCT bucket FROM m
    EXCEPT SELECT bucket FROM stat_user WHERE user_id = %(user)s AND grain = 1
), t0 AS MATERIALIZED (
    -- all time (grain 0) and since the recent floor (grain 3)
    SELECT 0 AS g, DATE '1970-01-01' AS bucket, track_id, sum(plays) AS plays, sum(ms) AS ms, false AS new
      FROM m GROUP BY track_id
    UNION ALL
    SELECT 3, DATE '1970-01-01', track_id, sum(plays), sum(ms), false FROM d WHERE recent GROUP BY track_id
), ar AS MATERIALIZED (
    SELECT t0.g, DATE '1970-01-01' AS bucket, ta.artist_id, sum(plays) AS plays, sum(ms) AS ms,
           false AS new
      FROM t0 JOIN track_artists ta ON ta.track_id = t0.track_id
     GROUP BY 1, 3
), al AS MATERIALIZED (
    SELECT t0.g, DATE '1970-01-01' AS bucket, x.album_id, sum(plays) AS plays, sum(ms) AS ms,
           false AS new
      FROM t0 JOIN tracks x ON x.id = t0.track_id
     WHERE x.album_id IS NOT NULL
     GROUP BY 1, 3
), dh AS MATERIALIZED (
    SELECT local::date AS day, date_part('hour', local)::smallint AS hour, sum(plays) AS plays,
           sum(ms) AS ms
      FROM d GROUP BY 1, 2
), us AS MATERIALIZED (
    SELECT x.g, x.bucket, sum(x.plays) AS plays, sum(x.ms) AS ms,
           x.g > 0 AND bool_and(f.bucket IS NOT NULL) AS new
      FROM (SELECT 2 AS g, day AS bucket, plays, ms, date_trunc('month', day)::date AS month FROM dh
            UNION ALL SELECT 1, date_trunc('month', day)::date, plays, ms, date_trunc('month', day)::date
              FROM dh
            UNION ALL SELECT 0, DATE '1970-01-01', plays, ms, NULL FROM dh) x
      LEFT JOIN fresh f ON f.bucket = x.month
     GROUP BY 1, 2
), hm AS MATERIALIZED (
    SELECT date_trunc('month', day)::date AS bucket, extract(isodow FROM day)::smallint AS weekday, hour,
           sum(plays) AS plays, sum(ms) AS ms
      FROM dh GROUP BY 1, 2, 3
), hr AS MATERIALIZED (
    SELECT 2 AS g, day AS bucket, extract(isodow FROM day)::smallint AS weekday, hour, plays, ms,
           date_trunc('month', day)::date IN (SELECT bucket FROM fresh) AS new
      FROM dh
    UNION ALL
    SELECT 1, hm.bucket, weekday, hour, plays, ms, f.bucket IS NOT NULL
      FROM hm LEFT JOIN fresh f ON f.bucket = hm.bucket
    UNION ALL
    SELECT 0, DATE '1970-01-01', weekday, hour, sum(plays), sum(ms), false FROM hm GROUP BY 3, 4
),{_add_rows("t", "stat_track", ("track_id",), _TRACK_MONTHS)},
{_add_rows("t0", "stat_track", ("track_id",), "t0", counted=True)},
{_add_rows("a", "stat_artist", ("artist_id",), "ar", counted=True)},
{_add_rows("b", "stat_album", ("album_id",), "al", counted=True)},{_add_rows("u", "stat_user", (), "us")},
{_add_rows("h", "stat_hour", ("weekday", "hour"), "hr")},{_COUNT_ROWS}
SELECT 1
"""


def _apply_deltas(ex: _Exec, user_id: int) -> None:
    """Add the statistics of tmp_delta."""
    ex(_DELTA_SQL, {"user": user_id})


_GAPS_SQL = """
INSERT INTO catalog_gaps (kind, entity_id, reason)
SELECT 'track', x.id, CASE WHEN x.spotify_id IS NULL THEN 'name_only'
                           WHEN x.duration_ms IS NULL THEN 'missing_duration'
                           ELSE 'missing_album' END
  FROM tmp_tracks t JOIN tracks x ON x.id = t.id
 WHERE x.spotify_id IS NOT NULL AND (x.duration_ms IS NULL OR x.album_id IS NULL)
UNION ALL
SELECT 'artist', a.id, CASE WHEN a.spotify_id IS NULL THEN 'provisional' ELSE 'missing_image' END
  FROM tmp_artists t JOIN artists a ON a.id = t.id
 WHERE a.spotify_id IS NULL OR a.image_url IS NULL
UNION ALL
SELECT 'album', a.id, 'provisional' FROM tmp_albums t JOIN albums a ON a.id = t.id
 WHERE a.spotify_id IS NULL
ORDER BY 1, 2
ON CONFLICT (kind, entity_id) DO NOTHING
"""


def _record_gaps(ex: _Exec) -> int:
    """Record the gaps of the batch's catalog rows; returns how many are new."""
    return ex(_GAPS_SQL).rowcount


def apply_track_metadata(conn: psycopg.Connection[Any], tracks: Sequence[TrackRef]) -> None:
    """Full track objects from the Web API (enrichment, top lists) fill and correct the catalog;
    album and credit changes move every user's statistics, provisional rows under the same name
    are merged. No play is recorded."""
    full = [t for t in tracks if t.spotify_id]
    if not full:
        return
    staged = _stage([Play(t, datetime(1970, 1, 1).astimezone(), "api", None) for t in full])
    staged.plays.clear()
    with _transaction(conn, None) as ex:
        ex("SELECT pg_advisory_xact_lock(%s)", (CATALOG_LOCK,))
        _copy_catalog(ex, staged)
        staged.has_full = True
        _upsert_catalog(ex, staged)
        _record_gaps(ex)
