"""The API function's database connection: :func:`myi.db.get_connection`'s ``api`` connection, with
a ``statement_timeout`` (``API_STATEMENT_TIMEOUT_MS``), so no request holds the database for longer
than that. A statement the timeout cancels answers 503 (see :mod:`myi.api.app`).

Only the API's own connection carries the limit: where functions share a process (the local
runtime, the tests), the workers keep theirs without it."""

from __future__ import annotations

import weakref
from typing import Any

import psycopg

from myi import db
from myi.settings import Settings, get_settings

PURPOSE = "api"
# connection -> the statement_timeout (ms) set on it
_applied: weakref.WeakKeyDictionary[psycopg.Connection[Any], int] = weakref.WeakKeyDictionary()


def connection(settings: Settings | None = None) -> psycopg.Connection[Any]:
    s = settings or get_settings()
    conn = db.get_connection(s, purpose=PURPOSE)
    timeout = max(0, s.api_statement_timeout_ms)
    if _applied.get(conn) != timeout:
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{timeout}ms",))
        _applied[conn] = timeout
    return conn
