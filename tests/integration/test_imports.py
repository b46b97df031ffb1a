"""The import pipeline on the AWS emulator and a real PostgreSQL: formats, counts that add up,
re-imports, merges with synced plays, bad files, resumption."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devtools.paths import REPO
from devtools.synthetic import (
    account_records,
    catalog,
    extended_records,
    write_extended_zip,
    write_json_array,
)
from myi import db
from myi.imports import jobs
from myi.imports.worker import WorkerDeps, handle_message, sweep
from myi.ingestion import ingest
from myi.plays import AlbumRef, ArtistRef, Play, TrackRef
from myi.statistics import maintenance
from tests.fixtures.imports import Importer, empty_queue, s3_event, zip_of
from tests.fixtures.plays import make_user

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "spotify" / "samples"


def as_json(records: list[dict[str, Any]]) -> bytes:
    out = io.BytesIO()
    write_json_array(out, records)
    return out.getvalue()


def total(job: dict[str, Any]) -> int:
    c = job["counts"]
    return c["added"] + c["merged"] + c["duplicates"] + sum(c["skipped"].values())


def events(conn: psycopg.Connection[Any], user: int) -> int:
    row = conn.execute("SELECT count(*) FROM listening_events WHERE user_id = %s", (user,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_multi_file_export_imports_every_record_exactly_once(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    tracks = catalog(300)
    new = list(extended_records(2500, tracks=tracks, seed=3))
    old = list(extended_records(800, tracks=tracks, seed=4, start=datetime(2012, 1, 1, tzinfo=UTC), old=True))
    data = zip_of(
        {
            "Spotify Extended Streaming History/Streaming_History_Audio_2016_0.json": as_json(new[:1500]),
            "Spotify Extended Streaming History/Streaming_History_Audio_2017_1.json": as_json(new[1500:]),
            "MyData/endsong_0.json": as_json(old),
            "Spotify Extended Streaming History/Streaming_History_Video_2020.json": (
                SAMPLES / "synthetic_Streaming_History_Audio_2024-2025_0.json"
            ).read_bytes(),
            "Spotify Account Data/StreamingHistory_podcast_0.json": (
                SAMPLES / "synthetic_StreamingHistory_podcast_0.json"
            ).read_bytes(),
            "Spotify Account Data/Userdata.json": json.dumps({"username": "x", "country": "DE"}),
            "Spotify Account Data/Playlist1.json": json.dumps({"playlists": []}),
            "Spotify Account Data/Read_Me_First.pdf": b"%PDF",
        }
    )
    job = importer.upload(user, data)
    assert job["status"] == "completed", job["error"]
    assert job["progress"]["records_read"] == 2500 + 800 + 6 + 1 == total(job)
    assert job["progress"]["percent"] == 100.0 and job["progress"]["bytes_read"] == len(data)
    skipped = job["counts"]["skipped"]
    assert skipped["episode"] >= 2 and skipped["audiobook"] >= 1 and skipped["short_play"] >= 1
    assert job["counts"]["added"] == events(db_conn, user) > 2500
    assert job["counts"]["merged"] == 0
    assert maintenance.verify(db_conn, user) == []


def test_the_same_file_twice_adds_nothing_the_second_time(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    records = list(extended_records(1200, tracks=catalog(100), seed=5))
    first = importer.upload(user, as_json(records), "Streaming_History_Audio_2020_0.json")
    second = importer.upload(user, as_json(records), "Streaming_History_Audio_2020_0.json")
    assert first["status"] == second["status"] == "completed"
    assert second["counts"]["added"] == 0
    assert second["counts"]["duplicates"] == first["counts"]["added"] + first["counts"]["duplicates"]
    assert second["counts"]["skipped"] == first["counts"]["skipped"]
    assert events(db_conn, user) == first["counts"]["added"]
    assert maintenance.verify(db_conn, user) == []


def test_account_data_overlapping_an_extended_history_adds_nothing(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    records = list(extended_records(900, tracks=catalog(80), seed=6))
    extended = importer.upload(user, as_json(records), "Streaming_History_Audio_2020_0.json")
    account = account_records(records)
    overlap = importer.upload(user, as_json(account), "StreamingHistory_music_0.json")
    assert overlap["status"] == "completed", overlap["error"]
    assert overlap["counts"]["added"] == 0
    plays = overlap["counts"]["duplicates"] + overlap["counts"]["merged"]
    assert plays + overlap["counts"]["skipped"]["short_play"] == len(account)
    assert events(db_conn, user) == extended["counts"]["added"]
    assert maintenance.verify(db_conn, user) == []


def test_an_import_after_sync_makes_the_synced_plays_exact(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    records = [r for r in extended_records(300, tracks=catalog(40), seed=7) if r["spotify_track_uri"]]
    records = [r for r in records if not r["incognito_mode"] and r["ms_played"] >= 30_000][:50]
    synced = []
    for r in records:
        ended = datetime.fromisoformat(r["ts"].replace("Z", "+00:00")) + timedelta(seconds=2)
        artist = ArtistRef(
            r["master_metadata_album_artist_name"],
            f"ar{abs(hash(r['master_metadata_album_artist_name'])) % 10**19:019d}",
        )
        track = TrackRef(
            r["master_metadata_track_name"],
            r["spotify_track_uri"].rsplit(":", 1)[1],
            (artist,),
            AlbumRef(r["master_metadata_album_album_name"], None, (artist,)),
            duration_ms=400_000,
        )
        synced.append(Play(track, ended, "api", None))
    assert ingest(db_conn, user, synced).added == 50
    job = importer.upload(user, as_json(records), "Streaming_History_Audio_2020_0.json")
    assert job["counts"]["merged"] == 50 and job["counts"]["added"] == 0
    row = db_conn.execute(
        "SELECT bool_or(is_estimated), sum(ms_played) FROM listening_events WHERE user_id = %s", (user,)
    ).fetchone()
    assert row == (False, sum(r["ms_played"] for r in records))
    assert maintenance.verify(db_conn, user) == []


def test_a_bare_json_file_of_each_format_imports(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    for sample in sorted(SAMPLES.glob("*.json")):
        job = importer.upload(user, sample.read_bytes(), sample.name)
        assert job["status"] == "completed", (sample.name, job["error"])
        assert total(job) == len(json.loads(sample.read_text()))
    assert maintenance.verify(db_conn, user) == []


def _encrypted(data: bytes) -> bytes:
    """Mark every member of a zip as encrypted (flag bit 0), as a password-protected zip has it."""
    raw = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        while at != -1:
            raw[at + offset] |= 0x01
            at = raw.find(signature, at + 4)
    return bytes(raw)


def _bomb() -> bytes:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("Streaming_History_Audio_2020_0.json", "w") as member,
    ):
        member.write(b"[" + b" " * (40 * 1024 * 1024) + b"]")
    return buffer.getvalue()


GOOD = as_json(list(extended_records(50, tracks=catalog(20), seed=8)))


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("my_spotify_data.zip", b"\x89PNG\r\n\x1a\n not an export", "neither a zip file nor JSON"),
        ("my_spotify_data.zip", b"PK\x03\x04 truncated zip", "not a readable zip"),
        (
            "my_spotify_data.zip",
            zip_of({"Userdata.json": "{}", "notes.txt": "hi"}),
            "no Spotify listening history",
        ),
        ("Streaming_History_Audio_2020_0.json", GOOD[: len(GOOD) // 2], "cut short"),
        ("Streaming_History_Audio_2020_0.json", b'[{"ts": "2020-01-01T00:00:00Z",, }]', "not valid JSON"),
        (
            "Streaming_History_Audio_2020_0.json",
            b'{"ts": "2020-01-01T00:00:00Z", "ms_played": 1}',
            "an object",
        ),
        ("my_spotify_data.zip", zip_of({"x/Streaming_History_Audio_2020_0.json": GOOD[:-20]}), "cut short"),
        ("my_spotify_data.zip", zip_of({"Streaming_History_Audio_2020_0.json": '{"a": 1}'}), "an object"),
        (
            "my_spotify_data.zip",
            _encrypted(zip_of({"Streaming_History_Audio_2020_0.json": GOOD})),
            "encrypted",
        ),
        ("my_spotify_data.zip", _bomb(), "zip bomb"),
        ("data.json", b'[{"name": "not a play"}]', "not a Spotify listening history"),
    ],
)
def test_a_bad_file_fails_with_a_clear_error_and_leaves_nothing(
    importer: Importer, db_conn: Any, filename: str, data: bytes, message: str
) -> None:
    user = make_user(db_conn)
    importer.deps.settings = importer.settings.replace(import_max_ratio=50)
    job = importer.upload(user, data, filename)
    assert job["status"] == "failed"
    assert message in job["error"]
    assert events(db_conn, user) == 0
    assert db_conn.execute("SELECT count(*) FROM stat_user WHERE user_id = %s", (user,)).fetchone() == (0,)


LONG = as_json(list(extended_records(2500, tracks=catalog(100), seed=13)))


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("Streaming_History_Audio_2020_0.json", LONG[:-40], "cut short"),
        (
            "my_spotify_data.zip",
            zip_of(
                {
                    "a/Streaming_History_Audio_2019_0.json": LONG,
                    "a/Streaming_History_Audio_2020_1.json": b"[{",
                }
            ),
            "cut short",
        ),
        (
            "my_spotify_data.zip",
            zip_of(
                {
                    "a/Streaming_History_Audio_2019_0.json": LONG,
                    "a/Streaming_History_Audio_2020_1.json": b"[" + b" " * (40 * 1024 * 1024) + b"]",
                }
            ),
            "zip bomb",
        ),
    ],
)
def test_a_file_found_bad_after_a_batch_of_records_commits_nothing(
    importer: Importer, db_conn: Any, filename: str, data: bytes, message: str
) -> None:
    """The first batch (1,000 records here) ends long before the fault: it does not commit until
    the rest of the file has been read through."""
    user = make_user(db_conn)
    importer.deps.settings = importer.settings.replace(import_max_ratio=50)
    job = importer.upload(user, data, filename)
    assert job["status"] == "failed" and message in job["error"], job["error"]
    assert job["counts"]["added"] == 0 and events(db_conn, user) == 0
    assert db_conn.execute("SELECT count(*) FROM stat_user WHERE user_id = %s", (user,)).fetchone() == (0,)


def test_records_of_the_wrong_types_count_as_invalid_in_a_sound_file(
    importer: Importer, db_conn: Any
) -> None:
    user = make_user(db_conn)
    good = list(extended_records(20, tracks=catalog(10), seed=9))
    bad: list[Any] = [42, "text", None, {"ts": 5, "ms_played": "x"}, {**good[0], "ms_played": None}]
    job = importer.upload(user, as_json(good + bad), "Streaming_History_Audio_2020_0.json")
    assert job["status"] == "completed"
    assert job["counts"]["skipped"]["invalid"] == 5 and total(job) == 25


def test_entry_names_that_climb_out_are_only_names(importer: Importer, db_conn: Any, tmp_path: Path) -> None:
    user = make_user(db_conn)
    data = zip_of({"../../etc/Streaming_History_Audio_2020_0.json": GOOD, "/abs/endsong_0.json": GOOD})
    before = set(os.listdir(tmp_path.parent))
    job = importer.upload(user, data)
    assert job["status"] == "completed" and job["progress"]["records_read"] == 100
    assert set(os.listdir(tmp_path.parent)) == before


def test_an_object_that_matches_no_job_or_another_users_job_is_refused(
    importer: Importer, db_conn: Any
) -> None:
    alice, bob = make_user(db_conn, "alice"), make_user(db_conn, "bob")
    bobs_job = importer.create(bob)
    bucket = importer.settings.import_bucket
    for key in (
        f"uploads/{alice}/{bobs_job['id']}/upload",
        f"uploads/{alice}/unknown/upload",
        "elsewhere/x.zip",
    ):
        importer.deps.s3.put_object(Bucket=bucket, Key=key, Body=GOOD)
        handle_message(importer.deps, s3_event(bucket, key, len(GOOD)))
    assert events(db_conn, alice) == events(db_conn, bob) == 0
    assert jobs.get(db_conn, bob, bobs_job["id"])["status"] == "awaiting_upload"


def test_an_object_larger_than_the_limit_is_refused(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    importer.deps.settings = importer.settings.replace(max_upload_bytes=1000)
    job = importer.upload(user, GOOD, "Streaming_History_Audio_2020_0.json")
    assert job["status"] == "failed" and "larger" in job["error"] and events(db_conn, user) == 0


def test_a_worker_short_of_time_continues_in_a_new_invocation(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    records = as_json(list(extended_records(3500, tracks=catalog(200), seed=10)))
    reference_user = make_user(db_conn, "reference")
    reference = importer.upload(reference_user, records, "Streaming_History_Audio_2020_0.json")
    calls = {"n": 0}

    def remaining() -> int:
        calls["n"] += 1
        return 10_000 if calls["n"] % 2 else 900_000  # every other batch: time is short

    importer.deps.remaining_ms = remaining
    queue = importer.settings.require("import_queue_url", "IMPORT_QUEUE_URL")
    sqs = importer.deps.sqs
    empty_queue(sqs, queue)
    job = importer.upload(user, records, "Streaming_History_Audio_2020_0.json")
    started = job["started_at"]
    rounds = 0
    seen = set()
    while job["status"] in ("running", "queued"):
        seen.add(job["status"])
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, WaitTimeSeconds=1).get(
            "Messages", []
        )
        for m in messages:
            if "import_id" in m["Body"]:
                handle_message(importer.deps, m["Body"])
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        job = jobs.get(db_conn, user, job["id"])
        rounds += 1
        assert rounds < 50
    assert rounds > 1 and job["status"] == "completed"
    assert "queued" in seen and job["started_at"] == started  # waiting for its next invocation
    assert job["counts"] == reference["counts"] and job["progress"]["records_read"] == 3500


def test_progress_moves_while_a_batch_is_being_written(
    importer: Importer, db_conn: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction of 5,000 records in ingestion calls of 1,000: the job's progress (written
    from a connection of its own) moves with every call, before anything commits."""
    from myi.imports import worker

    monkeypatch.setattr(worker, "BULK_BATCH_SIZE", 1000)
    user = make_user(db_conn)
    records = as_json(list(extended_records(5000, tracks=catalog(200), seed=12)))
    seen: list[tuple[int, int]] = []
    with psycopg.connect(database_url, autocommit=True) as observer, db.connect(importer.settings) as live:

        def remaining() -> int:
            job = observer.execute(
                "SELECT id FROM import_jobs WHERE user_id = %s AND status = 'running'", (user,)
            ).fetchone()
            doc = jobs.get(observer, user, str(job[0]))
            seen.append((doc["progress"]["records_read"], doc["counts"]["added"]))
            return 900_000

        importer.deps.settings = importer.settings.replace(import_batch_size=5000)
        importer.deps.remaining_ms = remaining
        importer.deps.progress_conn = live
        job = importer.upload(user, records, "Streaming_History_Audio_2020_0.json")
    # (records read, plays added) as the SPA sees them: nothing commits while the batch is read
    assert seen[:5] == [(1000, 0), (2000, 0), (3000, 0), (4000, 0), (5000, 0)]
    assert job["status"] == "completed" and job["progress"]["records_read"] == 5000


