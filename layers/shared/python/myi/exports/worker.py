"""The export worker: from an export row to ``my_spotify_data.zip`` in the bucket, in constant
memory, resumable across invocations.

1. An SQS message names an export (``{"export_id": ...}``: sent by ``POST /me/exports``, or by the
   worker itself as a continuation). One worker runs an export at a time (a session advisory lock);
   a message for an export another worker holds, or that has ended, is dropped.
2. The plays are read oldest first (``played_at``, then track id) through a server-side cursor
   (``FETCH`` of ``CHUNK`` rows at a time) in one read-only repeatable-read transaction, so an
   invocation writes one consistent snapshot. A thread of its own reads ahead (``_Reader``), so the
   database's time overlaps the writing. The catalog (names, URI, credits) comes per track, looked up
   for the tracks of each chunk not seen yet, and at most ``TRACK_CACHE`` tracks are kept (when full,
   those of the current chunk stay: the tracks a listener plays most).
3. The zip is written forward into an S3 multipart upload (:mod:`myi.exports.writer`). Memory holds
   a few chunks of plays, one file of the download being deflated (on a thread of its own; at most
   ``MAX_BYTES`` of JSON, far less once deflated) and two upload parts, whatever the length of the
   history.
4. A worker about to run out of time (``time_margin_ms`` left) stops at the next point it can resume
   from: after an extended-history file (every ``MAX_RECORDS`` plays at most) or, for CSV, after any
   chunk (the open member's deflate stream is full-flushed, so a new compressor carries it on). It
   saves the parts uploaded, the zip's members, the bytes not yet in a part and the last play
   written (the keyset the next invocation reads after), sets the export ``queued`` and sends its own
   continuation. A worker that dies instead resumes from the last saved checkpoint when the message
   comes back (parts it uploaded after it are uploaded again under the same numbers, and only the
   parts the checkpoint lists make the file); one that had not saved any starts again, aborting the
   upload it had begun.
5. Any other error is retried by redelivery while the queue has deliveries left (``MAX_ATTEMPTS``,
   the export queue's ``max_receives``); on the last one the export fails: its multipart upload is
   aborted and its object deleted, so a failure leaves no file, whole or partial. An export failed
   meanwhile (stuck, by the sweep) or gone (its user deleted) is noticed at the next heartbeat, and
   its upload aborted likewise. The bucket's lifecycle rule aborts any upload that escaped all this.

Domain code only: no ``myi.api``, no Powertools event handler.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from myi.exports import jobs
from myi.exports.formats import (
    KEY_FORMAT,
    Track,
)
from myi.exports.jobs import ExportConfig, abort_upload
from myi.exports.layout import Csv, Extended, Layout, Tracks
from myi.exports.writer import MultipartSink, ZipWriter
from myi.observability import logger

EXPORT_LOCK_CLASS = 7_002  # pg_try_advisory_lock(class, export) namespace (imports use 7_001)
MAX_ATTEMPTS = 3  # deliveries of a message before the DLQ: the export queue's max_receives
CHUNK = 5_000  # plays per FETCH of the server-side cursor
HEARTBEAT_S = 5.0  # how often a running export says it is alive (and learns whether it still should run)
OUR_FAULT = "The export failed on our side; start it again."

_EVENTS_SQL = f"""
SELECT to_char(played_at AT TIME ZONE 'UTC', '{KEY_FORMAT}'), ms_played, is_estimated, origin, track_id
  FROM listening_events
 WHERE user_id = %(user)s {{after}}
 ORDER BY played_at, track_id
