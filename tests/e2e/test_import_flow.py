"""Importing a Spotify download through the local runtime, the way the SPA does: create the import,
upload the file with the presigned POST, poll until it is done."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.synthetic import write_extended_zip
from tests.e2e.conftest import print_log_on_failure, session, sign_in
from tests.fixtures.local_runtime import LocalRuntime

log_on_failure = pytest.fixture(autouse=True)(print_log_on_failure)


def upload(client: httpx.Client, path: Path, filename: str = "my_spotify_data.zip") -> dict[str, Any]:
    created = client.post("/me/imports", json={"filename": filename, "size_bytes": path.stat().st_size})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["import"]["status"] == "awaiting_upload"
    post = body["upload"]
    assert post["method"] == "POST" and post["max_bytes"] == 8 * 1024 * 1024
    with path.open("rb") as f:
        sent = httpx.post(post["url"], data=post["fields"], files={"file": (filename, f)}, timeout=60)
    assert sent.status_code in (200, 201, 204), sent.text
    return body["import"]


def wait_done(client: httpx.Client, rt: LocalRuntime, import_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/me/imports/{import_id}").json()
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(0.25)
    raise AssertionError(f"the import did not finish: {job}")


def test_an_upload_imports_and_the_counts_add_up(runtime: LocalRuntime, tmp_path: Path) -> None:
    cookie, _, _ = sign_in(runtime, "ana")
    path = tmp_path / "my_spotify_data.zip"
    write_extended_zip(path, 20_000, seed=21)
    with session(runtime, cookie) as client:
        job = wait_done(client, runtime, upload(client, path)["id"])
        assert job["status"] == "completed", job["error"]
        counts = job["counts"]
        assert job["progress"]["records_read"] == 20_000
        assert (
            counts["added"] + counts["merged"] + counts["duplicates"] + sum(counts["skipped"].values())
            == 20_000
        )
        assert job["progress"]["percent"] == 100.0
        me = client.get("/me").json()
        assert me["totals"]["plays"] == counts["added"] + counts["merged"]
        listing = client.get("/me/imports").json()
        assert [i["id"] for i in listing["items"]] == [job["id"]] and listing["next"] is None


def test_imports_belong_to_their_user(runtime: LocalRuntime, tmp_path: Path) -> None:
    mine, _, _ = sign_in(runtime, "mika")
    theirs, _, _ = sign_in(runtime, "demo")
    with session(runtime, mine) as me, session(runtime, theirs) as other:
        created = me.post("/me/imports", json={"filename": "x.zip", "size_bytes": 10}).json()["import"]
        assert other.get(f"/me/imports/{created['id']}").status_code == 404
        assert other.get("/me/imports/not-a-uuid").status_code == 404
        assert created["id"] not in [i["id"] for i in other.get("/me/imports").json()["items"]]
    assert httpx.get(f"{runtime.url}/me/imports").status_code == 401


def test_an_import_request_is_checked_before_anything_is_created(runtime: LocalRuntime) -> None:
    cookie, _, _ = sign_in(runtime, "mika")
    with session(runtime, cookie) as client:
        too_big = client.post("/me/imports", json={"filename": "x.zip", "size_bytes": 8 * 1024 * 1024 + 1})
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "too_large"
        for bad in (
            {"filename": "x.zip"},
            {"filename": "", "size_bytes": 5},
            {"filename": "x", "size_bytes": -1},
        ):
            response = client.post("/me/imports", json=bad)
            assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
        before = client.get("/me/imports").json()["items"]
        assert all(i["filename"] != "x.zip" or i["status"] == "awaiting_upload" for i in before)
        page = client.get("/me/imports", params={"limit": 1}).json()
        if page["next"]:
            second = client.get("/me/imports", params={"limit": 1, "cursor": page["next"]}).json()
            assert second["items"][0]["id"] != page["items"][0]["id"]
        assert client.get("/me/imports", params={"cursor": "garbage!"}).status_code == 400
        assert client.get("/me/imports", params={"limit": 0}).status_code == 400