WORKER = """
import sys, uuid
from myi import aws, db
from myi.imports.worker import WorkerDeps, run
from myi.settings import Settings
s = Settings.from_env()
deps = WorkerDeps(settings=s, conn=db.connect(s), s3=aws.client("s3", s), sqs=aws.client("sqs", s))
run(deps, uuid.UUID(sys.argv[1]))
"""


def test_a_worker_killed_mid_file_resumes_to_exactly_the_same_result(
    importer: Importer, db_conn: Any, database_url: str, tmp_path: Path
) -> None:
    zip_path = tmp_path / "export.zip"
    write_extended_zip(zip_path, 40_000, seed=11)
    reference_user = make_user(db_conn, "reference")
    reference = importer.upload(reference_user, zip_path)
    assert reference["status"] == "completed"

    user = make_user(db_conn)
    job = importer.create(user, size=zip_path.stat().st_size)
    key = jobs.object_key(user, uuid.UUID(job["id"]))
    importer.deps.s3.put_object(Bucket=importer.settings.import_bucket, Key=key, Body=zip_path.read_bytes())
    env = {**os.environ, "DATABASE_URL": database_url, "IMPORT_BATCH_SIZE": "1000"}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, job["id"]], cwd=REPO, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        progress = jobs.get(db_conn, user, job["id"])["progress"]["records_read"]
        if progress >= 5000:
            break
        assert worker.poll() is None, "the worker finished before it could be killed"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    for _ in range(200):  # the server ends the dead worker's session (and its lock) on its own
        if db_conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone() == (0,):
            break
        time.sleep(0.05)
    interrupted = jobs.get(db_conn, user, job["id"])
    assert interrupted["status"] == "running" and 0 < interrupted["progress"]["records_read"] < 40_000

    handle_message(importer.deps, s3_event(importer.settings.import_bucket, key, zip_path.stat().st_size))
    resumed = jobs.get(db_conn, user, job["id"])
    assert resumed["status"] == "completed", resumed["error"]
    assert resumed["counts"] == reference["counts"]
    assert resumed["progress"]["records_read"] == 40_000 == total(resumed)
    assert events(db_conn, user) == events(db_conn, reference_user)
    assert maintenance.verify(db_conn, user) == []


