"""Embedded services for local runs and tests: PostgreSQL (pgserver) and the AWS emulator (moto)."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from devtools.paths import REPO as REPO_ROOT

LOCAL_DIR = REPO_ROOT / ".local"

# Credentials for the emulator only; moto accepts anything.
EMULATOR_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server kept under ``.local/<name>``; data survives restarts."""

    server: Any
    url: str

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database and return its URL (tests isolate themselves this way)."""
        import psycopg

        dbname = name or f"myi_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return url_with_database(self.url, dbname)

    def drop_database(self, url: str) -> None:
        import psycopg

        dbname = database_of(url)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def url_with_database(url: str, dbname: str) -> str:
    # pgserver URIs look like postgresql://postgres:@/postgres?host=/path/to/socket
    head, sep, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{dbname}{sep}{query}"


def database_of(url: str) -> str:
    return url.partition("?")[0].rsplit("/", 1)[1]


def start_postgres(name: str = "pg") -> EmbeddedPostgres:
    import pgserver

    data_dir = LOCAL_DIR / name
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir), cleanup_mode="stop")
    return EmbeddedPostgres(server=server, url=server.get_uri())


def ensure_database(pg: EmbeddedPostgres, dbname: str) -> str:
    import psycopg

    with psycopg.connect(pg.url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    return url_with_database(pg.url, dbname)


class _AtomicDynamoDB:
    """WSGI middleware: the emulator's DynamoDB requests one at a time. DynamoDB applies each item
    operation atomically (a conditional update checks and writes in one step), which the
    emulator's threaded server does not: two concurrent conditional updates could both pass, and
    a shared budget would hand out one unit too many. Other services (SQS long polls) stay
    concurrent."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB"):
            return self._app(environ, start_response)
        with self._lock:
            return list(self._app(environ, start_response))


@dataclass
class EmbeddedAws:
    server: Any
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()


def start_aws(port: int | None = None) -> EmbeddedAws:
    """Start moto in server mode on loopback (DynamoDB requests one at a time: see
    :class:`_AtomicDynamoDB`)."""
    import logging

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    port = port or free_port()
    app = _AtomicDynamoDB(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="aws-emulator", daemon=True)
    thread.start()
    return EmbeddedAws(server=server, thread=thread, url=f"http://127.0.0.1:{port}")


def apply_emulator_env(endpoint: str, env: dict[str, str] | None = None) -> None:
    target: Any = os.environ if env is None else env
    for key, value in EMULATOR_ENV.items():
        target.setdefault(key, value)
    target["AWS_ENDPOINT_URL"] = endpoint
