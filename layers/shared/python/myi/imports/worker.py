"""The import worker: from an uploaded object to exact statistics, in resumable batches.

1. The S3 notification names a key; the job is found by that exact key (keys carry the owner's
   prefix, so another user's job cannot match). An object that matches no job (its user is gone)
   or arrives for a job that has finished (the presigned form was used again) is deleted unread.
   The worker reads the one version of the object it first saw (``If-Match`` with its ETag on
   every ranged GET, the ETag kept in the checkpoint): a file replaced meanwhile fails the job.
2. The object's real size is checked against ``MAX_UPLOAD_BYTES`` (the POST policy enforces it in
   S3; the emulator does not, so it is checked here too).
3. The export members are found by their first record (not a zip or JSON, or no export inside:
   the job fails at once).
4. One pass normalises every record and ingests the plays in batches of ``IMPORT_BATCH_SIZE``
   records, each one transaction (of ingestion calls of ``BULK_BATCH_SIZE``) that commits together
   with the job's counts, progress and checkpoint (member and record reached). Nothing commits
   before the whole file is known to be sound: a batch that ends before the end of the file first
   reads the rest of it through (once per job), so a bad file (encrypted, a zip bomb, broken JSON,
   an object where a list belongs) fails the job before a single play is committed, and an upload
   of up to ``IMPORT_BATCH_SIZE`` records is read only once. Live progress is written from a
   connection of its own while a batch is read. A worker that dies mid-file leaves the job
   ``running`` with its checkpoint; the redelivered message resumes from it, and a worker about to
   run out of time enqueues a continuation itself. Only one worker runs a job at a time (an
   advisory lock).
5. Any other exception is retried by redelivery while the queue has deliveries left
   (``MAX_ATTEMPTS``, the import queue's ``max_receives`` in ``infra/wiring.py``); on the last one
   the job fails with a message and its plays are taken back out, never left ``running``.
   Failing (:func:`_fail`) also puts back the plays stored before the job that it merged or
   claimed (``import_merges``), so a failed job leaves events and statistics as they were.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

import psycopg

from myi import enrichment
from myi.imports import jobs
from myi.imports.formats import is_export_record, normalise
from myi.imports.reader import (
    BadUpload,
    Member,
    Upload,
    UploadChanged,
    array_records,
    is_export,
    open_s3,
)
from myi.ingestion import BULK_BATCH_SIZE, IngestResult, KnownTracks, bulk_ingest
from myi.observability import logger
from myi.plays import Play
from myi.settings import Settings
from myi.statistics import maintenance
from myi.uploads import UPLOAD_PREFIX

IMPORT_LOCK_CLASS = 7_001  # pg_try_advisory_lock(class, job) namespaces
TIME_MARGIN_MS = 60_000  # stop and continue in a new invocation with this much time left
MAX_ATTEMPTS = 3  # deliveries of a message before the DLQ: the import queue's max_receives
OUR_FAULT = "The import failed on our side; upload the file again."
CHANGED = "The file changed while it was being imported; upload it again."


@dataclass
class WorkerDeps:
    settings: Settings
    conn: psycopg.Connection[Any]
    s3: Any
    sqs: Any
    remaining_ms: Callable[[], int] = field(default=lambda: 900_000)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # an autocommit connection of its own for live progress (none: progress moves batch by batch)
    progress_conn: psycopg.Connection[Any] | None = None


@dataclass
class _Totals:
    records: int = 0
    added: int = 0
    merged: int = 0
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def handle_message(deps: WorkerDeps, body: str, attempt: int = 1) -> None:
    """One SQS message: an S3 notification (one or more created objects) or a continuation;
    ``attempt``: its delivery (SQS ``ApproximateReceiveCount``)."""
    try:
        message = json.loads(body)
    except ValueError:
        logger.warning("import queue message is not JSON; dropped")
        return
    if not isinstance(message, dict):
        logger.warning("import queue message is not an object; dropped")
        return
    if message.get("Event") == "s3:TestEvent":
        return
    if "import_id" in message:
        job_id = _uuid(message["import_id"])
        if job_id is not None:
            run(deps, job_id, attempt=attempt)
        return
    for record in message.get("Records") or []:
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        key = unquote_plus(record.get("s3", {}).get("object", {}).get("key", ""))
        job = jobs.by_key(deps.conn, key)
        if job is None:
            logger.warning("an upload matches no import job; refused", extra={"object_key": key})
            _discard(deps, key)
            continue
        run(deps, job["id"], attempt=attempt, uploaded=True)


def _discard(deps: WorkerDeps, key: str) -> None:
    """Delete an upload no job will read (only under the uploads prefix, the bucket's own)."""
    if key.startswith(UPLOAD_PREFIX):
        deps.s3.delete_object(Bucket=deps.settings.import_bucket, Key=key)


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def run(deps: WorkerDeps, job_id: uuid.UUID, *, attempt: int = 1, uploaded: bool = False) -> None:
    """Run (or resume) one job, unless another worker holds it. ``uploaded``: an S3 notification
    brought it (a finished job's new object is then deleted). An unexpected exception is raised
    again (the message comes back) until the last ``attempt``, which fails the job."""
    conn = deps.conn
    key = job_id.int & 0x7FFFFFFF
    locked = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (IMPORT_LOCK_CLASS, key)).fetchone()
    if not locked or not locked[0]:
        logger.info("import already running elsewhere", extra={"import_id": str(job_id)})
        return
    try:
        _run_locked(deps, job_id, uploaded)
    except Exception:
        if attempt < MAX_ATTEMPTS:
            raise
        logger.exception("import failed unexpectedly", extra={"import_id": str(job_id), "attempt": attempt})
        job = jobs.by_id(conn, job_id)
        if job is not None and job["status"] not in ("completed", "failed"):
            _fail(deps, job, OUR_FAULT)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (IMPORT_LOCK_CLASS, key))


