"""Shared fixtures: a real PostgreSQL (embedded, or ``DATABASE_URL``), the AWS emulator, settings.

Isolation: the session gets a fresh database (dropped at the end); ``db`` truncates every table
of user data and the catalog before each test that uses it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from devtools import embedded
from myi import aws, db, migrate, partitions
from myi.settings import Settings, get_settings
from myi.users import UNREFERENCED_TABLES

# Fixtures of each area live in tests/fixtures/<area>.py; add yours here.
pytest_plugins: list[str] = [
    "tests.fixtures.local_runtime",
    "tests.fixtures.plays",
    "tests.fixtures.fake_spotify",
    "tests.fixtures.auth",
    "tests.fixtures.imports",
    "tests.fixtures.api",
]

# Tests never talk to real AWS or Spotify, whatever the developer's shell holds.
for _key in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(_key, None)
for _key, _value in embedded.EMULATOR_ENV.items():
    os.environ[_key] = _value
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "MYI-test")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

USER_TABLES = (
    "users",
    *UNREFERENCED_TABLES,  # a user's events and statistics, which do not reference users
    "tracks",
    "albums",
    "artists",
    "catalog_gaps",
)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated, empty database for this test session."""
    external = os.environ.get("MYI_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if external:
        server = None
        base = external
        admin = psycopg.connect(base, autocommit=True)
        name = f"myi_test_{os.getpid()}"
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.close()
        url = embedded.url_with_database(base, name) if "?host=" in base else _swap_db(base, name)
    else:
        server = embedded.start_postgres("pg-test")
        url = server.create_database(f"myi_test_{os.getpid()}")
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.migrate(conn)
    yield url
    db.close_connection()
    if server is not None:
        server.drop_database(url)


def _swap_db(url: str, name: str) -> str:
    head, sep, query = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}{sep}{query}"


def truncate_all(conn: psycopg.Connection[Any]) -> None:
    conn.execute("TRUNCATE " + ", ".join(USER_TABLES) + " RESTART IDENTITY CASCADE")


@pytest.fixture
def db_conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the session database, emptied of user data and catalog."""
    conn = psycopg.connect(database_url, autocommit=True, prepare_threshold=None)
    truncate_all(conn)
    partitions.forget_cache()
    try:
        yield conn
    finally:
        conn.close()
        db.close_connection()


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """The AWS emulator (moto in server mode) on a free loopback port."""
    emulator = embedded.start_aws()
    os.environ["AWS_ENDPOINT_URL"] = emulator.url
    get_settings.cache_clear()
    aws.reset_clients()
    yield emulator.url
    emulator.stop()
    os.environ.pop("AWS_ENDPOINT_URL", None)
    aws.reset_clients()


@pytest.fixture(scope="session")
def aws_resources(aws_endpoint: str) -> dict[str, str]:
    """Every emulated resource of the wiring (table, queues with DLQs, bucket, key secret); the
    environment of the handlers is updated with their names and URLs."""
    from devtools.local.resources import create_resources

    env = create_resources(Settings.from_env())
    os.environ.update(env)
    get_settings.cache_clear()
    return env


@pytest.fixture
def settings(database_url: str) -> Settings:
    get_settings.cache_clear()
    return get_settings()
