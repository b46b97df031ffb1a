"""Import jobs: created with a presigned upload, read by their owner, advanced by the worker.

Status: ``awaiting_upload`` (created, presigned POST handed out) -> ``queued`` (the upload arrived)
-> ``running`` -> ``completed`` | ``failed``. Every query is scoped to the job's user.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from myi import aws, cursors
from myi.db import fetch_all, fetch_one
from myi.errors import InvalidRequest, NotFound, RateLimited, TooLarge
from myi.imports.formats import SKIP_REASONS
from myi.ratelimit import RateLimiter
from myi.settings import Settings
from myi.uploads import user_prefix
from myi.users import iso

MAX_FILENAME = 255
_COLUMNS = (
    "id, user_id, status, filename, object_key, size_bytes, created_at, started_at, finished_at, updated_at, "
    "records_read, bytes_read, bytes_total, added, merged, duplicates, skipped, checkpoint, error, "
    "live_records, live_bytes"
)


def object_key(user_id: int, job_id: uuid.UUID) -> str:
    """Where a job's upload goes: under the user's prefix, named by the job, never by the user."""
    return f"{user_prefix(user_id)}{job_id}/upload"


def create(
    conn: psycopg.Connection[Any],
    settings: Settings,
    user_id: int,
    filename: str,
    size_bytes: int,
    *,
    now: datetime,
) -> dict[str, Any]:
    """A new job and the presigned POST its upload must use (API.md's ``POST /me/imports`` body)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or len(name) > MAX_FILENAME or any(ord(ch) < 0x20 for ch in name):
        raise InvalidRequest("Invalid parameter filename: give the file's name, like my_spotify_data.zip")
    if size_bytes <= 0:
        raise InvalidRequest("Invalid parameter size_bytes: it must be the file's size in bytes, above 0")
    if size_bytes > settings.max_upload_bytes:
        raise TooLarge(
            f"The file is {size_bytes} bytes; the largest accepted upload is "
            f"{settings.max_upload_bytes} bytes."
        )
    _admit(conn, settings, user_id, now)
    job_id = uuid.uuid4()
    key = object_key(user_id, job_id)
    row = fetch_one(
        conn,
        f"INSERT INTO import_jobs (id, user_id, filename, object_key, size_bytes, bytes_total, created_at, "
        f"updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (job_id, user_id, name, key, size_bytes, size_bytes, now, now),
    )
    assert row is not None
    expires = now + timedelta(seconds=settings.upload_url_ttl_s)
    post = aws.client("s3", settings).generate_presigned_post(
        Bucket=settings.import_bucket,
        Key=key,
        Conditions=[["content-length-range", 1, settings.max_upload_bytes]],
        ExpiresIn=settings.upload_url_ttl_s,
    )
    return {
        "import": document(row),
        "upload": {
            "method": "POST",
            "url": post["url"],
            "fields": post["fields"],
            "max_bytes": settings.max_upload_bytes,
            "expires_at": iso(expires),
        },
    }


# How soon to ask again while the user's import is still being read.
RUNNING_RETRY_S = 60


def _admit(conn: psycopg.Connection[Any], settings: Settings, user_id: int, now: datetime) -> None:
    """One import of a user being read at a time, and at most ``IMPORT_CREATE_LIMIT`` created per
    ``IMPORT_CREATE_WINDOW_SECONDS``: 429 otherwise (API.md)."""
    running = fetch_one(  # a job that stopped making progress (the sweep fails it) does not count
        conn,
        "SELECT 1 AS one FROM import_jobs WHERE user_id = %s AND status IN ('queued', 'running') "
        "AND updated_at > %s LIMIT 1",
        (user_id, now - timedelta(seconds=settings.import_stuck_s)),
    )
    if running is not None:
        raise RateLimited(
            "An import of yours is still running; start the next one when it ends.", RUNNING_RETRY_S
        )
    RateLimiter(settings).admit(
        f"import-create:{user_id}",
        limit=settings.import_create_limit,
        window_s=settings.import_create_window_s,
        refusal="Too many imports were started; try again later.",
    )


def document(row: dict[str, Any]) -> dict[str, Any]:
    """A job as API.md shows it."""
    total = int(row["bytes_total"] or 0)
    done = int(row["bytes_read"] or 0)
    records = int(row["records_read"])
    if row["status"] == "completed":
        percent = 100.0
    else:
        # while a batch is being written, its records count as read (live progress, migration 0007)
        if row["status"] == "running":
            done = max(done, int(row["live_bytes"] or 0))
            records = max(records, int(row["live_records"] or 0))
        percent = round(min(100.0, 100.0 * done / total), 1) if total else 0.0
    skipped = {reason: int((row["skipped"] or {}).get(reason, 0)) for reason in SKIP_REASONS}
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "filename": row["filename"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "progress": {
            "records_read": records,
            "bytes_read": done,
            "bytes_total": total,
            "percent": percent,
        },
        "counts": {
            "added": int(row["added"]),
            "merged": int(row["merged"]),
            "duplicates": int(row["duplicates"]),
            "skipped": skipped,
        },
        "error": row["error"],
    }


def _parse_id(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except (ValueError, AttributeError, TypeError):
        return None


def get(conn: psycopg.Connection[Any], user_id: int, job_id: str) -> dict[str, Any]:
    """The user's job; another user's id answers exactly like one that does not exist."""
    parsed = _parse_id(job_id)
    row = None
    if parsed is not None:
        row = fetch_one(
            conn, f"SELECT {_COLUMNS} FROM import_jobs WHERE id = %s AND user_id = %s", (parsed, user_id)
        )
    if row is None:
        raise NotFound("No such import.")
    return document(row)


def page(conn: psycopg.Connection[Any], user_id: int, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """The user's jobs, newest first, ``limit`` at a time."""
    params: dict[str, Any] = {"user": user_id, "limit": limit + 1}
    where = ""
    if cursor:
        params["c_created"], params["c_id"] = cursors.decode_newest_first("imports", user_id, cursor)
        where = "AND (created_at, id) < (%(c_created)s, %(c_id)s)"
    rows = fetch_all(
        conn,
        f"SELECT {_COLUMNS} FROM import_jobs WHERE user_id = %(user)s {where} "
        "ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
        params,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [document(r) for r in rows],
        "next": cursors.encode_newest_first("imports", user_id, rows[-1]["created_at"], rows[-1]["id"])
        if more
        else None,
    }


def by_key(conn: psycopg.Connection[Any], key: str) -> dict[str, Any] | None:
    return fetch_one(conn, f"SELECT {_COLUMNS} FROM import_jobs WHERE object_key = %s", (key,))


def by_id(conn: psycopg.Connection[Any], job_id: uuid.UUID) -> dict[str, Any] | None:
    return fetch_one(conn, f"SELECT {_COLUMNS} FROM import_jobs WHERE id = %s", (job_id,))


def skipped_json(counts: dict[str, int]) -> Jsonb:
    return Jsonb({reason: int(counts.get(reason, 0)) for reason in SKIP_REASONS})
