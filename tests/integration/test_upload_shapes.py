"""Uploads as people make them, through the import worker on the AWS emulator and a real PostgreSQL:
a zip made by macOS Finder (``__MACOSX/`` and AppleDouble ``._`` files beside every file), one made
on Windows (``\\`` in entry names), by Info-ZIP's ``zip -r``, the export folder anywhere, the
download forwarded inside another zip, a download uploaded in parts; and bad nested zips refused
with nothing committed. The zipped content is a person's real published export
(``../shared/real-exports``) where it matters, synthetic where only a fault matters."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from devtools.synthetic import catalog, extended_records, write_json_array
from myi.imports import jobs
from myi.imports.reader import NESTED
from myi.imports.worker import handle_message
from myi.statistics import maintenance
from tests.fixtures.imports import (
    UPLOADS,
    Importer,
    apple_double,
    empty_queue,
    finder_zip,
    infozip,
    nested_zip,
    real_export,
    windows_zip,
    zip_of,
)
from tests.fixtures.plays import make_user

FOLDER = "Spotify Extended Streaming History"
PERSON = "efrrowini"  # 7,007 records of the new extended format, audio and video files


def as_json(records: list[Any]) -> bytes:
    out = io.BytesIO()
    write_json_array(out, records)
    return out.getvalue()


def outcome(job: dict[str, Any]) -> dict[str, Any]:
    """What an import found: its status, error, records read and every count."""
    return {
        "status": job["status"],
        "error": job["error"],
        "records_read": job["progress"]["records_read"],
        **job["counts"],
    }


def events(conn: psycopg.Connection[Any], user: int) -> int:
    row = conn.execute("SELECT count(*) FROM listening_events WHERE user_id = %s", (user,)).fetchone()
    assert row is not None
    return int(row[0])


def records_in(files: dict[str, bytes]) -> int:
    return sum(len(json.loads(data)) for data in files.values())


def plain(files: dict[str, bytes], folder: str = FOLDER) -> bytes:
    """The download as Spotify sends it: one folder of export files, zipped."""
    return zip_of({f"{folder}/{name}": data for name, data in files.items()})


def imported(importer: Importer, db_conn: Any, data: bytes, label: str) -> dict[str, Any]:
    """The outcome of uploading ``data`` as a fresh user's first import."""
    return outcome(importer.upload(make_user(db_conn, label), data))


def test_a_zip_made_by_macos_finder_imports_with_exactly_the_counts_of_the_original(
    importer: Importer, db_conn: Any
) -> None:
    files = real_export(PERSON)
    reference = imported(importer, db_conn, plain(files), "plain")
    assert reference["status"] == "completed" and reference["records_read"] == records_in(files) == 7007
    assert imported(importer, db_conn, finder_zip(files, FOLDER), "finder-folder") == reference
    assert imported(importer, db_conn, finder_zip(files), "finder-files") == reference


@pytest.mark.parametrize(
    "shape",
    ["at the top", "one level down", "one level down, on Windows", "one level down, by Finder"],
)
def test_the_export_folder_may_be_anywhere_in_the_zip(importer: Importer, db_conn: Any, shape: str) -> None:
    files = real_export(PERSON)
    data = {
        "at the top": zip_of(files),
        "one level down": plain(files, f"my_spotify_data/{FOLDER}"),
        "one level down, on Windows": windows_zip(files, f"my_spotify_data/{FOLDER}"),
        "one level down, by Finder": finder_zip(files, f"my_spotify_data/{FOLDER}"),
    }[shape]
    assert imported(importer, db_conn, data, shape) == imported(importer, db_conn, plain(files), "plain")


def test_a_finder_zip_rezipped_on_windows_drops_the_metadata_under_backslash_names(
    importer: Importer, db_conn: Any
) -> None:
    files = real_export(PERSON)
    tree = {name.replace("/", "\\"): data for name, data in _finder_tree(files).items()}
    data = zip_of(tree)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert any(name.startswith("__MACOSX\\") and "\\._" in name for name in zf.namelist())
    assert imported(importer, db_conn, data, "windows") == imported(importer, db_conn, plain(files), "plain")


def _finder_tree(files: dict[str, bytes]) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(finder_zip(files, FOLDER))) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist() if not info.is_dir()}