"""
_AFTER = "AND played_at >= %(at)s AND (played_at, track_id) > (%(at)s, %(track)s)"


@dataclass
class ExportDeps:
    """``conn`` reads the plays (a transaction per invocation); ``state_conn``, in autocommit, holds
    the export's lock and writes its row while ``conn``'s transaction is open. Both may be the same
    connection only where nothing runs concurrently (never: the heartbeat writes mid-read)."""

    conn: psycopg.Connection[Any]
    state_conn: psycopg.Connection[Any]
    s3: Any
    sqs: Any
    config: ExportConfig = field(default_factory=ExportConfig)
    remaining_ms: Callable[[], int] = field(default=lambda: 900_000)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def handle_message(deps: ExportDeps, body: str, attempt: int = 1) -> None:
    """One SQS message (``{"export_id": ...}``); ``attempt``: its delivery (``ApproximateReceiveCount``)."""
    try:
        message = json.loads(body)
    except ValueError:
        logger.warning("export queue message is not JSON; dropped")
        return
    export_id = _uuid(message.get("export_id")) if isinstance(message, dict) else None
    if export_id is None:
        logger.warning("export queue message names no export; dropped")
        return
    run(deps, export_id, attempt=attempt)


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def run(deps: ExportDeps, export_id: uuid.UUID, *, attempt: int = 1) -> None:
    """Run (or resume) one export unless another worker holds it. An unexpected exception is raised
    again (the message comes back) until the last ``attempt``, which fails the export."""
    conn = deps.state_conn
    key = export_id.int & 0x7FFFFFFF
    locked = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (EXPORT_LOCK_CLASS, key)).fetchone()
    if not locked or not locked[0]:
        logger.info("export already running elsewhere", extra={"export_id": str(export_id)})
        return
    try:
        _run_locked(deps, export_id)
    except Exception:
        if attempt < MAX_ATTEMPTS:
            raise
        logger.exception(
            "export failed unexpectedly", extra={"export_id": str(export_id), "attempt": attempt}
        )
        job = jobs.by_id(conn, export_id)
        if job is not None and job["status"] in ("queued", "running"):
            _fail(deps, job, OUR_FAULT)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (EXPORT_LOCK_CLASS, key))


@dataclass
class _Progress:
    plays: int = 0
    after: list[Any] | None = None  # [key of the last play written, its track id]


def _run_locked(deps: ExportDeps, export_id: uuid.UUID) -> None:
    cfg, s3, state = deps.config, deps.s3, deps.state_conn
    job = jobs.by_id(state, export_id)
    if job is None or job["status"] not in ("queued", "running"):
        return
    log = {"export_id": str(export_id), "user_id": job["user_id"]}
    now = deps.clock()
    started = state.execute(
        "UPDATE exports SET status = 'running', started_at = COALESCE(started_at, %s), updated_at = %s "
        "WHERE id = %s AND status IN ('queued', 'running')",
        (now, now, export_id),
    ).rowcount
    if not started:
        return
    checkpoint: dict[str, Any] | None = job["checkpoint"]
    pending = bytes(job["pending"] or b"")
    if checkpoint is None:
        if job["upload_id"]:  # an earlier attempt began, and saved nothing to resume from
            abort_upload(s3, cfg.bucket, job["object_key"], job["upload_id"])
        upload_id = s3.create_multipart_upload(
            Bucket=cfg.bucket,
            Key=job["object_key"],
            ContentType="application/zip",
            ContentDisposition='attachment; filename="my_spotify_data.zip"',
        )["UploadId"]
        state.execute(
            "UPDATE exports SET upload_id = %s, plays = 0, updated_at = %s WHERE id = %s",
            (upload_id, deps.clock(), export_id),
        )
        job["upload_id"] = upload_id
        checkpoint = {"parts": [], "offset": 0, "zip": None, "layout": {}, "after": None, "plays": 0}
        pending = b""
        logger.info("export started", extra={**log, "format": job["format"]})
    else:
        logger.info("export resumed", extra={**log, "plays": checkpoint["plays"]})
    sink = MultipartSink(
        s3,
        cfg.bucket,
        job["object_key"],
        job["upload_id"],
        part_size=cfg.part_size,
        parts=checkpoint["parts"],
        offset=int(checkpoint["offset"]),
        pending=pending,
    )
    layout: Layout | None = None
    try:
        zw = ZipWriter(
            sink,
            modified=job["created_at"].astimezone(UTC),
            level=cfg.compress_level,
            state=checkpoint["zip"],
        )
        if job["format"] == "csv":
            layout = Csv(zw, checkpoint["layout"])
        else:
            layout = Extended(zw, checkpoint["layout"] or {"zone": _zone_name(state, job["user_id"])})
        progress = _Progress(int(checkpoint["plays"]), checkpoint["after"])
        outcome = _stream(deps, job, layout, progress)
        if outcome == "gone":
            abort_upload(s3, cfg.bucket, job["object_key"], job["upload_id"])
            logger.info("export stopped: it was failed or its user deleted meanwhile", extra=log)
        elif outcome == "paused":
            _continue_later(deps, job, layout, zw, sink, progress)
        else:
            _complete(deps, job, layout, zw, sink, progress)
    finally:
        if layout is not None:
            layout.close()
        sink.close()


def _zone_name(conn: psycopg.Connection[Any], user_id: int) -> str:
    row = conn.execute("SELECT timezone FROM users WHERE id = %s", (user_id,)).fetchone()
    return str(row[0]) if row else "UTC"


def _stream(deps: ExportDeps, job: dict[str, Any], layout: Layout, progress: _Progress) -> str:
    """Write plays after ``progress.after`` until the end ("done"), until time runs short at a point
    the export can resume from ("paused"), or until the export is no longer running ("gone")."""
    margin = deps.config.time_margin_ms
    beat = time.monotonic()
    with _Reader(deps.conn, job, progress.after) as reader:
        for rows, known in reader:
            start = 0
            while (stop := layout.add_rows(rows, known, start)) >= 0:
                progress.plays += stop + 1 - start
                start = stop + 1
                if deps.remaining_ms() < margin:
                    progress.after = [rows[stop][0], rows[stop][4]]
                    return "paused"
            progress.plays += len(rows) - start
            progress.after = [rows[-1][0], rows[-1][4]]
            layout.chunk_done()
            if layout.resumable_anywhere and deps.remaining_ms() < margin:
                return "paused"
            if time.monotonic() - beat >= HEARTBEAT_S:
                beat = time.monotonic()
                if not _heartbeat(deps, job, progress.plays):
                    return "gone"
    return "done"


_Chunk = tuple[list[tuple[Any, ...]], dict[int, Track]]


class _Reader:
    """The plays after ``after``, oldest first, in chunks of ``CHUNK`` with the tracks they name,
    read ahead on a thread of its own (``READ_AHEAD`` chunks at most) so that the database's time
    and the round trips overlap the writing. The thread alone uses ``conn``: one read-only
    repeatable-read transaction, a server-side cursor, the catalog lookups."""

    READ_AHEAD = 2

    def __init__(self, conn: psycopg.Connection[Any], job: dict[str, Any], after: list[Any] | None) -> None:
        self._conn, self._job = conn, job
        self._params: dict[str, Any] = {"user": job["user_id"]}
        self._after = ""
        if after:
            self._after = _AFTER
            self._params["at"] = datetime.fromisoformat(after[0])
            self._params["track"] = int(after[1])
        self._chunks: queue.Queue[_Chunk | BaseException | None] = queue.Queue(self.READ_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="myi-export-reader", daemon=True)

    def __enter__(self) -> _Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():  # let it see the stop even when it waits to hand over a chunk
            with contextlib.suppress(queue.Empty):
                self._chunks.get(timeout=0.05)
        self._thread.join()

    def __iter__(self) -> Iterator[_Chunk]:
        while True:
            item = self._chunks.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _hand_over(self, item: _Chunk | BaseException | None) -> bool:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._chunks.put(item, timeout=0.05)
                return True
        return False

    def _read(self) -> None:
        conn = self._conn
        tracks = Tracks(conn)
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                with conn.cursor(name=f"myi_export_{self._job['id'].hex}") as cur:
                    cur.itersize = CHUNK
                    cur.execute(_EVENTS_SQL.format(after=self._after), self._params)
                    while not self._stop.is_set():
                        rows = cur.fetchmany(CHUNK)
                        if not rows:
                            break
                        if not self._hand_over((rows, tracks.cover({row[4] for row in rows}))):
                            return
            self._hand_over(None)
        except BaseException as exc:  # the writer raises it
            self._hand_over(exc)


def _heartbeat(deps: ExportDeps, job: dict[str, Any], plays: int) -> bool:
    """The export's progress; False when it is no longer running (failed meanwhile, or gone)."""
    changed = deps.state_conn.execute(
        "UPDATE exports SET plays = %s, updated_at = %s WHERE id = %s AND status = 'running'",
        (plays, deps.clock(), job["id"]),
    ).rowcount
    return bool(changed)