def _run_locked(deps: WorkerDeps, job_id: uuid.UUID, uploaded: bool = False) -> None:
    s, conn = deps.settings, deps.conn
    job = jobs.by_id(conn, job_id)
    if job is None:
        return
    if job["status"] in ("completed", "failed"):
        if uploaded:
            logger.warning("an upload came for a finished import; deleted", extra={"import_id": str(job_id)})
            _discard(deps, job["object_key"])
        return
    log = {"import_id": str(job_id), "user_id": job["user_id"]}
    try:
        head = deps.s3.head_object(Bucket=s.import_bucket, Key=job["object_key"])
    except deps.s3.exceptions.ClientError:
        _fail(deps, job, "The uploaded file is gone; upload it again.")
        return
    size = int(head["ContentLength"])
    etag = str(head["ETag"])
    if job["checkpoint"] and job["checkpoint"].get("etag", etag) != etag:
        _fail(deps, job, CHANGED)
        return
    if size > s.max_upload_bytes:
        _fail(deps, job, f"The file is larger than the {s.max_upload_bytes} bytes an import may have.")
        return
    if job["status"] != "running":
        conn.execute(
            "UPDATE import_jobs SET status = 'running', started_at = COALESCE(started_at, %s), "
            "updated_at = %s, bytes_total = %s WHERE id = %s AND user_id = %s",
            (deps.clock(), deps.clock(), size, job_id, job["user_id"]),
        )
    if job["checkpoint"]:
        logger.info("import resumed", extra={**log, "checkpoint": job["checkpoint"]})
    else:
        logger.info("import started", extra={**log, "bytes": size})

    def open_upload() -> Upload:
        """The upload, opened anew: a stream, position and decompression budget of its own."""
        stream, _ = open_s3(deps.s3, s.import_bucket, job["object_key"], size, etag)
        return Upload(
            stream,
            size,
            filename=job["filename"],
            max_uncompressed=s.import_max_uncompressed_bytes,
            max_ratio=s.import_max_ratio,
        )

    try:
        checkpoint = job["checkpoint"]
        if not checkpoint:
            checkpoint = {
                "members": _exports(open_upload()),
                "member": 0,
                "record": 0,
                "sound": False,
                "etag": etag,
            }
            conn.execute(
                "UPDATE import_jobs SET checkpoint = %s, updated_at = %s WHERE id = %s",
                (json.dumps(checkpoint), deps.clock(), job_id),
            )
        finished = _ingest(deps, job, open_upload, checkpoint)
    except BadUpload as exc:
        _fail(deps, job, str(exc))
        return
    except UploadChanged:
        _fail(deps, job, CHANGED)
        return
    if finished:
        with conn.transaction():
            conn.execute(
                "UPDATE import_jobs SET status = 'completed', finished_at = %s, updated_at = %s, "
                "bytes_read = bytes_total, checkpoint = NULL WHERE id = %s",
                (deps.clock(), deps.clock(), job_id),
            )
            conn.execute("DELETE FROM import_merges WHERE import_id = %s", (job_id,))
        logger.info("import completed", extra=log)
        enrichment.request(deps.sqs, s)
    else:
        _continue_later(deps, job_id)


