"""Many invocations at once through the local runtime, as Lambda runs them: every concurrently
running invocation has an environment of its own (its connection, its handler's globals).

Fifty users are signed in at once; then one fan-out queues a sync for each of them while ten of
them upload a download and every one changes their time zone. Every message must complete, every
request must answer for its own user, and every user's statistics must verify. And a handler that
keeps its connection in a module global, as a Lambda handler may, has it to itself."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devtools.fakespotify import FakeSpotify
from devtools.local.resources import create_resources
from devtools.local.runtime import Runtime
from devtools.synthetic import write_extended_zip
from infra.wiring import Function, Queue, QueueTrigger, Wiring
from myi import aws
from myi.settings import Settings
from myi.statistics import maintenance
from tests.e2e.conftest import print_log_on_failure, runtime_with, session, sign_in
from tests.fixtures.local_runtime import LocalRuntime

SYNC_USERS = 40
IMPORT_USERS = 10
IMPORT_RECORDS = 300
ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "Africa/Nairobi",
    "Asia/Kolkata",
    "Pacific/Auckland",
)


@pytest.fixture(scope="module")
def runtime(fake: FakeSpotify, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    """A runtime whose fan-out sends every message at once (no spreading delay), where fifty
    people may sign in from one address within a minute."""
    with runtime_with(fake, tmp_path_factory, SYNC_MAX_DELAY_SECONDS="0", LOGIN_RATE_LIMIT="1000") as rt:
        yield rt


log_on_failure = pytest.fixture(autouse=True)(print_log_on_failure)


def upload(rt: LocalRuntime, cookie: str, path: Path) -> str:
    """The SPA's upload: create the import, send the file with the presigned POST."""
    with session(rt, cookie) as client:
        created = client.post("/me/imports", json={"filename": path.name, "size_bytes": path.stat().st_size})
        assert created.status_code == 201, created.text
        post = created.json()["upload"]
        with path.open("rb") as f:
            sent = httpx.post(post["url"], data=post["fields"], files={"file": (path.name, f)}, timeout=60)
        assert sent.status_code in (200, 201, 204), sent.text
        return str(created.json()["import"]["id"])


def patch_zone(rt: LocalRuntime, cookie: str, zone: str) -> dict[str, Any]:
    with session(rt, cookie) as client:
        changed = client.patch("/me", json={"timezone": zone})
        assert changed.status_code == 200, changed.text
        body: dict[str, Any] = changed.json()
        return body


def get_json(rt: LocalRuntime, cookie: str, path: str) -> dict[str, Any]:
    with session(rt, cookie) as client:
        got = client.get(path)
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body


def test_fifty_concurrent_sync_and_import_messages_all_complete_and_verify(
    runtime: LocalRuntime, fake: FakeSpotify, tmp_path: Path
) -> None:
    tracks = list(fake.world.tracks)
    start = datetime.now(UTC) - timedelta(hours=2)
    syncing = [f"load-sync-{i:02d}" for i in range(SYNC_USERS)]
    importing = [f"load-import-{i:02d}" for i in range(IMPORT_USERS)]
    expected: dict[str, int] = {}
    for i, name in enumerate(syncing):
        fake.world.add_user(name)
        expected[name] = 10 + i  # at most 49: one page of recently-played each
        for j in range(expected[name]):
            fake.world.add_play(name, tracks[(i + j) % len(tracks)], start + timedelta(minutes=2 * j))
    for name in importing:
        fake.world.add_user(name)  # nothing at Spotify: their plays come from their download
    files = {}
    for i, name in enumerate(importing):
        files[name] = tmp_path / f"{name}.zip"
        write_extended_zip(files[name], IMPORT_RECORDS, seed=100 + i)
    everyone = syncing + importing
    zone = {name: ZONES[i % len(ZONES)] for i, name in enumerate(everyone)}

    # Eight requests at a time: the embedded PostgreSQL (shared by the test runs of this machine)
    # has room for the connections of every environment they and the fifty messages need.
    with ThreadPoolExecutor(max_workers=8) as pool:
        cookies = dict(zip(everyone, pool.map(lambda n: sign_in(runtime, n)[0], everyone), strict=True))
        # The fan-out queues all fifty syncs; the uploads and the time zone changes go in meanwhile.
        fanout = pool.submit(runtime.run_schedule, "sync-fanout")
        uploads = {n: pool.submit(upload, runtime, cookies[n], files[n]) for n in importing}
        patched = {n: pool.submit(patch_zone, runtime, cookies[n], zone[n]) for n in everyone}
        fired = fanout.result()
        assert fired.status_code == 200, fired.text
        assert fired.json()["result"]["enqueued"] == len(everyone)
        import_ids = {n: f.result() for n, f in uploads.items()}
        for name, future in patched.items():
            body = future.result()
            assert (body["spotify_id"], body["timezone"]) == (name, zone[name])

        drained = runtime.drain(timeout_s=90)
        counts = drained["functions"]
        for fn in ("sync_worker", "import_worker", "api", "auth"):
            assert counts[fn]["errors"] == 0 and counts[fn]["failed_messages"] == 0, counts
        assert counts["sync_worker"]["invocations"] >= len(everyone) / 5, counts
        assert counts["sync_worker"]["peak"] >= 5 and counts["import_worker"]["peak"] >= 2, counts

        mes = dict(
            zip(everyone, pool.map(lambda n: get_json(runtime, cookies[n], "/me"), everyone), strict=True)
        )
        jobs = dict(
            zip(
                importing,
                pool.map(lambda n: get_json(runtime, cookies[n], f"/me/imports/{import_ids[n]}"), importing),
                strict=True,
            )
        )

    for name in importing:
        job = jobs[name]
        assert job["status"] == "completed", job
        assert job["progress"]["records_read"] == IMPORT_RECORDS
        expected[name] = job["counts"]["added"] + job["counts"]["merged"]
        assert expected[name] > 0
    for name, me in mes.items():
        assert (me["spotify_id"], me["timezone"]) == (name, zone[name])
        assert me["totals"]["plays"] == expected[name], (name, me["totals"])
        assert me["sync"]["status"] == "ok" and me["last_synced_at"] is not None, (name, me["sync"])

    with psycopg.connect(runtime.database_url, autocommit=True) as conn:
        ids = dict(conn.execute("SELECT spotify_id, id FROM users").fetchall())
        stored = dict(
            conn.execute(
                "SELECT u.spotify_id, count(e.user_id) FROM users u "
                "LEFT JOIN listening_events e ON e.user_id = u.id GROUP BY u.spotify_id"
            ).fetchall()
        )
        assert stored == expected
        inexact = {name: diffs[:3] for name in everyone if (diffs := maintenance.verify(conn, ids[name]))}
        assert inexact == {}


