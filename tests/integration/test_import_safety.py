"""Imports against hostile or unlucky uploads, on the AWS emulator and a real PostgreSQL: nesting
that would exhaust ijson's memory, values out of every column's range, failures nobody planned for,
failed imports that had merged plays, and uploads that change under the worker."""

from __future__ import annotations

import io
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from devtools.synthetic import catalog, extended_records, write_json_array
from infra.wiring import QUEUES
from myi.imports import jobs, worker
from myi.imports.worker import WorkerDeps, handle_message, sweep
from myi.ingestion import ingest
from myi.plays import AlbumRef, ArtistRef, Play, TrackRef
from myi.statistics import maintenance
from tests.fixtures.imports import Importer, s3_event
from tests.fixtures.plays import make_user

NAME = "Streaming_History_Audio_2020_0.json"


def as_json(records: list[Any]) -> bytes:
    out = io.BytesIO()
    write_json_array(out, records)
    return out.getvalue()


def events(conn: psycopg.Connection[Any], user: int) -> int:
    row = conn.execute("SELECT count(*) FROM listening_events WHERE user_id = %s", (user,)).fetchone()
    assert row is not None
    return int(row[0])


def plays_only(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r for r in records if r["spotify_track_uri"] and not r["incognito_mode"] and r["ms_played"] >= 30_000
    ]


# Item: nesting ---------------------------------------------------------------------------------


