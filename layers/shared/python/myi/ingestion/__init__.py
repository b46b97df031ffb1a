"""The ingestion core: every play stored once, statistics always exact, set-based in bulk.

One entry point, :func:`ingest`, serves the sync worker (50 API plays) and the history import
(batches of thousands of export records; :func:`bulk_ingest` runs many of them in one
transaction). A batch costs a fixed number of SQL statements whatever its size: it is staged into
temporary tables, then the catalog, the events and the statistics are written with
``INSERT .. SELECT .. ON CONFLICT`` and ``UPDATE .. FROM`` statements. Per batch, in one
transaction: locks (:mod:`.locks`), staging (:mod:`.staging`, :mod:`.session`), catalog
(:mod:`.catalog`, :mod:`.merges`), events (:mod:`.events`), statistics and catalog gaps
(:mod:`.statistics`); :mod:`.batch` runs them, :mod:`.bulk` is the import's path.

Partitions: when ``conn`` is in autocommit, :func:`ingest` makes sure the monthly partitions of the
batch's span exist before opening its transaction. A caller that runs ingest inside its own
transaction must call ``myi.partitions.ensure_range`` for the span first, outside it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from myi import partitions
from myi.ingestion.batch import PLANNED, PREPARED, SMALL_BATCH, write_batch
from myi.ingestion.bulk import BULK_BATCH_SIZE, BulkIngest, bulk_ingest
from myi.ingestion.catalog import apply_track_metadata
from myi.ingestion.events import MERGE_REACH, IngestResult
from myi.ingestion.locks import CATALOG_LOCK, USER_LOCK_CLASS
from myi.ingestion.merges import CatalogChanges, merge_album, merge_artist
from myi.ingestion.session import EMPTYING_ROUNDS, transaction
from myi.ingestion.staging import KnownTracks, stage_checked
from myi.ingestion.statistics import count_rows
from myi.plays import Play

__all__ = [
    "BULK_BATCH_SIZE",
    "CATALOG_LOCK",
    "EMPTYING_ROUNDS",
    "MAX_ATTEMPTS",
    "MERGE_REACH",
    "SMALL_BATCH",
    "USER_LOCK_CLASS",
    "BulkIngest",
    "IngestResult",
    "KnownTracks",
    "apply_track_metadata",
    "bulk_ingest",
    "count_rows",
    "ingest",
    "merge_album",
    "merge_artist",
]

MAX_ATTEMPTS = 5
# What a batch is tried again after (the transaction rolled back): a deadlock or serialisation
# failure, and a prepared statement gone (a pooler resetting the session).
_RETRIED = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.InvalidSqlStatementName)


def ingest(
    conn: psycopg.Connection[Any],
    user_id: int,
    plays: Sequence[Play],
    *,
    import_id: uuid.UUID | None = None,
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
    staged = stage_checked(plays)
    callbacks = [on_staged] if on_staged is not None else []

    def fire() -> None:
        while callbacks:
            callbacks.pop()()

    outer = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    if not outer:
        times = [p.played_at for p in plays]
        partitions.ensure_range(conn, min(times), max(times))
    attempts = 1 if outer else MAX_ATTEMPTS
    way = PREPARED if not outer and len(plays) <= SMALL_BATCH else PLANNED
    # The catalog lock is taken shared, and exclusively once the batch finds it needs it (see
    # locks); inside a caller's transaction, a shared lock would be held until it ends: no second try.
    exclusive = staged.has_full and outer
    failures = 0
    while True:
        try:
            way.ready(conn)
            with transaction(conn) as ex:
                counts = write_batch(
                    ex,
                    user_id,
                    staged,
                    way,
                    import_id=import_id,
                    exclusive=exclusive,
                    on_staged=fire,
                    and_then=and_then,
                )
            return counts
        except CatalogChanges:
            exclusive = True  # once: holding the lock exclusively, it is not raised
        except _RETRIED as exc:
            if isinstance(exc, pg_errors.InvalidSqlStatementName):
                way.forget(conn)  # deallocated behind our back: prepared anew on the retry
            failures += 1
            if failures == attempts:
                raise
