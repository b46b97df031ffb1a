"""Versioned migrations, applied in order, once, under an advisory lock.

Files live in ``myi/migrations/NNNN_name.sql``, or ``NNNN_name.py`` for a data change that needs
MYI's own Python (a module defining ``apply(conn)``, such as re-keying names with
:func:`myi.catalog.name_key`). Each is applied in its own transaction together with
its row in ``schema_migrations``; a session-level advisory lock makes concurrent runners (two local
starts, a deploy racing a test) wait for each other instead of applying anything twice. The same
runner serves the tests, the local runtime and the deploy-time custom resource
(``python -m myi.migrate`` for operators).
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from myi.observability import logger

# Any constant works as long as every runner uses the same one: "MYI-MIGR" as an int8.
MIGRATION_LOCK_ID = 0x4D59492D4D494752
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.(sql|py)$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str  # the file's text: SQL, or the source of a Python migration

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def apply(self, conn: psycopg.Connection[Any]) -> None:
        if not self.name.endswith(".py"):
            conn.execute(self.sql.encode())
            return
        namespace: dict[str, Any] = {"__name__": f"myi.migrations.m{self.name[:-3]}"}
        exec(compile(self.sql, self.name, "exec"), namespace)  # noqa: S102 - MYI's own file
        namespace["apply"](conn)


def load_migrations() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("myi.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def applied_versions(conn: psycopg.Connection[Any]) -> dict[int, str]:
    rows = conn.execute(
        "SELECT version, checksum FROM schema_migrations ORDER BY version"
        if _has_table(conn)
        else "SELECT NULL::int, NULL::text WHERE false"
    ).fetchall()
    return {int(v): str(c) for v, c in rows}


def _has_table(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    return bool(row and row[0])


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply every pending migration; returns the names applied. ``conn`` must be in autocommit."""
    applied: list[str] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
    try:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = applied_versions(conn)
        for migration in load_migrations():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    logger.warning(
                        "migration changed after it was applied", extra={"migration": migration.name}
                    )
                continue
            with conn.transaction():
                migration.apply(conn)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            logger.info("migration applied", extra={"migration": migration.name})
            applied.append(migration.name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return applied


def main() -> int:
    from myi import db

    with db.connect() as conn:
        names = migrate(conn)
    print("applied: " + (", ".join(names) if names else "nothing (up to date)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
