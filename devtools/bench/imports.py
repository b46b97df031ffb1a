"""Import figures: a generated Spotify download through the import worker, against ijson alone.

``import_events_per_s``: records of a 500,000-record export zip (new extended format, a realistic
mix of plays and skips) per second, from the uploaded object to ``completed``, in a worker process
of its own (local PostgreSQL, the AWS emulator). ``import_vs_parse_ratio``: that time divided by
ijson alone streaming the same JSON out of the same zip. ``import_peak_rss_mb`` and
``import_peak_rss_mb_small`` (a 50,000-record export): the worker's peak resident memory, which
should not grow with the file. ``MYI_BENCH_IMPORT_RECORDS`` overrides the large size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import ijson
import psycopg

from devtools.bench import BenchContext, Figure, stopwatch
from devtools.local.resources import create_resources
from devtools.synthetic import write_extended_zip
from myi import aws, migrate
from myi.imports import jobs
from myi.settings import Settings

RECORDS = int(os.environ.get("MYI_BENCH_IMPORT_RECORDS") or 500_000)
SMALL = 50_000


def _parse_only(path: Path) -> float:
    with stopwatch() as elapsed, zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".json"):
                with zf.open(info) as member:
                    for _ in ijson.items(member, "item", use_float=False):
                        pass
    return elapsed()


def _import(
    ctx: BenchContext, settings: Settings, conn: psycopg.Connection, path: Path, name: str
) -> tuple[float, float]:
    user = conn.execute(
        "INSERT INTO users (spotify_id) VALUES (%s) RETURNING id", (f"{name}-{uuid.uuid4().hex[:8]}",)
    ).fetchone()
    assert user is not None
    job = jobs.create(conn, settings, int(user[0]), path.name, path.stat().st_size, now=datetime.now(UTC))[
        "import"
    ]
    key = jobs.object_key(int(user[0]), uuid.UUID(job["id"]))
    aws.client("s3", settings).upload_file(str(path), settings.import_bucket, key)
    env = {**os.environ, "DATABASE_URL": ctx.database_url}
    out = subprocess.run(
        [sys.executable, "-m", "devtools.bench._import_worker", job["id"]],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    done = jobs.get(conn, int(user[0]), job["id"])
    if done["status"] != "completed":
        raise RuntimeError(f"the benchmark import ended {done['status']}: {done['error']}")
    seconds, rss_kib = float(out[-2]), float(out[-1])
    return seconds, rss_kib / 1024


def run(ctx: BenchContext) -> Iterator[Figure]:
    settings = Settings.from_env().replace(database_url=ctx.database_url, max_upload_bytes=4 * 1024**3)
    os.environ["MAX_UPLOAD_BYTES"] = str(settings.max_upload_bytes)
    os.environ.update(create_resources(settings))
    settings = Settings.from_env().replace(database_url=ctx.database_url)
    with psycopg.connect(ctx.database_url, autocommit=True, prepare_threshold=None) as conn:
        migrate.migrate(conn)
        small = ctx.scratch / "small_export.zip"
        write_extended_zip(small, SMALL, seed=31)
        _, small_rss = _import(ctx, settings, conn, small, "bench-import-small")
        large = ctx.scratch / "my_spotify_data.zip"
        write_extended_zip(large, RECORDS, seed=32)
        seconds, rss = _import(ctx, settings, conn, large, "bench-import")
        parse = _parse_only(large)
    yield Figure("import_events_per_s", RECORDS / seconds, "events/s")
    yield Figure("import_vs_parse_ratio", seconds / parse, "x")
    yield Figure("import_peak_rss_mb", rss, "MB")
    yield Figure("import_peak_rss_mb_small", small_rss, "MB")