def test_the_sweep_fails_stuck_and_abandoned_jobs(importer: Importer, db_conn: Any) -> None:
    user = make_user(db_conn)
    stuck = importer.create(user)
    lost = importer.create(user)  # handed to a continuation that never came
    abandoned = importer.create(user)
    db_conn.execute(
        "UPDATE import_jobs SET status = 'running', updated_at = now() - interval '2 hours' WHERE id = %s",
        (stuck["id"],),
    )
    db_conn.execute(
        "UPDATE import_jobs SET status = 'queued', updated_at = now() - interval '2 hours' WHERE id = %s",
        (lost["id"],),
    )
    db_conn.execute(
        "UPDATE import_jobs SET created_at = now() - interval '1 day' WHERE id = %s", (abandoned["id"],)
    )
    fresh = importer.create(user)
    deps = WorkerDeps(settings=importer.settings, conn=db_conn, s3=importer.deps.s3, sqs=importer.deps.sqs)
    assert sweep(deps) == {"stuck_failed": 2, "abandoned": 1, "live": 1}
    assert jobs.get(db_conn, user, stuck["id"])["error"].startswith("The import stopped making progress")
    assert jobs.get(db_conn, user, lost["id"])["status"] == "failed"
    assert jobs.get(db_conn, user, abandoned["id"])["status"] == "failed"
    assert jobs.get(db_conn, user, fresh["id"])["status"] == "awaiting_upload"


def test_names_with_characters_postgresql_cannot_store_are_imported_without_them(
    importer: Importer, db_conn: Any
) -> None:
    """A NUL character (which no PostgreSQL text holds) in a crafted export's names."""
    user = make_user(db_conn)
    [record] = list(extended_records(1, tracks=catalog(1), seed=3))
    record = {
        **record,
        "master_metadata_track_name": "Null\u0000Track",
        "master_metadata_album_artist_name": "A\u0000",
    }
    job = importer.upload(user, as_json([record]), "Streaming_History_Audio_2020_0.json")
    assert job["status"] == "completed", job["error"]
    row = db_conn.execute(
        "SELECT x.name, a.name FROM listening_events e JOIN tracks x ON x.id = e.track_id "
        "JOIN track_artists ta ON ta.track_id = x.id JOIN artists a ON a.id = ta.artist_id "
        "WHERE e.user_id = %s",
        (user,),
    ).fetchone()
    assert row == ("NullTrack", "A")