def test_a_zip_made_by_info_zip_imports_like_the_same_files_zipped_by_python(
    importer: Importer, db_conn: Any, tmp_path: Any
) -> None:
    files = real_export(PERSON)
    tree = {f"my_spotify_data/{FOLDER}/{name}": data for name, data in files.items()}
    tree[f"my_spotify_data/{FOLDER}/.DS_Store"] = b"\x00\x00\x00\x01Bud1"
    data = infozip(tmp_path, tree)
    assert imported(importer, db_conn, data, "info-zip") == imported(importer, db_conn, plain(files), "plain")


def forwarded(shape: str, download: bytes, tmp_path: Any) -> bytes:
    """``download`` (``my_spotify_data.zip``) zipped once more, as people forward it."""
    if shape == "stored by Python":
        return nested_zip({"my_spotify_data.zip": download}, zipfile.ZIP_STORED)
    if shape == "deflated by Python":
        return nested_zip({"notes.txt": b"from my laptop", "my_spotify_data.zip": download})
    if shape == "by Finder":
        return finder_zip({"my_spotify_data.zip": download})
    if shape == "on Windows":
        return windows_zip({"my_spotify_data.zip": download}, "Downloads")
    if shape == "by Info-ZIP (stored)":
        return infozip(tmp_path, {"my_spotify_data.zip": download})  # zip stores a .zip as it is
    assert shape == "by Info-ZIP (deflated)"
    return infozip(tmp_path, {"my_spotify_data.zip": download}, "-n", ":")


