"""``make demo`` itself, on a small download: it walks the journey, prints the report, exits 0."""

from __future__ import annotations

import os
import subprocess
import sys

from devtools.paths import REPO


def test_the_demo_walks_the_journey_and_prints_the_report() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DATABASE_URL", "SPOTIFY_"))}
    env["MYI_DEMO_RECORDS"] = "3000"
    done = subprocess.run(
        [sys.executable, "-m", "devtools.local.demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for heading in (
        "Signing in with Spotify",
        "Uploading it",
        "Top tracks",
        "Top artists",
        "Listening by hour",
    ):
        assert heading in out, out
    assert "completed" in out and "signed in as Demo Listener" in out
    assert "00h" in out and "23h" in out