def _exports(upload: Upload) -> list[int]:
    """The indices of the export members of an upload, judged by their first record: a file that is
    not a zip or JSON, or holds no export, fails here, before any write."""
    candidates = upload.candidates()
    if not upload.is_zip:
        member = candidates[0]
        first = next(array_records(upload.open(member), member.name), None)
        if first is not None and not is_export_record(first):
            raise BadUpload(f"{member.name} is not a Spotify listening history file")
        return [member.index]
    exports = [m for m in candidates if is_export(upload, m)]
    if not exports:
        raise BadUpload(
            f"{upload.filename} holds no Spotify listening history (no Streaming_History_*, endsong_* "
            "or StreamingHistory* files)"
        )
    return [m.index for m in exports]


def _read_to_the_end(upload: Upload, members: list[int], position: int) -> None:
    """Read every export member from ``position`` on to its end without writing anything: a bad
    file (broken or cut-short JSON, an object where a list belongs, a zip bomb) fails here."""
    by_index = {m.index: m for m in upload.candidates()}
    for index in members[position:]:
        member = by_index[index]
        for _ in array_records(upload.open(member), member.name):
            pass


def _records(
    upload: Upload, members: list[int], checkpoint: dict[str, Any]
) -> Iterator[tuple[int, int, Any]]:
    """(member position, record number in its member, record) of every record after the
    checkpoint, member after member."""
    by_index = {m.index: m for m in upload.candidates()}
    first = int(checkpoint["member"])
    for position in range(first, len(members)):
        member: Member = by_index[members[position]]
        resume_at = int(checkpoint["record"]) if position == first else 0
        for read, record in enumerate(array_records(upload.open(member), member.name), start=1):
            if read > resume_at:
                yield position, read, record


def _ingest(
    deps: WorkerDeps, job: dict[str, Any], open_upload: Callable[[], Upload], checkpoint: dict[str, Any]
) -> bool:
    """Ingest from the checkpoint on, a transaction per ``IMPORT_BATCH_SIZE`` records; True when
    the upload is done, False when time ran short."""
    s = deps.settings
    members: list[int] = list(checkpoint["members"])
    totals = _Totals(
        records=int(job["records_read"]),
        added=int(job["added"]),
        merged=int(job["merged"]),
        duplicates=int(job["duplicates"]),
        skipped=Counter({k: int(v) for k, v in (job["skipped"] or {}).items()}),
    )
    upload = open_upload()
    records = _records(upload, members, checkpoint)
    chunk = min(BULK_BATCH_SIZE, s.import_batch_size)
    known: KnownTracks = {}  # tracks resolved by earlier batches of this run
    while True:
        short = False
        with bulk_ingest(deps.conn, job["user_id"], import_id=job["id"], known=known) as bulk:
            plays: list[Play] = []
            skips: Counter[str] = Counter()
            count = 0
            done = True
            for position, read, record in records:
                count += 1
                result = normalise(record)
                if isinstance(result, Play):
                    plays.append(result)
                else:
                    skips[result] += 1
                if count % chunk == 0:
                    bulk.add(plays)
                    plays = []
                    _live_progress(deps, job, totals.records + count, upload.position)
                    short = deps.remaining_ms() < TIME_MARGIN_MS
                    if short or count >= s.import_batch_size:
                        checkpoint = {**checkpoint, "member": position, "record": read}
                        done = False
                        break
            else:
                checkpoint = {**checkpoint, "member": len(members), "record": 0, "sound": True}
            if not checkpoint.get("sound", True):
                # Nothing commits before the whole file is known to be sound: the rest of it is
                # read through once (an upload of up to IMPORT_BATCH_SIZE records is read once).
                _read_to_the_end(open_upload(), members, int(checkpoint["member"]))
                checkpoint["sound"] = True
            bulk.add(plays)
            written = bulk.finish()
            _record_batch(deps, job, upload, totals, written, skips, count, checkpoint)
        if done:
            return True
        if short or deps.remaining_ms() < TIME_MARGIN_MS:
            return False


def _live_progress(deps: WorkerDeps, job: dict[str, Any], records: int, position: int) -> None:
    """How far the worker has read, written outside the batch's transaction (migration 0007)."""
    if deps.progress_conn is None:
        return
    deps.progress_conn.execute(
        "UPDATE import_jobs SET live_records = GREATEST(live_records, %s), "
        "live_bytes = GREATEST(live_bytes, %s), updated_at = %s WHERE id = %s AND status = 'running'",
        (records, position, deps.clock(), job["id"]),
    )