# A consumer that keeps its connection for the environment's life in a module global (as Lambda
# allows: an environment runs one invocation at a time) and holds a transaction open a while.
HOLDER = """
import functools, json, os, time
from myi import db

@functools.cache
def _conn():
    return db.get_connection()

def lambda_handler(event, context):
    conn = _conn()
    for record in event["Records"]:
        with conn.transaction():
            began = time.time()
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            conn.execute("SELECT pg_sleep(0.3)")
            ended = time.time()
        run = {"body": record["body"], "pid": pid, "began": began, "ended": ended}
        with open(os.environ["MYI_TEST_SEEN"], "a") as out:
            out.write(json.dumps(run) + "\\n")
    return {"batchItemFailures": []}
"""

HOLDING = Wiring(
    functions=(
        Function(
            "holder",
            "holds a transaction",
            timeout_s=30,
            memory_mb=128,
            queue=QueueTrigger("hold", batch_size=1, max_concurrency=8),
        ),
    ),
    queues=(Queue("hold", max_receives=1),),
    bucket_notifications=(),
)


def test_a_connection_kept_in_a_module_global_serves_one_invocation_at_a_time(
    database_url: str, aws_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    functions = tmp_path / "functions"
    (functions / "holder").mkdir(parents=True)
    (functions / "holder" / "handler.py").write_text(HOLDER)
    seen = tmp_path / "seen.jsonl"
    seen.touch()
    monkeypatch.setenv("MYI_TEST_SEEN", str(seen))
    stage = f"c{int(time.time() * 1000) % 10**8}"
    settings = Settings.from_env().replace(stage=stage, import_bucket=f"myi-{stage}")
    env = create_resources(settings, HOLDING)
    rt = Runtime(
        settings=settings,
        queue_urls={"hold": env["HOLD_QUEUE_URL"]},
        wiring=HOLDING,
        port=0,
        schedules_enabled=False,
        functions_dir=functions,
    )
    rt.start()
    try:
        sqs = aws.client("sqs")
        for i in range(24):
            sqs.send_message(QueueUrl=env["HOLD_QUEUE_URL"], MessageBody=f"m{i}")
        drained, depths = rt.drain(60)
        assert drained, depths
        counts = rt.counts()["holder"]
    finally:
        rt.stop()
    runs = [json.loads(line) for line in seen.read_text().splitlines()]
    assert sorted(r["body"] for r in runs) == sorted(f"m{i}" for i in range(24))
    assert counts["errors"] == 0 and counts["failed_messages"] == 0, counts
    assert counts["peak"] >= 4, counts
    overlapping_on_one_connection = [
        (a["body"], b["body"])
        for a in runs
        for b in runs
        if a["body"] < b["body"]
        and a["pid"] == b["pid"]
        and a["began"] < b["ended"]
        and b["began"] < a["ended"]
    ]
    assert overlapping_on_one_connection == []
    assert len({r["pid"] for r in runs}) >= 4
