"""Exports on a real PostgreSQL and the AWS emulator: the worker writes every stored play once, with
its catalog names, into a zip that zipfile, Info-ZIP and MYI's import reader all read; files split
and named as Spotify's; continuations resume where they stopped; a failure leaves no file and no
upload behind; memory does not follow the size of the history; the routes of API.md."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

from devtools.local import events
from infra.wiring import Function, Route
from myi import aws, partitions
from myi.api import exports as exports_api
from myi.api.app import new_resolver
from myi.auth import sessions
from myi.errors import Conflict, InvalidRequest, NotFound
from myi.exports import formats, jobs, layout, worker, writer
from myi.exports.jobs import ExportConfig
from myi.exports.worker import ExportDeps, handle_message
from myi.imports.reader import Upload, array_records
from myi.ingestion import ingest
from myi.plays import AlbumRef, ArtistRef, Play, TrackRef
from myi.settings import Settings, get_settings
from tests.fixtures.imports import empty_queue
from tests.fixtures.plays import BASE, account_play, api_play, extended_play, make_user

QUEUE = "myi-test-exports"
MIB = 1024 * 1024


# --- the worker on the emulator ------------------------------------------------------------------
@dataclass
class Exporter:
    """Exports run by the worker as the queue would run them, on the emulator and the test database."""

    conn: psycopg.Connection[Any]  # the worker's state connection (and the test's)
    reader: psycopg.Connection[Any]  # the worker's reading connection
    s3: Any
    sqs: Any
    config: ExportConfig
    messages: list[str] = field(default_factory=list)

    def deps(self, **changes: Any) -> ExportDeps:
        s3 = changes.pop("s3", self.s3)
        config = self.config
        if changes.get("config"):
            config = changes.pop("config")
        return ExportDeps(
            conn=self.reader, state_conn=self.conn, s3=s3, sqs=self.sqs, config=config, **changes
        )

    def start(self, user: int, fmt: str = "extended_json") -> str:
        doc = jobs.create(self.conn, self.config, self.sqs, user, fmt, now=datetime.now(UTC))["export"]
        assert doc["status"] == "queued"
        self.messages.extend(self.take_messages())
        return str(doc["id"])

    def take_messages(self) -> list[str]:
        out = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.config.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not got:
                return out
            for m in got:
                out.append(m["Body"])
                self.sqs.delete_message(QueueUrl=self.config.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def drain(self, attempt: int = 1, **changes: Any) -> int:
        """Deliver queued messages (continuations included) until none is left; how many."""
        delivered = 0
        while self.messages:
            body = self.messages.pop(0)
            handle_message(self.deps(**changes), body, attempt=attempt)
            delivered += 1
            self.messages.extend(self.take_messages())
        return delivered

    def export(self, user: int, fmt: str = "extended_json", **changes: Any) -> tuple[dict[str, Any], bytes]:
        export_id = self.start(user, fmt)
        self.drain(**changes)
        return self.finished(user, export_id)

    def finished(self, user: int, export_id: str) -> tuple[dict[str, Any], bytes]:
        doc = jobs.get(self.conn, self.s3, self.config, user, export_id, now=datetime.now(UTC))
        assert doc["status"] == "completed", doc
        assert doc["download"] is not None
        with urllib.request.urlopen(doc["download"]["url"]) as answer:  # noqa: S310 - the emulator
            data = answer.read()
        assert len(data) == doc["size_bytes"]
        return doc, data

    def key(self, user: int, export_id: str) -> str:
        return jobs.object_key(user, uuid.UUID(export_id))

    def uploads_under_way(self, user: int) -> list[dict[str, Any]]:
        got = self.s3.list_multipart_uploads(Bucket=self.config.bucket, Prefix=jobs.user_prefix(user))
        return list(got.get("Uploads", []))

    def objects(self, user: int) -> list[str]:
        got = self.s3.list_objects_v2(Bucket=self.config.bucket, Prefix=jobs.user_prefix(user))
        return [o["Key"] for o in got.get("Contents", [])]


@pytest.fixture
def exporter(
    db_conn: psycopg.Connection[Any], database_url: str, aws_resources: dict[str, str], settings: Settings
) -> Iterator[Exporter]:
    sqs = aws.client("sqs", settings)
    url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    empty_queue(sqs, url)
    config = ExportConfig(bucket=settings.import_bucket, queue_url=url, part_size=5 * MIB)
    s3 = aws.client("s3", settings)
    clear_exports(s3, config.bucket)  # user ids start again at 1 in every test
    with psycopg.connect(database_url, autocommit=True, prepare_threshold=None) as reader:
        yield Exporter(db_conn, reader, s3, sqs, config)


def clear_exports(s3: Any, bucket: str) -> None:
    """Every export file and upload of the emulator's bucket gone."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=jobs.EXPORT_PREFIX):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
    for upload in s3.list_multipart_uploads(Bucket=bucket, Prefix=jobs.EXPORT_PREFIX).get("Uploads", []):
        jobs.abort_upload(s3, bucket, upload["Key"], upload["UploadId"])