def _record_batch(
    deps: WorkerDeps,
    job: dict[str, Any],
    upload: Upload,
    totals: _Totals,
    result: IngestResult,
    skips: Counter[str],
    records: int,
    checkpoint: dict[str, Any],
) -> None:
    """The job's counts, progress and checkpoint, in the transaction of the batch they count."""
    totals.records += records
    totals.added += result.added
    totals.merged += result.merged
    totals.duplicates += result.duplicates
    totals.skipped.update(skips)
    deps.conn.execute(
        """
        UPDATE import_jobs SET records_read = %(records)s, added = %(added)s, merged = %(merged)s,
               duplicates = %(duplicates)s, skipped = %(skipped)s, bytes_read = %(bytes)s,
               checkpoint = %(checkpoint)s, updated_at = %(now)s
         WHERE id = %(id)s AND user_id = %(user)s AND status = 'running'
        """,
        {
            "records": totals.records,
            "added": totals.added,
            "merged": totals.merged,
            "duplicates": totals.duplicates,
            "skipped": jobs.skipped_json(dict(totals.skipped)),
            "bytes": upload.position,
            "checkpoint": json.dumps(checkpoint),
            "now": deps.clock(),
            "id": job["id"],
            "user": job["user_id"],
        },
    )


def _continue_later(deps: WorkerDeps, job_id: uuid.UUID) -> None:
    """Hand the job to a new invocation: ``queued`` until it picks the job up at its checkpoint."""
    url = deps.settings.require("import_queue_url", "IMPORT_QUEUE_URL")
    deps.conn.execute(
        "UPDATE import_jobs SET status = 'queued', updated_at = %s WHERE id = %s AND status = 'running'",
        (deps.clock(), job_id),
    )
    deps.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"import_id": str(job_id)}))
    logger.info("import continues in a new invocation", extra={"import_id": str(job_id)})


def _fail(deps: WorkerDeps, job: dict[str, Any], error: str) -> None:
    """End a job as failed; whatever it committed is taken back out of the events and statistics:
    the plays it added are deleted, and the plays stored before it that it merged or claimed are
    put back as they were (import_merges)."""
    conn = deps.conn
    user_id = job["user_id"]
    with conn.transaction():
        conn.execute(
            "UPDATE import_jobs SET status = 'failed', error = %s, finished_at = %s, updated_at = %s, "
            "checkpoint = NULL WHERE id = %s AND user_id = %s",
            (error, deps.clock(), deps.clock(), job["id"], user_id),
        )
        gone = conn.execute(
            "DELETE FROM listening_events WHERE user_id = %s AND import_id = %s", (user_id, job["id"])
        ).rowcount
        restored = conn.execute(
            """
            UPDATE listening_events e SET ms_played = m.ms_played, is_estimated = m.is_estimated,
                   api_twin_at = m.api_twin_at, extended_twin_at = m.extended_twin_at,
                   account_twin_at = m.account_twin_at
              FROM import_merges m
             WHERE m.import_id = %(job)s AND m.user_id = %(user)s AND e.user_id = %(user)s
               AND e.track_id = m.track_id AND e.played_at = m.played_at
            """,
            {"job": job["id"], "user": user_id},
        ).rowcount
        conn.execute("DELETE FROM import_merges WHERE import_id = %s", (job["id"],))
    if gone or restored:
        maintenance.rebuild(conn, user_id)
    logger.warning("import failed", extra={"import_id": str(job["id"]), "user_id": user_id, "error": error})


def sweep(deps: WorkerDeps) -> dict[str, int]:
    """Fail jobs stuck ``running`` (or ``queued`` for a continuation that never came) without
    progress for ``IMPORT_STUCK_SECONDS``, and jobs whose upload never arrived; ``live`` counts the
    jobs still under way afterwards."""
    s, now = deps.settings, deps.clock()
    stuck = deps.conn.execute(
        "SELECT id FROM import_jobs WHERE status IN ('running', 'queued') AND updated_at < %s",
        (now - timedelta(seconds=s.import_stuck_s),),
    ).fetchall()
    failed = 0
    for (job_id,) in stuck:
        key = job_id.int & 0x7FFFFFFF
        got = deps.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (IMPORT_LOCK_CLASS, key)).fetchone()
        if not got or not got[0]:
            continue  # a worker still holds it: slow, not stuck
        try:
            job = jobs.by_id(deps.conn, job_id)
            if job is not None and job["status"] in ("running", "queued"):
                _fail(deps, job, "The import stopped making progress; upload the file again.")
                failed += 1
        finally:
            deps.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (IMPORT_LOCK_CLASS, key))
    abandoned = deps.conn.execute(
        "UPDATE import_jobs SET status = 'failed', error = 'The upload never arrived.', finished_at = %s, "
        "updated_at = %s WHERE status = 'awaiting_upload' AND created_at < %s",
        (now, now, now - timedelta(seconds=s.upload_url_ttl_s) - timedelta(hours=1)),
    ).rowcount
    row = deps.conn.execute(
        "SELECT count(*) FROM import_jobs WHERE status IN ('awaiting_upload', 'queued', 'running')"
    ).fetchone()
    return {"stuck_failed": failed, "abandoned": abandoned, "live": int(row[0]) if row else 0}
