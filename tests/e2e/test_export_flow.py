"""Exporting a history through the local runtime and importing it into another account, the way the
SPA does: start the export, poll until it is done, download the zip from its presigned URL, upload
it as the other user's import; both users then have the same statistics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.fakespotify import FakeSpotify
from devtools.synthetic import write_extended_zip
from tests.e2e.conftest import print_log_on_failure, session, sign_in
from tests.e2e.test_import_flow import upload, wait_done
from tests.fixtures.local_runtime import LocalRuntime

log_on_failure = pytest.fixture(autouse=True)(print_log_on_failure)


def wait_exported(client: httpx.Client, export_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = client.get(f"/me/exports/{export_id}")
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        if doc["status"] in ("completed", "failed"):
            return doc
        time.sleep(0.25)
    raise AssertionError(f"the export did not finish: {doc}")


def statistics(client: httpx.Client) -> tuple[Any, ...]:
    overview = client.get("/me/stats/overview", params={"range": "all"}).json()
    top = client.get("/me/stats/top/tracks", params={"range": "all", "limit": 50}).json()
    return (
        overview["plays"],
        overview["ms_played"],
        [(t["id"], t["plays"], t["ms_played"]) for t in top["items"]],
    )


def test_an_export_imports_back_into_another_account_with_the_same_statistics(
    runtime: LocalRuntime, fake: FakeSpotify, tmp_path: Path
) -> None:
    # Two listeners Spotify has no recent plays for: their histories are their imports only.
    fake.world.add_user("exporter", "Exporter")
    fake.world.add_user("importer", "Importer")
    source, _, _ = sign_in(runtime, "exporter")
    target, _, _ = sign_in(runtime, "importer")
    original = tmp_path / "my_spotify_data.zip"
    write_extended_zip(original, 3_000, seed=28)
    exported = tmp_path / "exported" / "my_spotify_data.zip"
    exported.parent.mkdir()
    with session(runtime, source) as client:
        job = wait_done(client, runtime, upload(client, original)["id"])
        assert job["status"] == "completed", job["error"]

        started = client.post("/me/exports", json={"format": "extended_json"})
        assert started.status_code == 202, started.text
        doc = wait_exported(client, started.json()["export"]["id"])
        assert doc["status"] == "completed", doc["error"]
        assert doc["plays"] == client.get("/me").json()["totals"]["plays"] > 0
        download = httpx.get(doc["download"]["url"], timeout=60)  # a plain GET, no cookie
        assert download.status_code == 200
        assert len(download.content) == doc["size_bytes"]
        exported.write_bytes(download.content)

    with session(runtime, target) as client:
        job = wait_done(client, runtime, upload(client, exported)["id"])
        assert job["status"] == "completed", job["error"]
        assert job["counts"]["added"] == doc["plays"]

    runtime.drain()  # enrichment of the catalog, whatever it changes, is done for both
    with session(runtime, source) as first, session(runtime, target) as second:
        mine, theirs = statistics(first), statistics(second)
    assert mine[0] == doc["plays"] and mine[2]
    assert mine == theirs
