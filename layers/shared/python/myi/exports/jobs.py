"""Export rows: created by their owner, read by their owner (with a fresh presigned download),
advanced by the worker. Every query is scoped to the export's user.

Status: ``queued`` (created, or handed to a continuation) -> ``running`` -> ``completed`` | ``failed``.
One export of a user is ``queued`` or ``running`` at a time (a unique index, so two requests at once
cannot both pass): another is 409 ``conflict``. An export that stopped moving for ``stuck_s`` (its
worker died and the message went to the dead-letter queue) no longer counts: it is failed when the
user starts a new one, and by the worker's sweep.

The file lives at ``exports/<user id>/<export id>/my_spotify_data.zip`` in the file bucket and goes
``ttl_days`` after it was written (the bucket's lifecycle rule; ``expires_at`` says when, and no
download is handed out after it).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from myi import cursors
from myi.db import fetch_all, fetch_one
from myi.errors import Conflict, InvalidRequest, NotFound
from myi.exports.formats import DOWNLOAD_NAME, FORMATS
from myi.exports.writer import MIN_PART_BYTES
from myi.settings import Settings
from myi.users import iso

EXPORT_PREFIX = "exports/"
_COLUMNS = (
    "id, user_id, format, status, object_key, created_at, started_at, finished_at, updated_at, expires_at, "
    "plays, size_bytes, upload_id, checkpoint, pending, error"
)
_PUBLIC = (
    "id, user_id, format, status, object_key, created_at, started_at, finished_at, updated_at, expires_at, "
    "plays, size_bytes, error"
)
STUCK = "The export stopped making progress; start a new one."


@dataclass(frozen=True)
class ExportConfig:
    """What exports take from the settings (see :meth:`from_settings`), with the defaults of a
    deployment."""

    bucket: str = "myi-imports"  # the file bucket, under EXPORT_PREFIX
    queue_url: str | None = None  # the export worker's queue
    ttl_days: int = 7  # the bucket's lifecycle rule removes an export's file after this
    download_url_ttl_s: int = 300  # life of a presigned download, issued fresh on every read
    stuck_s: int = 1800  # an export without progress this long is failed
    # bytes per uploaded part: S3's least, so that the worker holds as little as it can (at most
    # 10,000 parts: a 50 GB zip, tens of millions of plays)
    part_size: int = MIN_PART_BYTES
    time_margin_ms: int = 60_000  # a worker with less time left hands over to a continuation
    # zlib's level for the zip's members: 3 deflates Spotify's JSON in half the time of the default 6,
    # into a file about a third larger (1,000,000 plays: about 34 MB instead of 26 MB)
    compress_level: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> ExportConfig:
        """From the settings' ``export_*`` fields; the bucket defaults to the import bucket."""
        return cls(
            bucket=settings.export_bucket or settings.import_bucket,
            queue_url=settings.export_queue_url,
            ttl_days=settings.export_ttl_days,
            download_url_ttl_s=settings.export_download_url_ttl_s,
            stuck_s=settings.export_stuck_s,
        )

    def require_queue(self) -> str:
        if not self.queue_url:
            raise RuntimeError("EXPORT_QUEUE_URL is not set")
        return self.queue_url


def user_prefix(user_id: int) -> str:
    return f"{EXPORT_PREFIX}{user_id}/"


def object_key(user_id: int, export_id: uuid.UUID) -> str:
    """Where an export's file goes: under the user's prefix, named by the export."""
    return f"{user_prefix(user_id)}{export_id}/{DOWNLOAD_NAME}"


def create(
    conn: psycopg.Connection[Any],
    config: ExportConfig,
    sqs: Any,
    user_id: int,
    fmt: str,
    *,
    now: datetime,
) -> dict[str, Any]:
    """A new export, queued for the worker (API.md's ``POST /me/exports`` body). The row and the
    message go together: when the message cannot be sent, no row is left behind."""
    if fmt not in FORMATS:
        raise InvalidRequest(f"Invalid parameter format: use one of {', '.join(FORMATS)}.")
    queue = config.require_queue()
    fail_stuck(conn, config, now=now, user_id=user_id)
    export_id = uuid.uuid4()
    try:
        with conn.transaction():
            row = fetch_one(
                conn,
                f"INSERT INTO exports (id, user_id, format, object_key, created_at, updated_at) "
                f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_PUBLIC}",
                (export_id, user_id, fmt, object_key(user_id, export_id), now, now),
            )
            sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"export_id": str(export_id)}))
    except pg_errors.UniqueViolation:
        raise Conflict("An export of yours is still being written; wait until it ends.") from None
    assert row is not None
    return {"export": document(row, None, config, now=now)}