def _continue_later(
    deps: ExportDeps,
    job: dict[str, Any],
    layout: Layout,
    zw: ZipWriter,
    sink: MultipartSink,
    progress: _Progress,
) -> None:
    """Save where the export stands and hand it to a new invocation (``queued`` until then)."""
    layout_state = layout.suspend()
    zip_state = zw.suspend()
    parts = sink.settle()
    checkpoint = {
        "parts": parts,
        "offset": sink.tell(),
        "zip": zip_state,
        "layout": layout_state,
        "after": progress.after,
        "plays": progress.plays,
    }
    saved = deps.state_conn.execute(
        "UPDATE exports SET checkpoint = %s, pending = %s, plays = %s, status = 'queued', updated_at = %s "
        "WHERE id = %s AND status = 'running'",
        (json.dumps(checkpoint), sink.pending, progress.plays, deps.clock(), job["id"]),
    ).rowcount
    if not saved:
        abort_upload(deps.s3, deps.config.bucket, job["object_key"], job["upload_id"])
        return
    deps.sqs.send_message(
        QueueUrl=deps.config.require_queue(), MessageBody=json.dumps({"export_id": str(job["id"])})
    )
    logger.info(
        "export continues in a new invocation",
        extra={"export_id": str(job["id"]), "plays": progress.plays, "bytes": sink.tell()},
    )


