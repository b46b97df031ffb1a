"""``make demo``: a new user's whole journey through MYI, end to end, on embedded defaults.

It starts the local runtime (``python -m devtools.local``, its own database ``myi_demo`` in the embedded
PostgreSQL, the AWS emulator) against a fake Spotify with the demo world, signs the demo user in
through ``/auth/login`` -> authorize -> ``/auth/callback``, writes a multi-year export zip of the
demo user (every format Spotify has used), uploads it with the presigned POST and follows the
import's progress, runs a listening sync through ``/_local/schedules/sync-fanout``, and prints a
report read from the API alone. It stops everything it started and exits non-zero, with the
reason, when a step fails. ``MYI_DEMO_RECORDS`` sets the size of the export (default 120,000).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from devtools import embedded
from devtools.fakespotify import FakeSpotify, demo_world
from devtools.synthetic import demo_export

DATABASE = "myi_demo"
RECORDS = int(os.environ.get("MYI_DEMO_RECORDS") or 120_000)
WORK_DIR = embedded.LOCAL_DIR / "demo"
BAR = 30


class DemoFailed(RuntimeError):
    pass


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def check(response: httpx.Response, expected: int, what: str) -> Any:
    if response.status_code != expected:
        raise DemoFailed(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    return response.json() if response.content else None


@contextmanager
def local_runtime(database_url: str, fake: FakeSpotify, log_path: Path) -> Iterator[str]:
    """``python -m devtools.local`` as a child process on a free port, its log in ``log_path``."""
    port = embedded.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MYI_", "SPOTIFY_"))}
    env.update(
        {
            "MYI_PORT": str(port),
            "MYI_LOCAL_SCHEDULES": "off",
            "DATABASE_URL": database_url,
            "SPOTIFY_ACCOUNTS_URL": fake.accounts_url,
            "SPOTIFY_API_URL": fake.api_url,
            "SPOTIFY_CLIENT_ID": fake.client_id,
            "SPOTIFY_CLIENT_SECRET": fake.client_secret,
            "SYNC_COOLDOWN_SECONDS": "0",
            "SYNC_MAX_DELAY_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for name in ("API_URL", "APP_URL"):
        env.pop(name, None)
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "devtools.local"],
            cwd=embedded.REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                if process.poll() is not None:
                    raise DemoFailed(f"the local runtime exited at start; see {log_path}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise DemoFailed(f"the local runtime did not answer /health in time; see {log_path}")
                time.sleep(0.25)
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def sign_in(client: httpx.Client, spotify_user: str) -> str:
    """The browser's side of signing in: login -> Spotify's consent (the fake's) -> callback."""
    start = client.get("/auth/login", params={"return_to": "/"})
    if start.status_code != 302:
        raise DemoFailed(f"/auth/login: HTTP {start.status_code}")
    consent = httpx.get(start.headers["location"] + f"&fake_user={spotify_user}", follow_redirects=False)
    if consent.status_code not in (302, 303):
        raise DemoFailed(f"Spotify's authorize page: HTTP {consent.status_code}")
    done = client.get(consent.headers["location"])
    if done.status_code != 302 or not client.cookies.get("myi_session"):
        raise DemoFailed(f"/auth/callback: HTTP {done.status_code} {done.headers.get('location')}")
    return str(done.headers["location"])


def bar(fraction: float, width: int = BAR) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "#" * filled + "." * (width - filled)


def upload(client: httpx.Client, path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    created = check(
        client.post("/me/imports", json={"filename": path.name, "size_bytes": size}), 201, "POST /me/imports"
    )
    job, form = created["import"], created["upload"]
    with path.open("rb") as fh:
        sent = httpx.post(
            form["url"], data=form["fields"], files={"file": (path.name, fh, "application/zip")}, timeout=300
        )
    if sent.status_code not in (200, 201, 204):
        raise DemoFailed(f"the upload to S3 failed: HTTP {sent.status_code} {sent.text[:300]}")
    started = time.monotonic()
    while True:
        job = check(client.get(f"/me/imports/{job['id']}"), 200, "GET /me/imports/{id}")
        progress = job["progress"]
        print(
            f"\r  [{bar(progress['percent'] / 100)}] {progress['percent']:5.1f}%  "
            f"{progress['records_read']:>9,} records  {job['status']:<10}",
            end="",
            flush=True,
        )
        if job["status"] in ("completed", "failed"):
            print(f"  ({time.monotonic() - started:.0f} s)")
            break
        if time.monotonic() - started > 900:
            raise DemoFailed("the import made no end within 15 minutes")
        time.sleep(0.5)
    if job["status"] != "completed":
        raise DemoFailed(f"the import failed: {job['error']}")
    return dict(job)


def hours_and_minutes(ms: int) -> str:
    minutes = ms // 60_000
    return f"{minutes // 60:,} h {minutes % 60:02d} min"


def top_table(client: httpx.Client, kind: str) -> list[str]:
    columns = []
    for range_ in ("all", "4w"):
        body = check(
            client.get(f"/me/stats/top/{kind}", params={"range": range_, "limit": 10}), 200, f"top {kind}"
        )
        rows = []
        for item in body["items"]:
            who = ", ".join(a["name"] for a in item.get("artists") or [])
            label = f"{item['name']} ({who})" if who else item["name"]
            rows.append(f"{item['rank']:>2}. {label[:40]:<40} {item['plays']:>6,}")
        columns.append(rows)
    lines = [f"    {'all time':<51}  {'last 4 weeks':<51}"]
    for i in range(max(len(c) for c in columns)):
        left = columns[0][i] if i < len(columns[0]) else ""
        right = columns[1][i] if i < len(columns[1]) else ""
        lines.append(f"    {left:<51}  {right:<51}")
    return lines


def report(client: httpx.Client, job: dict[str, Any], synced: int) -> None:
    me = check(client.get("/me"), 200, "GET /me")
    totals = me["totals"]
    step(f"Your listening, as the API reports it ({me['display_name']}, zone {me['timezone']})")
    print(
        f"    {totals['plays']:,} plays, {hours_and_minutes(totals['ms_played'])} of music, "
        f"{totals['tracks']:,} tracks by {totals['artists']:,} artists, "
        f"from {(totals['first_played_at'] or '')[:10]} to {(totals['last_played_at'] or '')[:10]}"
    )
    counts = job["counts"]
    skipped = ", ".join(f"{k} {v:,}" for k, v in counts["skipped"].items() if v)
    print(
        f"    import {job['filename']}: {job['progress']['records_read']:,} records read; "
        f"added {counts['added']:,}, merged {counts['merged']:,}, duplicates {counts['duplicates']:,}"
    )
    print(f"    skipped: {skipped or 'nothing'}")
    print(f"    the sync added {synced:,} plays newer than the export")
    step("Top tracks")
    print("\n".join(top_table(client, "tracks")))
    step("Top artists")
    print("\n".join(top_table(client, "artists")))
    activity = check(client.get("/me/stats/activity"), 200, "GET /me/stats/activity")
    step(f"Listening by hour of day ({me['timezone']}, all time)")
    most = max((h["plays"] for h in activity["hours"]), default=0) or 1
    for hour, figures in enumerate(activity["hours"]):
        print(f"    {hour:02d}h {'█' * round(40 * figures['plays'] / most):<40} {figures['plays']:>7,}")


def run() -> None:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    step("Starting MYI on one machine: embedded PostgreSQL, the AWS emulator, a fake Spotify")
    pg = embedded.start_postgres("pg")
    database_url = embedded.url_with_database(pg.url, DATABASE)
    pg.drop_database(database_url)  # every run starts afresh
    embedded.ensure_database(pg, DATABASE)
    now = datetime.now(UTC).replace(microsecond=0)
    world = demo_world(now=now)
    log_path = WORK_DIR / "local-runtime.log"
    with FakeSpotify(world) as fake, local_runtime(database_url, fake, log_path) as url:
        print(f"    MYI answers at {url} (its log: {log_path.relative_to(embedded.REPO_ROOT)})")
        with httpx.Client(base_url=url, timeout=60, follow_redirects=False) as client:
            step("Signing in with Spotify as the demo user (PKCE, through the fake's consent page)")
            landed = sign_in(client, "demo")
            me = check(client.get("/me"), 200, "GET /me")
            print(f"    signed in as {me['display_name']}; the callback sent the browser to {landed}")

            # The download ends a while before now: the plays after it reach MYI through the sync.
            plays = world.plays.get("demo", [])
            cut = plays[-26][0] if len(plays) > 26 else now - timedelta(hours=1)
            export = WORK_DIR / "my_spotify_data.zip"
            step(f"Writing the demo user's Spotify download ({RECORDS:,} records) to {export.name}")
            kinds = demo_export(export, world, "demo", until=cut, count=RECORDS)
            print(
                f"    {export.stat().st_size / 1e6:.1f} MB: "
                + ", ".join(f"{n:,} {kind.replace('_', ' ')}" for kind, n in kinds.items())
            )

            step("Uploading it with the presigned POST; the import runs from the upload alone")
            job = upload(client, export)

            step("Syncing with Spotify (the sync-fanout schedule, then the queues drained)")
            before = me_plays(client)
            check(client.post("/_local/schedules/sync-fanout"), 200, "sync-fanout")
            check(client.post("/_local/drain", params={"timeout": 180}, timeout=200), 200, "drain")
            synced = me_plays(client) - before
            print(f"    {synced:,} new plays; the rest of Spotify's latest 50 were already imported")
            report(client, job, synced)
    step("Where to look next")
    print(
        "    make local, then open http://127.0.0.1:8000/ and sign in (the fake Spotify signs you in as\n"
        "    its demo listener)\n"
        f"    the demo's data stays in the embedded PostgreSQL: MYI_LOCAL_DATABASE={DATABASE} make local\n"
        "    make test runs every test; docs/ has the developer's and the operator's guides"
    )


def me_plays(client: httpx.Client) -> int:
    return int(check(client.get("/me"), 200, "GET /me")["totals"]["plays"])


def main() -> int:
    # pgserver asks platformdirs for a runtime folder this machine may not have; that is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    try:
        run()
    except DemoFailed as exc:
        print(f"\nmake demo failed: {exc}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError) as exc:
        print(f"\nmake demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