def test_a_record_nested_deeper_than_an_export_fails_the_import(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    good = list(extended_records(30, tracks=catalog(10), seed=21))
    deep = {**good[0], "conn_country": json.loads("[" * 17 + "]" * 17)}
    job = importer.upload(user, as_json([*good, deep]), NAME)
    assert job["status"] == "failed", job
    assert "nested deeper than a Spotify export ever is" in job["error"]
    assert events(db_conn, user) == 0


def test_a_small_upload_of_deeply_nested_lists_fails_within_seconds(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    started = time.monotonic()
    job = importer.upload(user, b"[" * 10_000 + b"]" * 10_000, NAME)
    assert job["status"] == "failed" and "nested deeper" in job["error"]
    assert time.monotonic() - started < 10


# Item: values out of range ---------------------------------------------------------------------


def test_values_out_of_range_count_as_invalid_and_the_rest_imports(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    rng = random.Random(22)
    good = plays_only(list(extended_records(80, tracks=catalog(20), seed=22)))[:20]
    base = good[0]
    bad = [
        {**base, "ms_played": "@3e9@"},
        {**base, "ms_played": "@1e400@"},
        {**base, "ms_played": 2**31},
        {**base, "ts": "9999-12-31T23:59:59Z"},
        {**base, "ts": "0001-01-01T00:00:00Z"},
        {**base, "ts": (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")},
        {**base, "ts": "2005-12-31T23:59:59Z"},
        {**base, "spotify_track_uri": "spotify:track:" + "a" * 10_000},
    ]
    long_names = [
        {**good[1], "master_metadata_track_name": "n" * 150_000},
        {**good[2], "master_metadata_album_artist_name": "\ufdfa" * 1_000},  # expands 33-fold in keys
        {**good[3], "master_metadata_album_album_name": "\u3316" * 5_000},
        {
            **good[4],
            "master_metadata_track_name": "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(5000)),
        },
    ]
    text = as_json([*good[5:], *bad, *long_names]).decode()
    for raw in ("3e9", "1e400"):
        text = text.replace(f'"@{raw}@"', raw)
    account = [
        {"endTime": "9999-01-01 00:00", "artistName": "A", "trackName": "T", "msPlayed": 40_000},
        {"endTime": "2020-01-01 00:00", "artistName": "A", "trackName": "T", "msPlayed": 3_000_000_000},
        {"endTime": "2020-01-01 00:01", "artistName": "A" * 150_000, "trackName": "T", "msPlayed": 40_000},
    ]
    extended = importer.upload(user, text.encode(), NAME)
    accounted = importer.upload(user, json.dumps(account).encode(), "StreamingHistory_music_0.json")
    assert extended["status"] == "completed", extended["error"]
    assert accounted["status"] == "completed", accounted["error"]
    assert extended["counts"]["skipped"]["invalid"] == len(bad)
    assert extended["counts"]["added"] + extended["counts"]["duplicates"] == len(good) - 5 + len(long_names)
    assert accounted["counts"]["skipped"]["invalid"] == 2 and accounted["counts"]["added"] == 1
    longest = db_conn.execute(
        "SELECT max(length(name)) FROM (SELECT name FROM tracks UNION ALL SELECT name FROM artists "
        "UNION ALL SELECT name FROM albums) n"
    ).fetchone()
    assert longest is not None and longest[0] == 1_000  # names are kept, shortened
    assert maintenance.verify(db_conn, user) == []


# Item: a failure nobody planned for ------------------------------------------------------------


def test_the_worker_retries_match_the_queue() -> None:
    [queue] = [q for q in QUEUES if q.name == "import"]
    assert queue.max_receives == worker.MAX_ATTEMPTS


def test_an_unexpected_error_is_retried_then_fails_the_job_on_the_last_delivery(
    importer: Importer, db_conn: Any, database_url: str
) -> None:
    """PostgreSQL refuses the batch (the catalog is locked by someone else and the worker will not
    wait): the delivery fails and comes back; the last one fails the job with a message."""
    user = make_user(db_conn)
    data = as_json(list(extended_records(40, tracks=catalog(10), seed=23)))
    job = importer.create(user, NAME, len(data))
    key = jobs.object_key(user, uuid.UUID(job["id"]))
    importer.deps.s3.put_object(Bucket=importer.settings.import_bucket, Key=key, Body=data)
    body = s3_event(importer.settings.import_bucket, key, len(data))
    db_conn.execute("SET lock_timeout = '200ms'")
    with psycopg.connect(database_url) as holder:
        holder.execute("LOCK TABLE tracks IN EXCLUSIVE MODE")
        for attempt in range(1, worker.MAX_ATTEMPTS):
            with pytest.raises(psycopg.errors.LockNotAvailable):
                handle_message(importer.deps, body, attempt=attempt)
            assert jobs.get(db_conn, user, job["id"])["status"] == "running"
        handle_message(importer.deps, body, attempt=worker.MAX_ATTEMPTS)
        holder.rollback()
    db_conn.execute("RESET lock_timeout")
    failed = jobs.get(db_conn, user, job["id"])
    assert failed["status"] == "failed" and failed["error"] == worker.OUR_FAULT
    assert failed["finished_at"] is not None and events(db_conn, user) == 0


# Item: a failed import leaves merged plays as they were ----------------------------------------


def _synced(records: list[dict[str, Any]]) -> list[Play]:
    out = []
    for r in records:
        ended = datetime.fromisoformat(r["ts"].replace("Z", "+00:00")) + timedelta(seconds=2)
        artist = ArtistRef(r["master_metadata_album_artist_name"], f"ar{uuid.uuid4().hex[:20]}")
        track = TrackRef(
            r["master_metadata_track_name"],
            r["spotify_track_uri"].rsplit(":", 1)[1],
            (artist,),
            AlbumRef(r["master_metadata_album_album_name"], None, (artist,)),
            duration_ms=400_000,
        )
        out.append(Play(track, ended, "api", None))
    return out


def _state(conn: psycopg.Connection[Any], user: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every event of the user, with all its columns, and every statistics row."""
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND column_name = 'user_id' AND table_name LIKE 'stat%%' ORDER BY 1"
        ).fetchall()
    ]
    state = {}
    for table in ["listening_events", *tables]:
        rows = conn.execute(f"SELECT * FROM {table} WHERE user_id = %s", (user,)).fetchall()
        state[table] = sorted(rows, key=repr)
    return state


def test_a_failed_import_puts_the_plays_it_merged_back_as_they_were(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    records = list(extended_records(2500, tracks=catalog(100), seed=24))
    synced = _synced(plays_only(records[:1000])[::10])
    assert ingest(db_conn, user, synced).added == len(synced) >= 40
    before = _state(db_conn, user)
    assert all(row[4] for row in before["listening_events"])  # estimated

    importer.deps.remaining_ms = lambda: 10_000  # time runs short after the first batch
    job = importer.upload(user, as_json(records), NAME)
    assert job["status"] == "queued" and job["counts"]["merged"] == len(synced)
    merged = db_conn.execute(
        "SELECT count(*) FROM listening_events WHERE user_id = %s AND import_id IS NULL AND NOT is_estimated",
        (user,),
    ).fetchone()
    assert merged == (len(synced),) and events(db_conn, user) > len(synced)

    later = WorkerDeps(
        settings=importer.settings,
        conn=db_conn,
        s3=importer.deps.s3,
        sqs=importer.deps.sqs,
        clock=lambda: datetime.now(UTC) + timedelta(days=1),
    )
    assert sweep(later)["stuck_failed"] == 1
    assert jobs.get(db_conn, user, job["id"])["status"] == "failed"
    assert _state(db_conn, user) == before
    assert maintenance.verify(db_conn, user) == []
    assert db_conn.execute("SELECT count(*) FROM import_merges").fetchone() == (0,)


def test_a_completed_import_keeps_its_merges_and_forgets_what_they_replaced(
    importer: Importer, db_conn: Any
) -> None:
    user = make_user(db_conn)
    records = list(extended_records(300, tracks=catalog(30), seed=25))
    synced = _synced(plays_only(records)[:20])
    ingest(db_conn, user, synced)
    job = importer.upload(user, as_json(records), NAME)
    assert job["status"] == "completed" and job["counts"]["merged"] == 20
    assert db_conn.execute("SELECT count(*) FROM import_merges").fetchone() == (0,)
    assert maintenance.verify(db_conn, user) == []


# Item: the upload changes after it was checked -------------------------------------------------


def test_a_file_replaced_while_it_is_read_fails_the_job(importer: Importer, db_conn: Any) -> None:
    """The object is replaced (a second POST with the same form) after the worker looked at it: the
    read-through before the first commit asks for the version it saw and is refused."""
    user = make_user(db_conn)
    records = list(extended_records(2500, tracks=catalog(100), seed=26))
    data = as_json(records)
    other = data.replace(b'"ts": "2016-', b'"ts": "2017-')  # as sound, as large, other plays
    assert other != data and len(other) == len(data)
    job = importer.create(user, NAME, len(data))
    key = jobs.object_key(user, uuid.UUID(job["id"]))
    bucket = importer.settings.import_bucket
    importer.deps.s3.put_object(Bucket=bucket, Key=key, Body=data)
    replaced = []

    def remaining() -> int:
        if not replaced:
            importer.deps.s3.put_object(Bucket=bucket, Key=key, Body=other)
            replaced.append(True)
        return 900_000

    importer.deps.remaining_ms = remaining
    handle_message(importer.deps, s3_event(bucket, key, len(data)))
    assert replaced
    failed = jobs.get(db_conn, user, job["id"])
    assert failed["status"] == "failed" and failed["error"] == worker.CHANGED
    assert events(db_conn, user) == 0


def test_a_file_replaced_between_two_invocations_fails_the_job(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    records = list(extended_records(2500, tracks=catalog(100), seed=27))
    importer.deps.remaining_ms = lambda: 10_000
    job = importer.upload(user, as_json(records), NAME)
    assert job["status"] == "queued" and events(db_conn, user) > 0
    key = jobs.object_key(user, uuid.UUID(job["id"]))
    importer.deps.s3.put_object(Bucket=importer.settings.import_bucket, Key=key, Body=as_json(records[:10]))
    importer.deps.remaining_ms = lambda: 900_000
    handle_message(importer.deps, json.dumps({"import_id": job["id"]}))
    failed = jobs.get(db_conn, user, job["id"])
    assert failed["status"] == "failed" and failed["error"] == worker.CHANGED
    assert events(db_conn, user) == 0


def _exists(importer: Importer, key: str) -> bool:
    listed = importer.deps.s3.list_objects_v2(Bucket=importer.settings.import_bucket, Prefix=key)
    return any(o["Key"] == key for o in listed.get("Contents", []))


def test_an_upload_for_a_finished_job_or_for_no_job_is_deleted_unread(
    importer: Importer, db_conn: Any, tmp_path: Path
) -> None:
    user = make_user(db_conn)
    data = as_json(list(extended_records(60, tracks=catalog(10), seed=28)))
    done = importer.upload(user, data, NAME)
    assert done["status"] == "completed"
    bucket = importer.settings.import_bucket
    again = as_json(list(extended_records(60, tracks=catalog(10), seed=29)))
    gone_user = f"uploads/{user + 1000}/{uuid.uuid4()}/upload"  # a user deleted since (DELETE /me)
    for key in (jobs.object_key(user, uuid.UUID(done["id"])), gone_user):
        importer.deps.s3.put_object(Bucket=bucket, Key=key, Body=again)
        handle_message(importer.deps, s3_event(bucket, key, len(again)))
        assert not _exists(importer, key)
    assert jobs.get(db_conn, user, done["id"]) == done
    assert events(db_conn, user) == done["counts"]["added"]


def test_the_handler_fails_the_job_on_the_queues_last_delivery(
    importer: Importer, db_conn: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Lambda handler as Lambda runs it, on deliveries of one real SQS message: the delivery
    count SQS reports decides whether the failure is retried (a batch item failure) or ends the job."""
    from devtools.local.context import LocalContext
    from devtools.local.events import sqs_event
    from devtools.local.runtime import REPO_ROOT, load_handler

    handler = load_handler(REPO_ROOT / "functions", "import_worker")
    user = make_user(db_conn)
    data = as_json(list(extended_records(40, tracks=catalog(10), seed=30)))
    job = importer.create(user, NAME, len(data))
    key = jobs.object_key(user, uuid.UUID(job["id"]))
    importer.deps.s3.put_object(Bucket=importer.settings.import_bucket, Key=key, Body=data)
    sqs = importer.deps.sqs
    url = sqs.create_queue(QueueName=f"import-deliveries-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.send_message(QueueUrl=url, MessageBody=s3_event(importer.settings.import_bucket, key, len(data)))
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=200")  # the handler's connections will not wait
    outcomes = []
    with psycopg.connect(database_url) as holder:
        holder.execute("LOCK TABLE tracks IN EXCLUSIVE MODE")
        for _ in range(worker.MAX_ATTEMPTS):
            [message] = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], WaitTimeSeconds=1)[
                "Messages"
            ]
            event = sqs_event([message], arn, importer.settings.region)
            try:
                result = handler(event, LocalContext("test", 1024, 60))
                retried = bool(result["batchItemFailures"])
            except BatchProcessingError:  # every record of the batch failed: all come back
                retried = True
            outcomes.append((int(message["Attributes"]["ApproximateReceiveCount"]), retried))
            sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
            if len(outcomes) < worker.MAX_ATTEMPTS:
                assert jobs.get(db_conn, user, job["id"])["status"] == "running"
        holder.rollback()
    sqs.delete_queue(QueueUrl=url)
    assert [count for count, _ in outcomes] == [1, 2, 3]
    assert [retried for _, retried in outcomes] == [True, True, False]
    failed = jobs.get(db_conn, user, job["id"])
    assert failed["status"] == "failed" and failed["error"] == worker.OUR_FAULT