def fail_stuck(
    conn: psycopg.Connection[Any], config: ExportConfig, *, now: datetime, user_id: int | None = None
) -> list[dict[str, Any]]:
    """Fail exports that stopped moving for ``stuck_s`` (of one user, or everyone's); the rows, so
    that the caller can abort their uploads (the bucket's lifecycle rule aborts the rest)."""
    params: dict[str, Any] = {"cutoff": now - timedelta(seconds=config.stuck_s), "now": now, "error": STUCK}
    scope = ""
    if user_id is not None:
        scope = "AND user_id = %(user)s"
        params["user"] = user_id
    return fetch_all(
        conn,
        f"""
        UPDATE exports SET status = 'failed', error = %(error)s, finished_at = %(now)s,
               updated_at = %(now)s, checkpoint = NULL, pending = NULL
         WHERE status IN ('queued', 'running') AND updated_at < %(cutoff)s {scope}
        RETURNING id, user_id, object_key, upload_id
        """,
        params,
    )


def document(row: Mapping[str, Any], s3: Any, config: ExportConfig, *, now: datetime) -> dict[str, Any]:
    """An export as API.md shows it; a completed one whose file is still there carries a freshly
    presigned download (``s3``: the client that signs it; None: no download)."""
    download = None
    expires = row["expires_at"]
    if s3 is not None and row["status"] == "completed" and expires is not None and expires > now:
        life = max(1, min(config.download_url_ttl_s, int((expires - now).total_seconds())))
        url = s3.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": config.bucket,
                "Key": row["object_key"],
                "ResponseContentDisposition": f'attachment; filename="{DOWNLOAD_NAME}"',
            },
            ExpiresIn=life,
        )
        download = {"url": url, "expires_at": iso(now + timedelta(seconds=life))}
    return {
        "id": str(row["id"]),
        "format": row["format"],
        "status": row["status"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "expires_at": iso(expires),
        "plays": int(row["plays"]),
        "size_bytes": int(row["size_bytes"]),
        "download": download,
        "error": row["error"],
    }


def _parse_id(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except (ValueError, AttributeError, TypeError):
        return None


def get(
    conn: psycopg.Connection[Any],
    s3: Any,
    config: ExportConfig,
    user_id: int,
    export_id: str,
    *,
    now: datetime,
) -> dict[str, Any]:
    """The user's export; another user's id answers exactly like one that does not exist."""
    parsed = _parse_id(export_id)
    row = None
    if parsed is not None:
        row = fetch_one(
            conn, f"SELECT {_PUBLIC} FROM exports WHERE id = %s AND user_id = %s", (parsed, user_id)
        )
    if row is None:
        raise NotFound("No such export.")
    return document(row, s3, config, now=now)


def page(
    conn: psycopg.Connection[Any],
    s3: Any,
    config: ExportConfig,
    user_id: int,
    *,
    limit: int,
    cursor: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The user's exports, newest first, ``limit`` at a time (the cursor only says where the last
    page ended; every row is the user's)."""
    params: dict[str, Any] = {"user": user_id, "limit": limit + 1}
    where = ""
    if cursor:
        params["c_created"], params["c_id"] = cursors.decode_newest_first("exports", user_id, cursor)
        where = "AND (created_at, id) < (%(c_created)s, %(c_id)s)"
    rows = fetch_all(
        conn,
        f"SELECT {_PUBLIC} FROM exports WHERE user_id = %(user)s {where} "
        "ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
        params,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [document(r, s3, config, now=now) for r in rows],
        "next": cursors.encode_newest_first("exports", user_id, rows[-1]["created_at"], rows[-1]["id"])
        if more
        else None,
    }


def by_id(conn: psycopg.Connection[Any], export_id: uuid.UUID) -> dict[str, Any] | None:
    """The whole row (the worker's view, checkpoint included)."""
    return fetch_one(conn, f"SELECT {_COLUMNS} FROM exports WHERE id = %s", (export_id,))


class ExportsNotDeleted(RuntimeError):
    pass


def delete_user_exports(s3: Any, bucket: str, user_id: int) -> int:
    """Delete every export file of a user and abort their uploads under way (``DELETE /me``, before
    the user's rows go); how many files were deleted. Raises when S3 refuses any of it."""
    prefix = user_prefix(user_id)
    deleted = 0
    for page_ in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page_.get("Contents", [])]
        if keys:
            result = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            if result.get("Errors"):
                raise ExportsNotDeleted(
                    f"{len(result['Errors'])} export files of user {user_id} were not deleted"
                )
            deleted += len(keys)
    for page_ in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        for upload in page_.get("Uploads", []):
            abort_upload(s3, bucket, upload["Key"], upload["UploadId"])
    return deleted


def abort_upload(s3: Any, bucket: str, key: str, upload_id: str) -> None:
    """Abort a multipart upload; one that is already gone (completed or aborted) is fine."""
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("NoSuchUpload", "404"):
            raise
