"""The dashboard's browser tests' world: a listener of the fake Spotify's demo world with a few years
of history (an import of their download plus the plays a sync reads), a headless Chromium, pages
signed in as a user, cover images served without the internet, console errors collected, and
axe-core injected from ``node_modules``.

Also runnable on its own to look at the dashboard by hand on the same data::

    .venv/bin/python -m tests.e2e.dashboard_world      # prints the URL and a session cookie
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.fakespotify import FakeSpotify
from devtools.paths import REPO
from devtools.synthetic import extended_records, world_catalog, write_json_array
from tests.e2e.conftest import session, sign_in
from tests.fixtures.local_runtime import LocalRuntime

INSTALL_BUDGET_S = 300
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
HISTORY_RECORDS = 2400
HISTORY_YEARS = 2.6


# ---- the listener's history -----------------------------------------------------------------------


def write_history_zip(path: Path, fake: FakeSpotify, *, count: int = HISTORY_RECORDS, seed: int = 7) -> int:
    """A Spotify download of the demo world's catalog: ``count`` extended-history records (plays,
    skips, episodes, incognito...) spread over the last ``HISTORY_YEARS`` years and ending twelve
    days ago, before the plays the fake Spotify's recently-played list holds (so those stay
    estimated)."""
    tracks = world_catalog(fake.world)
    records = list(extended_records(count, tracks=tracks, seed=seed, breaks=0.35))
    first = datetime.fromisoformat(records[0]["ts"].replace("Z", "+00:00"))
    last = datetime.fromisoformat(records[-1]["ts"].replace("Z", "+00:00"))
    end = datetime.now(UTC) - timedelta(days=12)
    scale = (HISTORY_YEARS * 365 * 86400) / max(1.0, (last - first).total_seconds())
    for r in records:  # stretched to the years wanted (plays stay apart), ending at ``end``
        at = datetime.fromisoformat(r["ts"].replace("Z", "+00:00"))
        r["ts"] = (end - (last - at) * scale).strftime("%Y-%m-%dT%H:%M:%SZ")
    name = "Spotify Extended Streaming History/Streaming_History_Audio_0.json"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open(name, "w") as member:
        write_json_array(member, records)
    return count


def import_file(client: httpx.Client, path: Path, timeout_s: float = 120) -> dict[str, Any]:
    """The API's import flow from outside a browser: create, upload to the presigned POST, follow."""
    created = client.post("/me/imports", json={"filename": path.name, "size_bytes": path.stat().st_size})
    assert created.status_code == 201, created.text
    upload_file(created.json()["upload"], path)
    return wait_for_import(client, created.json()["import"]["id"], timeout_s)


def upload_file(upload: dict[str, Any], path: Path) -> None:
    sent = httpx.post(
        upload["url"], data=upload["fields"], files={"file": (path.name, path.read_bytes())}, timeout=60
    )
    assert sent.status_code in (200, 201, 204), sent.text