SHAPES = [
    "stored by Python",
    "deflated by Python",
    "by Finder",
    "on Windows",
    "by Info-ZIP (stored)",
    "by Info-ZIP (deflated)",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_a_download_forwarded_inside_another_zip_imports_like_the_download(
    importer: Importer, db_conn: Any, tmp_path: Any, shape: str
) -> None:
    files = real_export(PERSON)
    download = finder_zip(files, FOLDER) if shape == "by Finder" else plain(files)
    data = forwarded(shape, download, tmp_path)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        [outer] = [
            i for i in zf.infolist() if i.filename.endswith("my_spotify_data.zip") and "._" not in i.filename
        ]
        assert outer.compress_type == (zipfile.ZIP_STORED if "stored" in shape else zipfile.ZIP_DEFLATED)
    assert imported(importer, db_conn, data, shape) == imported(importer, db_conn, plain(files), "plain")


def test_a_zip_inside_the_forwarded_download_is_not_read(importer: Importer, db_conn: Any) -> None:
    """One level only: an older download kept inside the download is ignored when the download
    itself arrives inside another zip."""
    files = real_export(PERSON)
    older = plain(
        {
            "Streaming_History_Audio_2012_0.json": as_json(
                list(extended_records(300, tracks=catalog(30), seed=5))
            )
        }
    )
    download = zip_of({**{f"{FOLDER}/{n}": d for n, d in files.items()}, "older/my_spotify_data.zip": older})
    data = nested_zip({"Archive/my_spotify_data.zip": download})
    assert imported(importer, db_conn, data, "nested") == imported(importer, db_conn, plain(files), "plain")


def test_a_forwarded_download_resumes_at_the_same_nested_members(importer: Importer, db_conn: Any) -> None:
    """Batches of 1,000 records, every other one cut short by the clock: the job continues in new
    invocations from checkpoints inside the nested zip's members, and ends exactly as the download
    imported at once."""
    files = real_export(PERSON)
    data = finder_zip({"my_spotify_data.zip": plain(files)})  # deflated: read through saved states
    reference = imported(importer, db_conn, plain(files), "reference")
    calls = {"n": 0}

    def remaining() -> int:
        calls["n"] += 1
        return 10_000 if calls["n"] % 2 else 900_000

    importer.deps.remaining_ms = remaining
    queue = importer.settings.require("import_queue_url", "IMPORT_QUEUE_URL")
    empty_queue(importer.deps.sqs, queue)
    user = make_user(db_conn, "resumed")
    job = importer.upload(user, data)
    checkpoints = []
    while job["status"] in ("running", "queued"):
        row = db_conn.execute("SELECT checkpoint FROM import_jobs WHERE id = %s", (job["id"],)).fetchone()
        checkpoints.append(row[0])
        for m in importer.deps.sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", []):
            handle_message(importer.deps, m["Body"])
            importer.deps.sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        job = jobs.get(db_conn, user, job["id"])
        assert len(checkpoints) < 30
    assert len(checkpoints) >= 3
    assert all(index > NESTED for index in checkpoints[0]["members"])
    assert len({(c["member"], c["record"]) for c in checkpoints}) == len(checkpoints)
    assert outcome(job) == reference
    assert maintenance.verify(db_conn, user) == []


STAT_TABLES = [table.name for table in maintenance.TABLES]


def statistics(conn: psycopg.Connection[Any], user: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every statistic of a user, without the user id: the rows of each stat table (plays or time
    not zero) and the user's stored row counts, plus the plays themselves."""
    out = {}
    for table in maintenance.TABLES:
        keys = ", ".join(table.keys)
        out[table.name] = conn.execute(
            f"SELECT {keys}, plays, ms_played FROM {table.name} "
            "WHERE user_id = %s AND (plays <> 0 OR ms_played <> 0) ORDER BY " + keys,
            (user,),
        ).fetchall()
    out["stat_counts"] = conn.execute(
        "SELECT grain, tracks, artists, albums FROM stat_counts WHERE user_id = %s ORDER BY grain", (user,)
    ).fetchall()
    out["plays"] = conn.execute(
        "SELECT track_id, played_at, ms_played, is_estimated FROM listening_events WHERE user_id = %s "
        "ORDER BY played_at, track_id",
        (user,),
    ).fetchall()
    return out


def test_a_download_uploaded_in_parts_ends_with_the_statistics_of_the_whole(
    importer: Importer, db_conn: Any
) -> None:
    """Each year's file its own import job (latest first, bare files and Finder zips of one file
    alternately) against the whole download at once; then both users' statistics are recomputed
    from their plays (the operators' verify and rebuild) and still agree."""
    files = real_export(PERSON)
    since = datetime(2024, 1, 1, tzinfo=UTC)  # the recent rows hold part of the history too
    whole = make_user(db_conn, "whole", "Europe/Berlin", recent_floor=since)
    parts = make_user(db_conn, "parts", "Europe/Berlin", recent_floor=since)
    job = importer.upload(whole, plain(files))
    assert job["status"] == "completed" and job["progress"]["records_read"] == 7007
    totals = {"records_read": 0, "added": 0, "short_play": 0, "episode": 0}
    for n, (name, data) in enumerate(sorted(files.items(), reverse=True)):
        part = (
            importer.upload(parts, data, name) if n % 2 else importer.upload(parts, finder_zip({name: data}))
        )
        assert part["status"] == "completed", (name, part["error"])
        assert part["progress"]["records_read"] == len(json.loads(data))
        totals["records_read"] += part["progress"]["records_read"]
        totals["added"] += part["counts"]["added"]
        for reason in ("short_play", "episode"):
            totals[reason] += part["counts"]["skipped"][reason]
    assert totals == {
        "records_read": job["progress"]["records_read"],
        "added": job["counts"]["added"],
        "short_play": job["counts"]["skipped"]["short_play"],
        "episode": job["counts"]["skipped"]["episode"],
    }
    expected = statistics(db_conn, whole)
    assert len(expected["plays"]) == job["counts"]["added"] and len(expected["stat_hour"]) > 100
    assert statistics(db_conn, parts) == expected
    for user in (whole, parts):
        assert maintenance.verify(db_conn, user) == []
        maintenance.rebuild(db_conn, user)
    assert statistics(db_conn, parts) == statistics(db_conn, whole) == expected


def _flag_encrypted(data: bytes, name: bytes | None = None) -> bytes:
    """Mark members of a zip (``name`` only, or every one) as encrypted, in the local header and
    the central directory (general-purpose flag bit 0), as a password-protected zip has them."""
    raw = bytearray(data)
    for signature, flags, name_length, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        at = raw.find(signature)
        while at != -1:
            length = int.from_bytes(raw[at + name_length : at + name_length + 2], "little")
            if name is None or raw[at + name_at : at + name_at + length] == name:
                raw[at + flags] |= 0x01
            at = raw.find(signature, at + 4)
    return bytes(raw)


GOOD = as_json(list(extended_records(50, tracks=catalog(20), seed=8)))
LONG = as_json(list(extended_records(2500, tracks=catalog(100), seed=13)))
DOWNLOAD = plain({"Streaming_History_Audio_2020_0.json": GOOD})


def _bzip2_nested() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_BZIP2) as zf:
        zf.writestr("my_spotify_data.zip", DOWNLOAD)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_flag_encrypted(nested_zip({"my_spotify_data.zip": DOWNLOAD}), b"my_spotify_data.zip"), "encrypted"),
        (nested_zip({"my_spotify_data.zip": _flag_encrypted(DOWNLOAD)}, zipfile.ZIP_STORED), "encrypted"),
        (nested_zip({"my_spotify_data.zip": DOWNLOAD[: len(DOWNLOAD) * 2 // 3]}), "not a readable zip"),
        (nested_zip({"my_spotify_data.zip": b"PK\x03\x04" + b"\x00" * 400}), "not a readable zip"),
        (_bzip2_nested(), "compressed in a way MYI cannot read"),
        (
            nested_zip({"my_spotify_data.zip": plain({"Userdata.json": b"{}"})}),
            "no Spotify listening history",
        ),
        (nested_zip({"my_spotify_data.zip": plain({"endsong_0.json": GOOD[:-20]})}), "cut short"),
        (nested_zip({"my_spotify_data.zip": plain({"endsong_0.json": b'{"a": 1}'})}), "an object"),
        (nested_zip({"my_spotify_data.zip": b"\0" * (64 * 1024 * 1024)}), "zip bomb"),
        (
            nested_zip({"my_spotify_data.zip": plain({"endsong_0.json": b"[" + b" " * (40 << 20) + b"]"})}),
            "zip bomb",
        ),
        (  # the first batch (1,000 records) ends long before the fault: it must not commit
            nested_zip(
                {
                    "my_spotify_data.zip": plain(
                        {"Streaming_History_Audio_2019_0.json": LONG, "endsong_0.json": b"[{"}
                    )
                }
            ),
            "cut short",
        ),
        (finder_zip({"Streaming_History_Audio_2019_0.json": LONG[:-40]}, FOLDER), "cut short"),
        (zip_of({f"__MACOSX/{FOLDER}/._Streaming_History_Audio_2019_0.json": apple_double()}), "no Spotify"),
    ],
    ids=[
        "nested zip encrypted",
        "members of the nested zip encrypted",
        "nested zip cut short",
        "nested zip not a zip",
        "nested zip compressed with bzip2",
        "nested zip without exports",
        "export in the nested zip cut short",
        "export in the nested zip an object",
        "nested zip a bomb",
        "bomb in the nested zip",
        "nested fault after a batch",
        "finder zip with a broken export",
        "finder metadata only",
    ],
)
def test_a_bad_upload_of_a_new_shape_fails_with_a_clear_error_and_leaves_nothing(
    importer: Importer, db_conn: Any, data: bytes, message: str
) -> None:
    user = make_user(db_conn)
    importer.deps.settings = importer.settings.replace(import_max_ratio=50)
    job = importer.upload(user, data)
    assert job["status"] == "failed" and message in job["error"], job["error"]
    assert job["counts"]["added"] == 0 and events(db_conn, user) == 0
    assert db_conn.execute("SELECT count(*) FROM stat_user WHERE user_id = %s", (user,)).fetchone() == (0,)


@pytest.mark.parametrize("name", ["infozip_forwarded_stored.zip", "infozip_forwarded_deflated.zip"])
def test_a_download_forwarded_by_info_zip_imports_like_the_download(
    importer: Importer, db_conn: Any, name: str
) -> None:
    """Zips made with Info-ZIP 3.0 and kept in tests/data/uploads (see its README): the tool
    need not be installed to run this."""
    download = (UPLOADS / "infozip_my_spotify_data.zip").read_bytes()
    reference = imported(importer, db_conn, download, "download")
    assert reference["status"] == "completed" and reference["records_read"] == 12
    assert imported(importer, db_conn, (UPLOADS / name).read_bytes(), name) == reference
