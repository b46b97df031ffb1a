"""The dashboard (``web/``) under the local runtime: served at ``/`` and nothing outside ``web/``; and
in a real headless Chromium, signing in through the fake Spotify and showing the top tracks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.fakespotify import FakeSpotify
from devtools.synthetic import write_extended_zip
from tests.e2e.conftest import print_log_on_failure, runtime_with
from tests.fixtures.local_runtime import LocalRuntime

log_on_failure = pytest.fixture(autouse=True)(print_log_on_failure)
SCREENSHOT = os.environ.get("MYI_DASHBOARD_SCREENSHOT")
INSTALL_BUDGET_S = 300


@pytest.fixture(scope="module")
def runtime(fake: FakeSpotify, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    """The runtime as ``make local`` runs it: the dashboard and the API on one origin (no
    ``APP_URL``), so sign-in comes back to the page."""
    with runtime_with(fake, tmp_path_factory) as rt:
        yield rt


def test_the_dashboard_is_served_at_the_root_and_nothing_outside_it(runtime: LocalRuntime) -> None:
    page = httpx.get(f"{runtime.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Sign in with Spotify" in page.text and 'src="app.js"' in page.text
    script = httpx.get(f"{runtime.url}/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for path in ("/../pyproject.toml", "/%2e%2e/pyproject.toml", "/missing.js", "/web/app.js"):
        answer = httpx.get(f"{runtime.url}{path}")
        assert answer.status_code == 404, path
    assert httpx.get(f"{runtime.url}/health").json() == {"status": "ok"}


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def test_a_person_signs_in_sees_their_top_tracks_and_uploads_a_download(
    runtime: LocalRuntime, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    page.set_default_timeout(30_000)
    page.goto(f"{runtime.url}/")
    # Login -> the fake Spotify approves its first listener at once -> callback -> back here.
    page.get_by_test_id("sign-in").click()
    page.wait_for_url(f"{runtime.url}/")
    name = page.get_by_test_id("user-name")
    name.wait_for()
    assert name.inner_text() == "Demo Listener"
    fired = runtime.run_schedule("sync-fanout")
    assert fired.status_code == 200, fired.text
    runtime.drain(timeout_s=90)
    page.reload()
    items = page.get_by_test_id("top-tracks-item")
    items.first.wait_for()
    assert items.count() == 10
    assert page.locator("#t-plays").inner_text() == "50"
    assert page.get_by_test_id("history").locator("li").count() == 20

    # An upload straight to the bucket (cross-origin, as the SPA does in the cloud), its progress,
    # and the statistics that follow.
    export = tmp_path / "my_spotify_data.zip"
    write_extended_zip(export, 400, seed=4)
    page.set_input_files("#file", str(export))
    page.get_by_role("button", name="Upload").click()
    status = page.get_by_test_id("import-status")
    status.filter(has_text="Done").wait_for(timeout=90_000)
    # "Done" shows as the dashboard starts reloading its figures, not once they are in.
    expect(page.locator("#t-plays")).not_to_have_text("50", timeout=30_000)
    assert int(page.locator("#t-plays").inner_text().replace(",", "")) > 50
    if SCREENSHOT:
        Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOT, full_page=True)


def test_the_header_says_when_spotify_was_last_read_and_offers_a_reconnect_when_access_lapsed(
    runtime: LocalRuntime, browser: Any, fake: FakeSpotify
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(f"{runtime.url}/auth/login?return_to=/")
    page.wait_for_url(f"{runtime.url}/")
    status = page.get_by_test_id("sync-status")
    status.wait_for()
    fired = runtime.run_schedule("sync-fanout")
    assert fired.status_code == 200, fired.text
    runtime.drain(timeout_s=90)
    page.reload()
    status.filter(has_text="Synced").wait_for()
    assert page.get_by_test_id("reconnect").is_hidden()
    assert page.get_by_test_id("sync-gaps").is_hidden()
    # Access revoked at Spotify: three rounds of the fan-out find it out.
    fake.revoke("demo")  # the fake approves its first listener
    fake.expire_access_tokens()
    for _ in range(3):
        assert runtime.run_schedule("sync-fanout").status_code == 200
        runtime.drain(timeout_s=90)
    page.reload()
    reconnect = page.get_by_test_id("reconnect")
    reconnect.wait_for()
    assert "/auth/login?return_to=" in (reconnect.get_attribute("href") or "")
    assert "lapsed" in status.inner_text()
