"""Export figures: a listener's whole history through the export worker into the emulator's S3.

``export_plays_per_s``: plays per second of a 1,000,000-play history (ten years, 30,000 tracks, a
Zipf-like mix, as ``devtools.bench.ingest`` makes it) exported as ``extended_json``, from the
message to ``completed`` (the server-side cursor, the catalog per track, the JSON, the deflated zip
and its multipart upload to the emulator), in a worker process of its own;
``export_cpu_plays_per_s``: the same plays over the worker process's CPU time (user and system, all
its threads), which other work on the machine moves less than the wall clock;
``export_csv_plays_per_s`` the wall-clock rate as ``csv``. ``export_peak_rss_mb`` (the larger of
the two), ``export_peak_rss_mb_100k`` and ``export_peak_rss_mb_small`` (100,000 and 10,000 plays):
the worker process's peak resident memory, which should not grow with the history;
``export_rss_growth_mb`` is the difference between the largest and the smallest.
``MYI_BENCH_EXPORT_PLAYS`` overrides the large size.

``python -m devtools.bench.exports <export id> <bucket> <queue url>`` runs one export in this
process and prints ``seconds cpu_seconds peak_rss_kib`` (how the module measures the worker alone).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import psycopg

from devtools.bench import BenchContext, Figure
from devtools.bench.ingest import synthetic_catalog, synthetic_plays
from devtools.local.resources import create_resources
from myi import aws, db, migrate, partitions
from myi.exports import jobs
from myi.exports.jobs import ExportConfig
from myi.ingestion import BULK_BATCH_SIZE, bulk_ingest
from myi.settings import Settings

PLAYS = int(os.environ.get("MYI_BENCH_EXPORT_PLAYS") or 1_000_000)
SMALL = 10_000
MIDDLE = 100_000
TRACKS = 30_000
QUEUE = "myi-bench-exports"
COMMIT = 500_000  # plays per transaction while the history is loaded, as an import commits them


def _load(conn: psycopg.Connection[Any], name: str, plays: int) -> int:
    """A user with ``plays`` synthetic plays, stored as an import stores them."""
    row = conn.execute(
        "INSERT INTO users (spotify_id, timezone) VALUES (%s, 'Europe/Berlin') RETURNING id",
        (f"{name}-{uuid.uuid4().hex[:8]}",),
    ).fetchone()
    assert row is not None
    user = int(row[0])
    history = synthetic_plays(synthetic_catalog(TRACKS), plays)
    first = True
    while True:
        batch = list(islice(history, COMMIT))
        if not batch:
            return user
        if first:
            partitions.ensure_range(conn, batch[0].played_at, datetime.now(UTC))
            first = False
        with bulk_ingest(conn, user) as bulk:
            for at in range(0, len(batch), BULK_BATCH_SIZE):
                bulk.add(batch[at : at + BULK_BATCH_SIZE])


def _export(
    ctx: BenchContext, conn: psycopg.Connection[Any], config: ExportConfig, user: int, fmt: str
) -> tuple[float, float, float]:
    """(seconds, CPU seconds, peak RSS in MB) of the worker process that writes the user's export."""
    doc = jobs.create(conn, config, aws.client("sqs"), user, fmt, now=datetime.now(UTC))["export"]
    out = subprocess.run(  # the message stays in the queue: the worker is run here instead
        [sys.executable, "-m", "devtools.bench.exports", doc["id"], config.bucket, str(config.queue_url)],
        env={**os.environ, "DATABASE_URL": ctx.database_url},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    done = jobs.get(conn, None, config, user, doc["id"], now=datetime.now(UTC))
    if done["status"] != "completed":
        raise RuntimeError(f"the benchmark export ended {done['status']}: {done['error']}")
    return float(out[-3]), float(out[-2]), float(out[-1]) / 1024


def run(ctx: BenchContext) -> Iterator[Figure]:
    settings = Settings.from_env().replace(database_url=ctx.database_url)
    os.environ.update(create_resources(settings))
    settings = Settings.from_env().replace(database_url=ctx.database_url)
    url = aws.client("sqs", settings).create_queue(QueueName=QUEUE)["QueueUrl"]
    config = ExportConfig(bucket=settings.import_bucket, queue_url=url)
    with psycopg.connect(ctx.database_url, autocommit=True, prepare_threshold=None) as conn:
        migrate.migrate(conn)
        small = _load(conn, "bench-export-small", SMALL)
        _, _, small_rss = _export(ctx, conn, config, small, "extended_json")
        middle = _load(conn, "bench-export-100k", MIDDLE)
        _, _, middle_rss = _export(ctx, conn, config, middle, "extended_json")
        large = _load(conn, "bench-export", PLAYS)
        conn.execute("ANALYZE listening_events")
        seconds, cpu, rss = _export(ctx, conn, config, large, "extended_json")
        csv_seconds, _, csv_rss = _export(ctx, conn, config, large, "csv")
    yield Figure("export_plays_per_s", PLAYS / seconds, "plays/s")
    yield Figure("export_cpu_plays_per_s", PLAYS / cpu, "plays/s")
    yield Figure("export_csv_plays_per_s", PLAYS / csv_seconds, "plays/s")
    yield Figure("export_peak_rss_mb", max(rss, csv_rss), "MB")
    yield Figure("export_peak_rss_mb_100k", middle_rss, "MB")
    yield Figure("export_peak_rss_mb_small", small_rss, "MB")
    yield Figure("export_rss_growth_mb", max(rss, csv_rss) - small_rss, "MB")


def _peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM: this process's image alone)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main(export_id: str, bucket: str, queue_url: str) -> None:
    from myi.exports.worker import ExportDeps, handle_message

    settings = Settings.from_env()
    deps = ExportDeps(
        conn=db.connect(settings),
        state_conn=db.connect(settings),
        s3=aws.client("s3", settings),
        sqs=aws.client("sqs", settings),
        config=ExportConfig(bucket=bucket, queue_url=queue_url),
    )
    start, cpu = time.perf_counter(), time.process_time()
    handle_message(deps, json.dumps({"export_id": export_id}))
    print(f"{time.perf_counter() - start} {time.process_time() - cpu} {_peak_rss_kib()}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