def _complete(
    deps: ExportDeps,
    job: dict[str, Any],
    layout: Layout,
    zw: ZipWriter,
    sink: MultipartSink,
    progress: _Progress,
) -> None:
    cfg = deps.config
    layout.finish(deps.clock())
    size = zw.close()
    sink.complete()
    now = deps.clock()
    done = deps.state_conn.execute(
        """
        UPDATE exports SET status = 'completed', finished_at = %(now)s, updated_at = %(now)s,
               expires_at = %(expires)s, plays = %(plays)s, size_bytes = %(size)s, checkpoint = NULL,
               pending = NULL, upload_id = NULL, error = NULL
         WHERE id = %(id)s AND status = 'running'
        """,
        {
            "now": now,
            "expires": now + timedelta(days=cfg.ttl_days),
            "plays": progress.plays,
            "size": size,
            "id": job["id"],
        },
    ).rowcount
    if not done:  # failed meanwhile, or its user is gone: the file must not stay
        deps.s3.delete_object(Bucket=cfg.bucket, Key=job["object_key"])
        logger.info(
            "export written after it was failed or its user deleted; removed",
            extra={"export_id": str(job["id"])},
        )
        return
    logger.info(
        "export completed",
        extra={
            "export_id": str(job["id"]),
            "user_id": job["user_id"],
            "plays": progress.plays,
            "bytes": size,
        },
    )


def _fail(deps: ExportDeps, job: dict[str, Any], error: str) -> None:
    """End an export as failed, leaving no file behind: its upload aborted, its object deleted."""
    cfg = deps.config
    if job["upload_id"]:
        try:
            abort_upload(deps.s3, cfg.bucket, job["object_key"], job["upload_id"])
        except Exception:  # the lifecycle rule aborts it later; the export fails all the same
            logger.exception("could not abort a failed export's upload", extra={"export_id": str(job["id"])})
    try:
        deps.s3.delete_object(Bucket=cfg.bucket, Key=job["object_key"])
    except Exception:
        logger.exception("could not delete a failed export's file", extra={"export_id": str(job["id"])})
    now = deps.clock()
    deps.state_conn.execute(
        "UPDATE exports SET status = 'failed', error = %s, finished_at = %s, updated_at = %s, "
        "checkpoint = NULL, pending = NULL, upload_id = NULL "
        "WHERE id = %s AND status IN ('queued', 'running')",
        (error, now, now, job["id"]),
    )
    logger.warning(
        "export failed", extra={"export_id": str(job["id"]), "user_id": job["user_id"], "error": error}
    )


def sweep(deps: ExportDeps) -> dict[str, int]:
    """Fail exports that stopped making progress for ``stuck_s`` (their worker died on its last
    delivery) and abort their uploads; ``live`` counts the exports still under way afterwards."""
    stuck = jobs.fail_stuck(deps.state_conn, deps.config, now=deps.clock())
    for row in stuck:
        if row["upload_id"]:
            try:
                abort_upload(deps.s3, deps.config.bucket, row["object_key"], row["upload_id"])
            except Exception:
                logger.exception(
                    "could not abort a stuck export's upload", extra={"export_id": str(row["id"])}
                )
    live = deps.state_conn.execute(
        "SELECT count(*) FROM exports WHERE status IN ('queued', 'running')"
    ).fetchone()
    return {"stuck_failed": len(stuck), "live": int(live[0]) if live else 0}