# --- reading an export back ----------------------------------------------------------------------
def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        return {name: zf.read(name) for name in zf.namelist()}


def extended_files(data: bytes) -> list[tuple[str, list[dict[str, Any]]]]:
    """The extended-history files in the order of their running number, with their records."""
    files = [
        (name, json.loads(body))
        for name, body in members(data).items()
        if name.startswith(formats.EXTENDED_FOLDER + "/")
    ]
    return sorted(files, key=lambda f: int(f[0].rsplit("_", 1)[1].removesuffix(".json")))


def extended_records(data: bytes) -> list[dict[str, Any]]:
    return [r for _, records in extended_files(data) for r in records]


def account_records(data: bytes) -> list[dict[str, Any]]:
    files = sorted(
        (name, json.loads(body))
        for name, body in members(data).items()
        if name.startswith(formats.ACCOUNT_FOLDER + "/")
    )
    return [r for _, records in files for r in records]


def unzip_test(tmp_path: Path, data: bytes) -> None:
    """Info-ZIP's ``unzip -t`` finds every member sound (skipped without Info-ZIP)."""
    tool = shutil.which("unzip")
    if tool is None:
        return
    path = tmp_path / f"export-{uuid.uuid4().hex[:6]}.zip"
    path.write_bytes(data)
    out = subprocess.run([tool, "-t", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No errors detected" in out.stdout


def read_by_importer(data: bytes) -> list[Any]:
    """Every record MYI's own import reader finds in the zip (its members by content)."""
    upload = Upload(
        io.BytesIO(data),
        len(data),
        filename=formats.DOWNLOAD_NAME,
        max_uncompressed=1 << 34,
        max_ratio=10_000,
    )
    out: list[Any] = []
    for member in upload.candidates():
        out.extend(array_records(upload.open(member), member.name))
    return out


# --- what is stored --------------------------------------------------------------------------------
STORED_SQL = """
SELECT e.played_at, e.ms_played, e.is_estimated, e.origin, t.spotify_id, t.name, al.name,
       ARRAY(SELECT ar.name FROM track_artists ta JOIN artists ar ON ar.id = ta.artist_id
              WHERE ta.track_id = t.id ORDER BY ta.position, ta.artist_id)
  FROM listening_events e JOIN tracks t ON t.id = e.track_id LEFT JOIN albums al ON al.id = t.album_id
 WHERE e.user_id = %s ORDER BY e.played_at, e.track_id
"""


def stored(conn: psycopg.Connection[Any], user: int) -> list[tuple[Any, ...]]:
    return conn.execute(STORED_SQL, (user,)).fetchall()


def ts(at: datetime) -> str:
    """Spotify's ``ts``, with the fraction of a second only where there is one."""
    utc = at.astimezone(UTC)
    if utc.microsecond == 0:
        return utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    if utc.microsecond % 1000 == 0:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expected_record(row: tuple[Any, ...]) -> dict[str, Any]:
    played_at, ms, estimated, _origin, spotify_id, name, album, artists = row
    record: dict[str, Any] = dict.fromkeys(formats.EXTENDED_KEYS)
    record.update(
        ts=ts(played_at),
        ms_played=ms,
        master_metadata_track_name=name or None,
        master_metadata_album_artist_name=artists[0] if artists else None,
        master_metadata_album_album_name=album,
        spotify_track_uri=f"spotify:track:{spotify_id}" if spotify_id else None,
        reason_end="trackdone" if ms < 30_000 else None,
        myi_is_estimated=estimated,
    )
    return record


def track(
    name: str,
    artists: list[tuple[str, str | None]],
    album: tuple[str, str | None] | None,
    sid: str | None,
    duration: int | None = 200_000,
) -> TrackRef:
    refs = tuple(ArtistRef(n, i) for n, i in artists)
    return TrackRef(
        name=name,
        spotify_id=sid,
        artists=refs,
        album=AlbumRef(album[0], album[1], artists=refs[:1]) if album else None,
        duration_ms=duration,
    )


def mixed_history(conn: psycopg.Connection[Any], user: int) -> None:
    """Plays of every kind MYI stores: imported (extended and account data matched to a known track),
    sync plays with an estimate (a short track, one of unknown duration, fractions of a second),
    sync plays an import made exact, plays known only by name, several credited artists, names
    JSON and CSV must quote."""
    at = BASE
    ingest(conn, user, [extended_play(n, at + timedelta(minutes=5 * n), ms=100_000 + n) for n in range(4)])
    ingest(conn, user, [account_play(0, at + timedelta(hours=1), ms=95_000)])  # matched: "Track 0"
    ms = timedelta(milliseconds=1)
    ingest(
        conn,
        user,
        [
            api_play(4, at + timedelta(hours=2) + 123 * ms),
            api_play(5, at + timedelta(hours=2, minutes=4) + 7 * ms),
            Play(
                track(
                    "Tiny",
                    [("Short One", "art0000000000000000short")],
                    ("Shorts", "alb0000000000000000short"),
                    "trk000000000000000short",
                    duration=20_000,
                ),
                at + timedelta(hours=3),
                "api",
                None,
            ),
            Play(
                track(
                    "Nobody Knows How Long",
                    [("Mystery", "art00000000000000mystery")],
                    None,
                    "trk00000000000000mystery",
                    duration=None,
                ),
                at + timedelta(hours=3, minutes=5),
                "api",
                None,
            ),
            Play(
                track(
                    'Duet "Live", Part 1\n',
                    [("Zoë", "art000000000000000000zoe"), ("Ana; Bo", "art000000000000000anabo")],
                    ('Ünïcode, "quoted"', "alb00000000000000unicode"),
                    "trk000000000000000duet1",
                ),
                at + timedelta(hours=4),
                "api",
                None,
            ),
            api_play(8, at + timedelta(hours=5)),
        ],
    )
    ingest(
        conn, user, [extended_play(8, at + timedelta(hours=5) - timedelta(seconds=5), ms=111_000)]
    )  # merged
    names_only = TrackRef(name="Song Nobody Streams", spotify_id=None, artists=(ArtistRef("Bedroom Band"),))
    ingest(
        conn, user, [Play(names_only, at + timedelta(hours=6, minutes=m), "account", 150_000) for m in (0, 7)]
    )


# --- content ---------------------------------------------------------------------------------------
def test_an_extended_export_holds_every_stored_play_once_as_spotify_writes_it(
    exporter: Exporter, db_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    user = make_user(db_conn, timezone="Europe/Berlin")
    mixed_history(db_conn, user)
    rows = stored(db_conn, user)
    kinds = {(r[3], r[2]) for r in rows}
    assert ("api", True) in kinds and ("api", False) in kinds and ("extended", False) in kinds  # merged too
    doc, data = exporter.export(user)
    assert doc["plays"] == len(rows) and doc["format"] == "extended_json" and doc["error"] is None
    files = extended_files(data)
    assert [name for name, _ in files] == [f"{formats.EXTENDED_FOLDER}/Streaming_History_Audio_2024_0.json"]
    records = [r for _, rs in files for r in rs]
    assert records == [expected_record(r) for r in rows]
    for record in records:  # Spotify's keys in Spotify's order, then MYI's own
        assert list(record) == [*formats.EXTENDED_KEYS, "myi_is_estimated"]
    by_name: dict[str, dict[str, Any]] = {}
    for r in records:  # each track's first play
        by_name.setdefault(r["master_metadata_track_name"], r)
    assert by_name["Tiny"]["ms_played"] == 20_000 and by_name["Tiny"]["reason_end"] == "trackdone"
    assert (
        by_name["Nobody Knows How Long"]["ms_played"] == 0
        and by_name["Nobody Knows How Long"]["myi_is_estimated"]
    )
    assert by_name["Track 8"]["ms_played"] == 111_000 and not by_name["Track 8"]["myi_is_estimated"]
    assert by_name["Track 4"]["ts"] == "2024-03-01T14:00:00.123Z"
    assert by_name["Track 0"]["ts"] == "2024-03-01T12:00:00Z"
    assert by_name['Duet "Live", Part 1\n']["master_metadata_album_artist_name"] == "Zoë"
    assert by_name["Song Nobody Streams"]["spotify_track_uri"] is None
    # ... and, so that an import brings them back, once more as account data
    assert account_records(data) == [
        {
            "endTime": f"2024-03-01 18:{m:02d}",
            "artistName": "Bedroom Band",
            "trackName": "Song Nobody Streams",
            "msPlayed": 150_000,
        }
        for m in (0, 7)
    ]
    assert len(read_by_importer(data)) == len(rows) + 2
    unzip_test(tmp_path, data)
    # Spotify's layout: a two-space indented array, raw UTF-8
    body = members(data)[files[0][0]].decode()
    assert body.startswith('[\n  {\n    "ts": "') and body.endswith("  }\n]") and "Zoë" in body


def test_a_csv_export_is_one_row_per_play_with_every_credited_artist(
    exporter: Exporter, db_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    user = make_user(db_conn)
    mixed_history(db_conn, user)
    rows = stored(db_conn, user)
    doc, data = exporter.export(user, "csv")
    assert doc["format"] == "csv" and doc["plays"] == len(rows)
    files = members(data)
    assert list(files) == [formats.CSV_NAME]
    table = list(csv.reader(io.StringIO(files[formats.CSV_NAME].decode())))
    assert table[0] == list(formats.CSV_COLUMNS)
    expected = [
        [
            played_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{played_at.microsecond // 1000:03d}Z",
            str(ms),
            name,
            "; ".join(artists),
            album or "",
            sid or "",
            "api" if origin == "api" else "import",
            "true" if estimated else "false",
        ]
        for played_at, ms, estimated, origin, sid, name, album, artists in rows
    ]
    assert table[1:] == expected
    duet = next(r for r in table[1:] if r[2].startswith("Duet"))
    assert duet[2:4] == ['Duet "Live", Part 1\n', "Zoë; Ana; Bo"]
    unzip_test(tmp_path, data)


def test_an_empty_history_exports_an_empty_file_of_this_year(
    exporter: Exporter, db_conn: psycopg.Connection[Any]
) -> None:
    user = make_user(db_conn)
    doc, data = exporter.export(user)
    year = datetime.now(UTC).year
    assert doc["plays"] == 0
    assert members(data) == {f"{formats.EXTENDED_FOLDER}/Streaming_History_Audio_{year}_0.json": b"[]"}


# --- splitting ---------------------------------------------------------------------------------
def bulk_history(
    conn: psycopg.Connection[Any],
    user: int,
    plays: int,
    *,
    start: datetime = datetime(2019, 6, 1, tzinfo=UTC),
    step: timedelta = timedelta(minutes=4),
    tracks: int = 2_000,
    name_chars: int = 32,
) -> None:
    """``plays`` plays straight into the events (no statistics: an export reads only the events),
    of ``tracks`` tracks with names of ``name_chars`` pseudo-random hex characters."""
    partitions.ensure_range(conn, start, start + step * plays)
    conn.execute("SELECT setseed(0.42)")
    hex_ = " || ".join(f"md5(g::text || '{i}')" for i in range(max(1, name_chars // 32)))
    conn.execute(
        f"""
        INSERT INTO artists (name, name_key)
        SELECT 'Bulk Artist ' || g || ' ' || {hex_}, 'bulk artist ' || g || ' ' || {hex_}
          FROM generate_series(1, 50) g ON CONFLICT DO NOTHING
        """
    )
    conn.execute(
        f"""
        INSERT INTO tracks (spotify_id, name, name_key, artist_key)
        SELECT lpad(g::text, 22, 'B'), 'Song ' || {hex_}, 'song ' || g, 'bulk' FROM generate_series(1, %s) g
        ON CONFLICT DO NOTHING
        """,
        (tracks,),
    )
    conn.execute(
        """
        INSERT INTO track_artists (track_id, artist_id, position)
        SELECT t.id, (SELECT min(id) FROM artists WHERE name LIKE 'Bulk Artist %') + t.id % 50, 0
          FROM tracks t WHERE t.artist_key = 'bulk' ON CONFLICT DO NOTHING
        """
    )
    conn.execute(
        """
        INSERT INTO listening_events (user_id, track_id, played_at, ms_played, is_estimated, origin)
        SELECT %(user)s, (SELECT min(id) FROM tracks WHERE artist_key = 'bulk') + (g * 7919) %% %(tracks)s,
               %(start)s + g * %(step)s + (g %% 1000) * interval '1 millisecond', 30_000 + g %% 200_000,
               g %% 3 = 0, CASE WHEN g %% 3 = 0 THEN 'api' ELSE 'extended' END
          FROM generate_series(0, %(plays)s - 1) g
        """,
        {"user": user, "tracks": tracks, "start": start, "step": step, "plays": plays},
    )


def test_files_split_by_size_and_are_named_by_the_years_of_their_plays(
    exporter: Exporter, db_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layout, "MAX_RECORDS", 1_000)
    user = make_user(db_conn, timezone="Asia/Tokyo")
    # 2,600 plays every 6 h from 2019-12-31 20:00 UTC, already 2020 in Tokyo: 1,000 plays a file
    bulk_history(db_conn, user, 2_600, start=datetime(2019, 12, 31, 20, tzinfo=UTC), step=timedelta(hours=6))
    _, data = exporter.export(user)
    files = extended_files(data)
    names = [name.rsplit("/", 1)[1] for name, _ in files]
    assert names == [
        "Streaming_History_Audio_2020_0.json",
        "Streaming_History_Audio_2020-2021_1.json",
        "Streaming_History_Audio_2021_2.json",
    ]
    assert [len(records) for _, records in files] == [1_000, 1_000, 600]
    assert [r["ts"] for r in extended_records(data)] == [ts(r[0]) for r in stored(db_conn, user)]


def test_a_file_also_ends_at_about_twelve_megabytes(
    exporter: Exporter, db_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layout, "MAX_BYTES", 400_000)
    user = make_user(db_conn)
    bulk_history(db_conn, user, 1_200, name_chars=256)
    _, data = exporter.export(user)
    sizes = [len(body) for name, body in members(data).items()]
    assert len(sizes) > 2
    assert all(size < 400_000 + 5_000 for size in sizes)  # the limit, and at most the record that reached it
    assert len(extended_records(data)) == 1_200


# --- continuations, failures --------------------------------------------------------------------------
class Clock:
    """``remaining_ms`` of a Lambda that runs short after ``calls`` questions (once per invocation)."""

    def __init__(self, calls: int) -> None:
        self.calls, self.asked = calls, 0

    def __call__(self) -> int:
        self.asked += 1
        return 900_000 if self.asked % self.calls else 1_000


@pytest.mark.parametrize("fmt", ["extended_json", "csv"])
def test_a_continuation_resumes_where_the_last_invocation_stopped(
    exporter: Exporter,
    db_conn: psycopg.Connection[Any],
    fmt: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Several invocations, each stopping early, write the same content as one; the upload's parts
    span the invocations and the bytes not yet in a part travel in the checkpoint."""
    monkeypatch.setattr(layout, "MAX_RECORDS", 2_000)
    monkeypatch.setattr(worker, "CHUNK", 1_000)
    user = make_user(db_conn)
    bulk_history(db_conn, user, 24_000, name_chars=128)
    stored_config = ExportConfig(
        bucket=exporter.config.bucket,
        queue_url=exporter.config.queue_url,
        part_size=5 * MIB,
        compress_level=0,
    )
    exporter.config = stored_config  # deflate level 0: several 5 MiB parts from a small history
    _, whole = exporter.export(user, fmt)
    export_id = exporter.start(user, fmt)
    invocations = exporter.drain(remaining_ms=Clock(3))
    _, resumed = exporter.finished(user, export_id)
    assert invocations > 3
    assert members(resumed) == members(whole)
    assert len(resumed) > 5 * MIB  # more than one part
    row = db_conn.execute(
        "SELECT checkpoint, pending, upload_id FROM exports WHERE id = %s", (export_id,)
    ).fetchone()
    assert row == (None, None, None)
    assert exporter.uploads_under_way(user) == []
    unzip_test(tmp_path, resumed)


def test_a_compressed_csv_continues_its_deflate_stream_across_invocations(
    exporter: Exporter, db_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "CHUNK", 500)
    user = make_user(db_conn)
    bulk_history(db_conn, user, 5_000)
    _, whole = exporter.export(user, "csv")
    export_id = exporter.start(user, "csv")
    assert exporter.drain(remaining_ms=Clock(2)) >= 5
    _, resumed = exporter.finished(user, export_id)
    assert members(resumed) == members(whole)


class FailingS3:
    """The emulator's S3, refusing its ``fail_on``-th part upload."""

    def __init__(self, s3: Any, fail_on: int) -> None:
        self._s3, self.fail_on, self.parts = s3, fail_on, 0

    def upload_part(self, **kwargs: Any) -> Any:
        self.parts += 1
        if self.parts == self.fail_on:
            raise RuntimeError("S3 is down")
        return self._s3.upload_part(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def big_export_config(exporter: Exporter) -> ExportConfig:
    return ExportConfig(
        bucket=exporter.config.bucket,
        queue_url=exporter.config.queue_url,
        part_size=5 * MIB,
        compress_level=0,
    )


def test_the_last_failed_delivery_aborts_the_upload_and_leaves_no_file(
    exporter: Exporter, db_conn: psycopg.Connection[Any]
) -> None:
    user = make_user(db_conn)
    bulk_history(db_conn, user, 12_000, name_chars=128)
    exporter.config = big_export_config(exporter)
    export_id = exporter.start(user)
    body = exporter.messages.pop()
    with pytest.raises(RuntimeError):  # a delivery with deliveries left: the message comes back
        handle_message(exporter.deps(s3=FailingS3(exporter.s3, 2)), body, attempt=1)
    assert len(exporter.uploads_under_way(user)) == 1
    handle_message(exporter.deps(s3=FailingS3(exporter.s3, 2)), body, attempt=worker.MAX_ATTEMPTS)
    doc = jobs.get(db_conn, exporter.s3, exporter.config, user, export_id, now=datetime.now(UTC))
    assert doc["status"] == "failed" and doc["error"] == worker.OUR_FAULT and doc["download"] is None
    assert exporter.uploads_under_way(user) == []
    assert exporter.objects(user) == []
    # the user may start again at once, and this one completes
    _, data = exporter.export(user)
    assert len(extended_records(data)) == 12_000


def test_a_redelivery_after_a_crash_starts_again_or_resumes_from_its_checkpoint(
    exporter: Exporter, db_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layout, "MAX_RECORDS", 2_000)
    user = make_user(db_conn)
    bulk_history(db_conn, user, 16_000, name_chars=128)
    exporter.config = big_export_config(exporter)
    _, whole = exporter.export(user)
    export_id = exporter.start(user)
    body = exporter.messages.pop()
    # 1. dies before any checkpoint: the redelivery aborts that upload and starts again
    with pytest.raises(RuntimeError):
        handle_message(exporter.deps(s3=FailingS3(exporter.s3, 2)), body, attempt=1)
    # 2. runs short: a checkpoint and a continuation
    handle_message(exporter.deps(remaining_ms=Clock(2)), body, attempt=2)
    saved = db_conn.execute("SELECT status, checkpoint FROM exports WHERE id = %s", (export_id,)).fetchone()
    assert saved is not None and saved[0] == "queued" and saved[1]["plays"] > 0
    assert len(exporter.uploads_under_way(user)) == 1  # the first attempt's upload was aborted
    continuation = exporter.take_messages()
    assert continuation == [json.dumps({"export_id": export_id})]
    # 3. the continuation dies after uploading a part past the checkpoint: redelivered, it resumes
    with pytest.raises(RuntimeError):
        handle_message(exporter.deps(s3=FailingS3(exporter.s3, 3)), continuation[0], attempt=1)
    handle_message(exporter.deps(), continuation[0], attempt=2)
    _, resumed = exporter.finished(user, export_id)
    assert members(resumed) == members(whole)
    assert exporter.uploads_under_way(user) == []


def test_an_export_failed_meanwhile_stops_and_removes_its_upload(
    exporter: Exporter, db_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "HEARTBEAT_S", 0.0)
    monkeypatch.setattr(worker, "CHUNK", 500)
    user = make_user(db_conn)
    bulk_history(db_conn, user, 3_000)
    export_id = exporter.start(user)
    original = worker._heartbeat

    def stuck_meanwhile(deps: ExportDeps, job: dict[str, Any], plays: int) -> bool:
        db_conn.execute("UPDATE exports SET status = 'failed', error = 'stuck' WHERE id = %s", (job["id"],))
        return original(deps, job, plays)

    monkeypatch.setattr(worker, "_heartbeat", stuck_meanwhile)
    exporter.drain()
    assert exporter.uploads_under_way(user) == [] and exporter.objects(user) == []
    doc = jobs.get(db_conn, exporter.s3, exporter.config, user, export_id, now=datetime.now(UTC))
    assert doc["status"] == "failed"


def test_a_stuck_export_is_failed_by_the_sweep_with_its_upload(
    exporter: Exporter, db_conn: psycopg.Connection[Any]
) -> None:
    user = make_user(db_conn)
    export_id = exporter.start(user)
    upload = exporter.s3.create_multipart_upload(
        Bucket=exporter.config.bucket, Key=exporter.key(user, export_id)
    )
    db_conn.execute(
        "UPDATE exports SET status = 'running', upload_id = %s, updated_at = now() - interval '2 hours' "
        "WHERE id = %s",
        (upload["UploadId"], export_id),
    )
    assert worker.sweep(exporter.deps()) == {"stuck_failed": 1, "live": 0}
    assert exporter.uploads_under_way(user) == []
    doc = jobs.get(db_conn, exporter.s3, exporter.config, user, export_id, now=datetime.now(UTC))
    assert doc["status"] == "failed" and doc["error"] == jobs.STUCK


# --- zip64, memory ---------------------------------------------------------------------------------
def test_zip64_records_are_written_where_offsets_need_them(
    exporter: Exporter, db_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the zip64 limit lowered to 1,000 bytes, every member past it and the end of the zip
    take zip64 records; zipfile, Info-ZIP and the import reader read it the same."""
    monkeypatch.setattr(writer, "ZIP64_LIMIT", 1_000)
    monkeypatch.setattr(layout, "MAX_RECORDS", 100)
    user = make_user(db_conn)
    bulk_history(db_conn, user, 450)
    _, data = exporter.export(user)
    assert b"PK\x06\x06" in data[-200:] and b"PK\x06\x07" in data[-200:]  # zip64 end record and locator
    assert len(extended_records(data)) == 450
    assert len(read_by_importer(data)) == 450
    unzip_test(tmp_path, data)


# The worker alone in a process of its own (the emulator runs in the tests' process, and its
# memory is not the worker's): it prints Python's peak allocation while it ran one export.
_MEASURED_WORKER = """
import sys, tracemalloc
import psycopg
from myi import aws
from myi.exports.jobs import ExportConfig
from myi.exports.worker import ExportDeps, handle_message
from myi.settings import Settings

settings = Settings.from_env()
config = ExportConfig(bucket=sys.argv[2], queue_url=sys.argv[3], part_size=5 * 1024 * 1024, compress_level=0)
with psycopg.connect(settings.database_url, autocommit=True) as reader, \\
        psycopg.connect(settings.database_url, autocommit=True) as state:
    deps = ExportDeps(reader, state, aws.client("s3", settings), aws.client("sqs", settings), config)
    tracemalloc.start()
    handle_message(deps, sys.argv[1])
    print(tracemalloc.get_traced_memory()[1])
"""


def measured_export(exporter: Exporter, user: int) -> tuple[int, int]:
    """Python's peak allocation of a worker process exporting the user's history (deflate level 0,
    so that the file is as large as what was written), and the bytes written."""
    export_id = exporter.start(user)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURED_WORKER,
            exporter.messages.pop(),
            exporter.config.bucket,
            str(exporter.config.queue_url),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING"},
        check=True,
    )
    _, data = exporter.finished(user, export_id)
    return int(out.stdout.split()[-1]), len(data)


def test_memory_stays_flat_whatever_the_history_holds(
    exporter: Exporter, db_conn: psycopg.Connection[Any]
) -> None:
    """The worker's peak allocation: the chunks of plays read ahead, the file being gathered and two
    upload parts; the same for a history three times as long, and less than the file it writes."""
    small, large = make_user(db_conn), make_user(db_conn, spotify_id="heavy")
    bulk_history(db_conn, small, 25_000, name_chars=128)
    bulk_history(db_conn, large, 75_000, name_chars=128)
    small_peak, small_size = measured_export(exporter, small)
    large_peak, large_size = measured_export(exporter, large)
    assert large_size > 2.5 * small_size
    assert large_peak < small_peak + 4 * MIB, (small_peak, large_peak)
    assert large_peak < large_size, (large_peak, large_size)
    print(
        f"peak allocation {small_peak / MIB:.1f} MiB for {small_size / MIB:.1f} MiB written, "
        f"{large_peak / MIB:.1f} MiB for {large_size / MIB:.1f} MiB"
    )


def test_the_lambda_handler_writes_an_export_from_its_sqs_message_and_sweeps_on_schedule(
    exporter: Exporter, db_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``functions/export_worker/handler.py`` as Lambda runs it: an SQS event of the queue's message
    (its settings from the environment, as the wiring will give them), and the sweep's schedule."""
    from devtools.local.context import LocalContext
    from devtools.local.events import sqs_event
    from devtools.local.runtime import REPO_ROOT, load_handler

    monkeypatch.setenv("EXPORT_QUEUE_URL", str(exporter.config.queue_url))
    get_settings.cache_clear()
    handler = load_handler(REPO_ROOT / "functions", "export_worker")
    user = make_user(db_conn)
    ingest(db_conn, user, [extended_play(n, BASE + timedelta(minutes=n)) for n in range(5)])
    export_id = exporter.start(user)
    exporter.sqs.send_message(QueueUrl=exporter.config.queue_url, MessageBody=exporter.messages.pop())
    [message] = exporter.sqs.receive_message(QueueUrl=exporter.config.queue_url, AttributeNames=["All"])[
        "Messages"
    ]
    arn = exporter.sqs.get_queue_attributes(QueueUrl=exporter.config.queue_url, AttributeNames=["QueueArn"])
    event = sqs_event([message], arn["Attributes"]["QueueArn"], get_settings().region)
    assert handler(event, LocalContext("export-worker", 1024, 900)) == {"batchItemFailures": []}
    doc, data = exporter.finished(user, export_id)
    assert doc["plays"] == 5 and len(extended_records(data)) == 5
    swept = handler(
        {"source": "aws.events", "detail-type": "Scheduled Event"}, LocalContext("export-worker", 1024, 900)
    )
    assert swept in ({"stuck_failed": 0, "live": 0}, {"dormant": True})
    get_settings.cache_clear()


# --- the jobs ----------------------------------------------------------------------------------------
def test_one_export_runs_per_user_and_another_users_export_is_not_found(
    exporter: Exporter, db_conn: psycopg.Connection[Any]
) -> None:
    user, other = make_user(db_conn), make_user(db_conn, spotify_id="other")
    first = exporter.start(user)
    with pytest.raises(Conflict):
        exporter.start(user, "csv")
    exporter.start(other)  # others are not held up
    with pytest.raises(NotFound):
        jobs.get(db_conn, exporter.s3, exporter.config, other, first, now=datetime.now(UTC))
    with pytest.raises(NotFound):
        jobs.get(db_conn, exporter.s3, exporter.config, user, "not-a-uuid", now=datetime.now(UTC))
    with pytest.raises(InvalidRequest):
        jobs.create(db_conn, exporter.config, exporter.sqs, user, "xml", now=datetime.now(UTC))
    exporter.drain()
    second = exporter.start(user, "csv")  # the first has ended
    listed = jobs.page(
        db_conn, exporter.s3, exporter.config, user, limit=1, cursor=None, now=datetime.now(UTC)
    )
    assert [i["id"] for i in listed["items"]] == [second] and listed["next"]
    rest = jobs.page(
        db_conn, exporter.s3, exporter.config, user, limit=5, cursor=listed["next"], now=datetime.now(UTC)
    )
    assert [i["id"] for i in rest["items"]] == [first] and rest["next"] is None
    assert rest["items"][0]["download"] is not None


def test_a_stuck_export_no_longer_blocks_a_new_one(
    exporter: Exporter, db_conn: psycopg.Connection[Any]
) -> None:
    user = make_user(db_conn)
    first = exporter.start(user)
    db_conn.execute("UPDATE exports SET updated_at = now() - interval '1 hour' WHERE id = %s", (first,))
    exporter.start(user)
    doc = jobs.get(db_conn, exporter.s3, exporter.config, user, first, now=datetime.now(UTC))
    assert doc["status"] == "failed" and doc["error"] == jobs.STUCK


def test_no_download_once_the_file_has_expired(exporter: Exporter, db_conn: psycopg.Connection[Any]) -> None:
    user = make_user(db_conn)
    doc, _ = exporter.export(user)
    assert doc["expires_at"] is not None
    later = datetime.now(UTC) + timedelta(days=exporter.config.ttl_days, minutes=1)
    assert jobs.get(db_conn, exporter.s3, exporter.config, user, doc["id"], now=later)["download"] is None


def test_deleting_a_users_exports_removes_files_and_uploads_under_way(
    exporter: Exporter, db_conn: psycopg.Connection[Any]
) -> None:
    user, other = make_user(db_conn), make_user(db_conn, spotify_id="stays")
    exporter.export(user)
    kept, _ = exporter.export(other)
    exporter.s3.create_multipart_upload(
        Bucket=exporter.config.bucket, Key=f"{jobs.user_prefix(user)}x/my_spotify_data.zip"
    )
    assert jobs.delete_user_exports(exporter.s3, exporter.config.bucket, user) == 1
    assert exporter.objects(user) == [] and exporter.uploads_under_way(user) == []
    assert exporter.objects(other) == [jobs.object_key(other, uuid.UUID(kept["id"]))]


def test_the_config_reads_the_settings_and_their_variables() -> None:
    """The settings' export fields, read from their variables; the bucket defaults to the import one."""
    read = Settings.from_env(
        {"IMPORT_BUCKET": "files", "EXPORT_QUEUE_URL": "https://q", "EXPORT_TTL_DAYS": "3"}
    )
    config = ExportConfig.from_settings(read)
    assert (config.bucket, config.queue_url, config.ttl_days, config.download_url_ttl_s) == (
        "files",
        "https://q",
        3,
        300,
    )
    fields = Settings(import_bucket="files", export_bucket="exports", export_ttl_days=9)
    assert (ExportConfig.from_settings(fields).bucket, ExportConfig.from_settings(fields).ttl_days) == (
        "exports",
        9,
    )


# --- the routes ----------------------------------------------------------------------------------------
ROUTES = [
    (Route("POST", "/me/exports"), None),
    (Route("GET", "/me/exports"), None),
    (Route("GET", "/me/exports/{id}"), None),
]


@pytest.fixture
def api(exporter: Exporter, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[int, Any]]]:
    """The export routes in a resolver of their own (as app.py will include them), driven with API
    Gateway events; ``call(method, path, cookie=..., body=..., params=...)``."""
    monkeypatch.setenv("EXPORT_QUEUE_URL", str(exporter.config.queue_url))
    get_settings.cache_clear()
    app: APIGatewayHttpResolver = new_resolver()
    app.include_router(exports_api.router)
    fn = Function(name="api", description="", timeout_s=29, memory_mb=1024)
    routes = [(route, fn) for route, _ in ROUTES]

    def call(
        method: str, path: str, *, cookie: str | None = None, body: Any = None, **params: Any
    ) -> tuple[int, Any]:
        match, _ = events.match_route(routes, method, path)
        assert match is not None
        headers = [("content-type", "application/json")] if body is not None else []
        if cookie:
            headers.append(("cookie", f"{sessions.COOKIE}={cookie}"))
        event = events.http_to_event(
            method=method,
            raw_path=path,
            raw_query=urlencode(params),
            headers=headers,
            body=json.dumps(body).encode() if body is not None else b"",
            match=match,
            source_ip="127.0.0.1",
            host="localhost",
            now=datetime.now(UTC),
        )
        result = app.resolve(event, None)
        text = result.get("body") or ""
        return int(result["statusCode"]), json.loads(text) if text else None

    yield call
    get_settings.cache_clear()


def test_the_routes_start_list_and_hand_out_an_export(
    api: Callable[..., tuple[int, Any]], exporter: Exporter, db_conn: psycopg.Connection[Any]
) -> None:
    settings = get_settings()
    user, other = make_user(db_conn), make_user(db_conn, spotify_id="someone-else")
    mine = sessions.create(db_conn, user, settings, now=datetime.now(UTC), user_agent="tests")
    theirs = sessions.create(db_conn, other, settings, now=datetime.now(UTC), user_agent="tests")
    ingest(db_conn, user, [extended_play(n, BASE + timedelta(minutes=n)) for n in range(3)])

    assert api("POST", "/me/exports", body={"format": "extended_json"})[0] == 401
    status, body = api("POST", "/me/exports", cookie=mine, body={"format": "xml"})
    assert status == 400 and body["error"]["code"] == "invalid_request"
    status, body = api("POST", "/me/exports", cookie=mine, body={"format": "extended_json"})
    assert status == 202 and body["export"]["status"] == "queued" and body["export"]["download"] is None
    export_id = body["export"]["id"]
    status, body = api("POST", "/me/exports", cookie=mine, body={"format": "csv"})
    assert status == 409 and body["error"]["code"] == "conflict"
    status, body = api("GET", f"/me/exports/{export_id}", cookie=theirs)
    assert status == 404 and body["error"]["code"] == "not_found"

    exporter.messages.extend(exporter.take_messages())
    exporter.drain()
    status, body = api("GET", f"/me/exports/{export_id}", cookie=mine)
    assert status == 200 and body["status"] == "completed" and body["plays"] == 3
    first_url = body["download"]["url"]
    with urllib.request.urlopen(first_url) as answer:  # noqa: S310 - the emulator
        assert len(extended_records(answer.read())) == 3
    status, listed = api("GET", "/me/exports", cookie=mine, limit=10)
    assert status == 200 and [i["id"] for i in listed["items"]] == [export_id] and listed["next"] is None
    assert listed["items"][0]["download"]["url"]
    assert api("GET", "/me/exports", cookie=theirs)[1]["items"] == []
