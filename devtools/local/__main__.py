"""``make local``: MYI on one machine, on embedded defaults unless the environment says otherwise.

Environment: ``MYI_PORT`` (8000), ``DATABASE_URL`` (unset: embedded PostgreSQL under ``.local/pg``,
database ``MYI_LOCAL_DATABASE`` or ``myi``),
``AWS_ENDPOINT_URL`` (unset: an embedded AWS emulator), ``SPOTIFY_ACCOUNTS_URL`` with
``SPOTIFY_API_URL``, ``SPOTIFY_CLIENT_ID`` and ``SPOTIFY_CLIENT_SECRET`` (unset: a fake Spotify serving
a demo world), ``APP_URL`` (unset: the local API's own URL),
``MYI_LOCAL_SCHEDULES`` (``off`` disables the schedule timer; the control route still works),
``MYI_LOCAL_KEY_FILE`` (unset: ``.local/token-key.json``; the token-key ring, kept across starts so
the stored grants stay readable), and every setting of ``myi.settings``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools import embedded
from devtools.local.resources import create_resources
from devtools.local.runtime import Runtime, log_line
from infra.wiring import WIRING
from myi import aws, migrate, partitions
from myi.settings import Settings, get_settings


@dataclass
class LocalServices:
    runtime: Runtime
    settings: Settings
    stops: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        self.runtime.stop()
        while self.stops:
            self.stops.pop()()


def start(env: dict[str, str] | None = None) -> LocalServices:
    """Start everything the local runtime needs and the runtime itself; returns a handle to stop."""
    environ: Any = os.environ if env is None else env
    port = int(environ.get("MYI_PORT") or 8000)
    stops: list[Any] = []
    if not environ.get("DATABASE_URL"):
        pg = embedded.start_postgres("pg")
        environ["DATABASE_URL"] = embedded.ensure_database(pg, environ.get("MYI_LOCAL_DATABASE") or "myi")
    if not environ.get("AWS_ENDPOINT_URL"):
        emulator = embedded.start_aws()
        stops.append(emulator.stop)
        embedded.apply_emulator_env(emulator.url, environ)
    else:
        for key, value in embedded.EMULATOR_ENV.items():
            environ.setdefault(key, value)
    if not environ.get("SPOTIFY_ACCOUNTS_URL"):
        from devtools.fakespotify import FakeSpotify, demo_world

        fake = FakeSpotify(demo_world()).start()
        stops.append(fake.stop)
        environ.update(
            {
                "SPOTIFY_ACCOUNTS_URL": fake.accounts_url,
                "SPOTIFY_API_URL": fake.api_url,
                "SPOTIFY_CLIENT_ID": fake.client_id,
                "SPOTIFY_CLIENT_SECRET": fake.client_secret,
            }
        )
    environ.setdefault("API_URL", f"http://127.0.0.1:{port}")
    environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "MYI-local")
    get_settings.cache_clear()
    aws.reset_clients()
    settings = Settings.from_env(environ)

    from myi import db

    with db.connect(settings) as conn:
        applied = migrate.migrate(conn)
        if applied:
            log_line(f"migrations applied: {', '.join(applied)}")
        partitions.maintain(conn, datetime.now(UTC).date(), settings.partition_months_ahead)

    key_file = Path(environ.get("MYI_LOCAL_KEY_FILE") or embedded.LOCAL_DIR / "token-key.json")
    environ.update(create_resources(settings, key_file=key_file))
    get_settings.cache_clear()
    settings = Settings.from_env(environ)
    queue_urls = {q.name: environ[q.env_var] for q in WIRING.queues}
    runtime = Runtime(
        settings=settings,
        queue_urls=queue_urls,
        port=port,
        schedules_enabled=(environ.get("MYI_LOCAL_SCHEDULES", "on").lower() not in {"off", "0", "false"}),
    )
    runtime.start()
    return LocalServices(runtime=runtime, settings=settings, stops=stops)


def main() -> int:
    services = start()
    s = services.settings
    print(
        f"MYI is running at {s.api_url}\n"
        f"  dashboard:        {s.api_url}/\n"
        f"  AWS emulator:     {s.aws_endpoint_url}\n"
        f"  Spotify accounts: {s.spotify_accounts_url}\n"
        f"  sign in:          {s.api_url}/auth/login\n"
        f"  control:          POST {s.api_url}/_local/schedules/<rule>, POST {s.api_url}/_local/drain\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )
    stopped = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stopped.wait()
    log_line("stopping")
    services.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
