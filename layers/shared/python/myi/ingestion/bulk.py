"""Bulk ingestion: many batches of one user's export records in one transaction (an import's apply
phase), the database side on a thread of its own while the caller reads the next batch."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import psycopg

from myi.ingestion.catalog import copy_catalog, upsert_catalog
from myi.ingestion.events import (
    IDENTITY_SQL,
    NEIGHBOURS_SQL,
    PLAY_IDENTITY_SQL,
    IngestResult,
    span,
    write_events,
)
from myi.ingestion.locks import lock
from myi.ingestion.session import TRUNCATE_BATCH_SQL, Exec, transaction
from myi.ingestion.staging import KnownTracks, Staged, is_full, stage, track_key
from myi.ingestion.statistics import apply_deltas, record_gaps
from myi.plays import Play, TrackRef

# Plays per BulkIngest.add call of an import: bounds the Python objects and COPY data held at once.
BULK_BATCH_SIZE = 10_000
# A bulk ingestion queues batches with new tracks until this many new tracks (or QUEUED_PLAYS
# plays) gather, then resolves them all in one catalog pass.
PENDING_TRACKS = 5_000
QUEUED_PLAYS = 100_000

# The statistics of many batches at once: sorts and hashes of that size fit in memory.
BULK_WORK_MEM_SQL = "SET LOCAL work_mem = '64MB'"
RESOLVED_TRACKS_SQL = "SELECT tk, id, alt_ids, artist_key, name_key, is_new FROM tmp_tracks"
COPY_PLAYS_SQL = "COPY tmp_plays (seq, tk, played_at, ms_played, origin, track_id) FROM STDIN"
ANALYZE_PLAYS_SQL = "ANALYZE tmp_plays"
COPY_EVENTS_SQL = (
    "COPY listening_events (track_id, played_at, ms_played, origin, user_id, import_id) "
    "FROM STDIN (FORMAT BINARY)"
)
EVENT_TYPES = ("int8", "timestamptz", "int4", "text", "int8", "uuid")
COPY_DELTA_SQL = "COPY tmp_delta (track_id, played_at, ms) FROM STDIN (FORMAT BINARY)"
DELTA_TYPES = ("int8", "timestamptz", "int8")

# A play on the caller's side: (track id, or the track's key while unresolved; played_at,
# ms_played, origin).
Entry = tuple[Any, datetime, int | None, str]
Resolved = tuple[int, datetime, int | None, str]


class BulkIngest:
    """Many batches of one user's export records in ONE transaction, statistics applied once at
    the end. Use :func:`bulk_ingest`; the caller ensures partitions for the span first. Export
    records only: full API objects belong to :func:`myi.ingestion.ingest`.

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
    - otherwise through the general path of ``ingest`` (dedupe and merge in SQL).

    So the events and counts are exactly those of ``ingest`` called batch by batch.
    """

    def __init__(
        self, ex: Exec, user_id: int, import_id: uuid.UUID | None, known: KnownTracks | None = None
    ) -> None:
        self._ex = ex
        self._user_id = user_id
        self._import_id = import_id
        self._known: KnownTracks = {} if known is None else known
        # The caller's side: batches waiting for a catalog pass, and the unresolved keys with their
        # tracks.
        self._queue: list[list[Entry]] = []
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
        entries: list[Entry] = []
        known, new = self._known, self._new
        for play in plays:
            t = play.track
            if play.played_at.tzinfo is None:
                raise ValueError("played_at must be timezone-aware")
            if t.album is not None and t.album.spotify_id and is_full(t):
                raise ValueError("bulk ingestion takes export records only")
            key = track_key(t)
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
            self._ex(BULK_WORK_MEM_SQL)
            apply_deltas(self._ex, self._user_id)
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
        self._fresh = self._resolve(stage([Play(t, epoch, "extended", 0) for t in tracks]))

    def _forget_fresh(self) -> None:
        self._fresh = set()

    def _write_batch(self, entries: list[Entry]) -> None:
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

    def _resolve(self, staged: Staged) -> set[int]:
        """Catalog rows for the tracks of ``staged``, which join the known tracks. Returns the
        tracks this pass created that share their identity with no other track: no stored play
        can be theirs."""
        ex = self._ex
        ex(TRUNCATE_BATCH_SQL)
        copy_catalog(ex, staged)
        upsert_catalog(ex, staged)  # export records: no album or credit of a stored track changes
        ex(IDENTITY_SQL)
        record_gaps(ex)
        # A track this pass created may be the real track that name-only records of the same artist
        # and name should now resolve to: those keys are looked up again. (A Spotify id's track
        # never changes.)
        by_tk = {row[0]: key for key, row in staged.tracks.items()}
        rows = ex(RESOLVED_TRACKS_SQL).fetchall()
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

    def _write(self, entries: list[Resolved], fresh: set[int]) -> IngestResult:
        """Write resolved plays; ``fresh``: tracks nothing stored can refer to."""
        new = [e for e in entries if e[0] in fresh] if fresh else []
        rest = [e for e in entries if e[0] not in fresh] if fresh else entries
        if not rest:
            return self._copy(entries)
        where = span(self._user_id, min(e[1] for e in rest), max(e[1] for e in rest), {e[3] for e in rest})
        row = self._ex(NEIGHBOURS_SQL, where).fetchone()
        if not (row and row[0]):  # nothing stored can be repeated or matched
            return self._copy(entries)
        ex = self._ex
        ex(TRUNCATE_BATCH_SQL)
        with ex.copy(COPY_PLAYS_SQL) as cp:
            for seq, (track_id, at, ms, origin) in enumerate(rest):
                cp.write_row((seq, -1, at, ms, origin, track_id))
        ex(ANALYZE_PLAYS_SQL)
        ex(PLAY_IDENTITY_SQL)
        counts = write_events(ex, self._import_id, where)
        return counts + self._copy(new) if new else counts

    def _copy(self, entries: list[Resolved]) -> IngestResult:
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
        with ex.copy(COPY_EVENTS_SQL) as cp:
            cp.set_types(EVENT_TYPES)
            tail = (self._user_id, self._import_id)
            for row in rows:
                cp.write_row(row + tail)
        with ex.copy(COPY_DELTA_SQL) as cp:
            cp.set_types(DELTA_TYPES)
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


@contextmanager
def bulk_ingest(
    conn: psycopg.Connection[Any],
    user_id: int,
    *,
    import_id: uuid.UUID | None = None,
    known: KnownTracks | None = None,
) -> Iterator[BulkIngest]:
    """``with bulk_ingest(conn, user) as bulk: bulk.add(batch) ...``: every batch and the statistics
    of all of them commit together when the block ends (or nothing does). ``bulk.finish()`` writes
    the statistics before the block ends, so the caller's own statements come last (the fewer
    statements after them, the shorter their row locks last). ``known``: the tracks an earlier
    transaction of the same import resolved (filled as batches resolve more)."""
    bulk: BulkIngest | None = None
    try:
        with transaction(conn) as ex:
            lock(ex, user_id, exclusive_catalog=False)
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