def wait_for_import(client: httpx.Client, import_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/me/imports/{import_id}").json()
        if job["status"] in ("completed", "failed"):
            assert job["status"] == "completed", job
            return job
        time.sleep(0.3)
    raise AssertionError(f"import {import_id} did not finish in {timeout_s} s")


@dataclass
class Listener:
    """A signed-in user of the runtime: their Spotify id and session cookie."""

    spotify_user: str
    cookie: str
    facts: dict[str, Any] = field(default_factory=dict)

    def client(self, rt: LocalRuntime) -> httpx.Client:
        return session(rt, self.cookie)


def seed_demo_listener(rt: LocalRuntime, fake: FakeSpotify, work: Path) -> Listener:
    """The demo listener with years of history: signed in, synced, their download imported, the
    catalog enriched (covers); ``facts`` holds the years with plays."""
    cookie, _, _ = sign_in(rt, "demo")
    listener = Listener("demo", cookie)
    assert rt.run_schedule("sync-fanout").status_code == 200  # the sync runs beside the import
    zip_path = work / "my_spotify_data.zip"
    write_history_zip(zip_path, fake)
    with listener.client(rt) as client:
        listener.facts["import"] = import_file(client, zip_path)
        rt.drain(timeout_s=90)  # the sync, and the catalog's enrichment (covers) after both
        days = client.get("/me/stats/overview", params={"range": "all"}).json()["days"]
        listener.facts["years"] = sorted({int(d["date"][:4]) for d in days}, reverse=True)
        listener.facts["plays"] = client.get("/me").json()["totals"]["plays"]
    return listener


# ---- the browser ----------------------------------------------------------------------------------


def chromium() -> str:
    """A Chromium executable: one already here, or Debian's package installed now (as root,
    non-interactively). The test is skipped, with the reason, only when neither works."""
    for name in (os.environ.get("CHROME_PATH"), "chromium", "chromium-browser", "google-chrome"):
        if name and (found := shutil.which(name)):
            return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
            deadline = time.monotonic() + INSTALL_BUDGET_S  # the whole suite has a time limit
            for step in (install, ["apt-get", "update"], install):  # the package lists may be stale
                left = deadline - time.monotonic()
                if shutil.which("chromium") or left <= 0:
                    break
                subprocess.run(step, env=env, capture_output=True, timeout=left, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"installing chromium failed: {exc}", file=sys.stderr)
        if found := shutil.which("chromium"):
            return found
    pytest.skip("no Chromium here and Debian's chromium package could not be installed")


def launch_browser() -> Iterator[Any]:
    executable = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def cover_png(seed: str, size: int = 64) -> bytes:
    """A small solid PNG whose colour follows ``seed``: a cover image without the internet."""
    digest = hashlib.sha256(seed.encode()).digest()
    r, g, b = (40 + digest[0] % 180, 40 + digest[1] % 180, 40 + digest[2] % 180)
    row = b"\x00" + bytes((r, g, b)) * size
    raw = zlib.compress(row * size, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@dataclass
class Tab:
    """A page of its own browser context, with what its console said."""

    page: Any
    context: Any
    errors: list[str]

    def close(self) -> None:
        self.context.close()


def open_tab(
    browser: Any,
    rt: LocalRuntime,
    cookie: str | None,
    *,
    path: str = "/",
    width: int = 1440,
    height: int = 1000,
    timezone: str | None = None,
    wait_for: str | None = "user-name",
    covers: bool = True,
) -> Tab:
    """A new browser context (optionally signed in with ``cookie``, optionally in ``timezone``),
    with cover images (Spotify's image host) answered locally (or, without ``covers``, answered
    404), opened at ``path``."""
    context = browser.new_context(
        viewport={"width": width, "height": height},
        timezone_id=timezone,
        locale="en-GB",
        accept_downloads=True,
    )
    if cookie:
        context.add_cookies(
            [{"name": "myi_session", "value": cookie, "url": rt.url, "httpOnly": True, "sameSite": "Lax"}]
        )
    context.route(
        "https://i.scdn.co/**",
        lambda route: (
            route.fulfill(status=200, content_type="image/png", body=cover_png(route.request.url))
            if covers
            else route.fulfill(status=404, body=b"")
        ),
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on(
        "console",
        lambda m: (
            errors.append(f"console.{m.type}: {m.text} ({m.location.get('url', '')})")
            if m.type == "error"
            else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(f"{rt.url}{path}")
    if wait_for:
        page.get_by_test_id(wait_for).wait_for()
    return Tab(page, context, errors)


# ---- accessibility --------------------------------------------------------------------------------


def axe_available() -> Path:
    """axe-core from node_modules (package.json pins it), installed with npm when missing; the
    test is skipped, saying why, when it cannot be had."""
    if not AXE.exists() and shutil.which("npm"):
        try:
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--silent"],
                cwd=REPO,
                capture_output=True,
                timeout=240,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"npm install failed: {exc}", file=sys.stderr)
    if not AXE.exists():
        pytest.skip("node_modules/axe-core is absent and `npm install` could not provide it")
    return AXE


def axe_violations(page: Any, axe: Path) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(axe))
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
              nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ': ' + n.failureSummary)}));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


# ---- by hand --------------------------------------------------------------------------------------


def main() -> None:  # pragma: no cover - a development aid
    import signal
    import tempfile

    from devtools import embedded
    from devtools.fakespotify import demo_world
    from tests.fixtures.local_runtime import start_local_runtime, stop_local_runtime

    work = Path(tempfile.mkdtemp(prefix="myi-dashboard-"))
    with FakeSpotify(demo_world()) as fake:
        pg = embedded.start_postgres("pg-test")
        database_url = pg.create_database()
        rt = start_local_runtime(
            database_url,
            work / "local-runtime.log",
            {
                "SPOTIFY_ACCOUNTS_URL": fake.accounts_url,
                "SPOTIFY_API_URL": fake.api_url,
                "SPOTIFY_CLIENT_ID": fake.client_id,
                "SPOTIFY_CLIENT_SECRET": fake.client_secret,
                "MAX_UPLOAD_BYTES": str(8 * 1024 * 1024),
                "IMPORT_BATCH_SIZE": "2000",
                "SYNC_MAX_DELAY_SECONDS": "1",
            },
        )
        try:
            started = time.monotonic()
            listener = seed_demo_listener(rt, fake, work)
            print(
                json.dumps(
                    {
                        "url": rt.url,
                        "cookie": listener.cookie,
                        "facts": listener.facts,
                        "seeded_s": round(time.monotonic() - started, 1),
                        "log": str(work / "local-runtime.log"),
                    }
                ),
                flush=True,
            )
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            stop_local_runtime(rt)
            pg.drop_database(database_url)


if __name__ == "__main__":
    main()
