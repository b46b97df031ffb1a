"""Database access: one lazily opened psycopg connection per execution environment.

Where the connection comes from, in order:

1. ``DATABASE_URL`` (local runs and tests; the local runtime and the test suite start an embedded
   PostgreSQL and set it).
2. ``DB_HOST`` with ``DB_IAM_AUTH=true``: an IAM authentication token is generated for ``DB_USER``
   (RDS Proxy in the ``scale`` profile, the Aurora writer directly in ``personal``).
3. ``DB_HOST`` with ``DB_SECRET_ARN``: user name and password from the Secrets Manager secret that
   Aurora rotates.

Both ``DB_HOST`` ways use TLS with ``sslmode=verify-full``: the server's certificate must chain to a
certificate authority of :data:`RDS_CA_BUNDLE` (Amazon RDS's, and the Amazon Trust Services roots of
RDS Proxy's certificates; shipped with the package, written by ``make rds-ca``) and name ``DB_HOST``,
so the IAM token or the password goes to nobody but the database.

Connections use ``prepare_threshold=None`` (RDS Proxy pins sessions that prepare statements), a short
connect timeout and explicit transactions (``autocommit=True``; use ``with conn.transaction():``).

A connection the database ended (a restart, a failover, Aurora scaling to zero) is replaced by
:func:`get_connection` the next time it is asked for; handlers ask at every invocation, and what
they keep for the environment's life (clients, dependencies holding the connection) is made again
for a new connection.
"""

from __future__ import annotations

import contextlib
import json
import select
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from myi import aws
from myi.settings import Settings, SettingsError, get_settings

_local = threading.local()

# The certificate authorities a ``DB_HOST`` server's certificate must chain to (devtools/rds_ca.py).
RDS_CA_BUNDLE = Path(__file__).resolve().parent / "certs" / "rds-ca-bundle.pem"

T = TypeVar("T")


def conninfo(settings: Settings) -> dict[str, Any]:
    """Connection parameters for ``psycopg.connect`` from the settings."""
    if settings.database_url:
        return {"conninfo": settings.database_url}
    if not settings.db_host:
        raise SettingsError("DATABASE_URL is not set (or DB_HOST with DB_IAM_AUTH / DB_SECRET_ARN)")
    params: dict[str, Any] = {
        "host": settings.db_host,
        "port": settings.db_port,
        "dbname": settings.db_name,
        "sslmode": "verify-full",
        "sslrootcert": str(RDS_CA_BUNDLE),
    }
    if settings.db_iam_auth:
        rds = aws.client("rds", settings)
        params["user"] = settings.db_user
        params["password"] = rds.generate_db_auth_token(
            DBHostname=settings.db_host, Port=settings.db_port, DBUsername=settings.db_user
        )
    elif settings.db_secret_arn:
        secret = aws.client("secretsmanager", settings).get_secret_value(SecretId=settings.db_secret_arn)
        creds = json.loads(secret["SecretString"])
        params["user"] = creds["username"]
        params["password"] = creds["password"]
    else:
        raise SettingsError("DB_HOST is set but neither DB_IAM_AUTH nor DB_SECRET_ARN is")
    return params


def connect(settings: Settings | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a new connection (autocommit; wrap writes in ``conn.transaction()``)."""
    s = settings or get_settings()
    params = conninfo(s)
    dsn = params.pop("conninfo", "")
    options: dict[str, Any] = {
        "autocommit": True,
        "prepare_threshold": None,
        "connect_timeout": s.db_connect_timeout_s,
        "application_name": f"myi-{s.stage}",
    }
    options.update(kwargs)
    return psycopg.connect(dsn, **params, **options)


def get_connection(settings: Settings | None = None, *, purpose: str = "main") -> psycopg.Connection[Any]:
    """The connection of this execution environment (per thread and purpose: the import worker
    keeps a second one for its live progress), replaced by a new one when it is gone.

    Handlers take it at every invocation (every message, every request), so that a connection the
    database ended while the environment was idle (a restart, a failover, Aurora scaling to zero,
    RDS Proxy's idle timeout) is noticed before it fails one: see :func:`_usable`."""
    conns: dict[str, psycopg.Connection[Any]] = _connections()
    conn = conns.get(purpose)
    if conn is not None and not _usable(conn):
        with contextlib.suppress(Exception):
            conn.close()
        conn = None
    if conn is None:
        conn = connect(settings)
        conns[purpose] = conn
    return conn


def _usable(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn`` still works, without a round trip in the usual case.

    Closed or broken (a statement found it gone): no. A transaction left failed: rolled back. An
    idle connection whose socket has something to read: the server spoke outside any statement,
    which it does when it ends the connection (its last words, then end of file), so a ``SELECT 1``
    tells. Otherwise one ``poll`` of the socket (no wait) is the whole cost."""
    if conn.closed or conn.broken:
        return False
    status = conn.info.transaction_status
    if status == psycopg.pq.TransactionStatus.INERROR:
        try:
            conn.rollback()
        except psycopg.Error:
            return False
        status = conn.info.transaction_status
    if status != psycopg.pq.TransactionStatus.IDLE or not _input_waiting(conn):
        return not conn.broken
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _input_waiting(conn: psycopg.Connection[Any]) -> bool:
    """Whether the connection's socket is readable (or hung up) right now."""
    try:
        fd = conn.fileno()
    except psycopg.Error:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def per_connection(make: Callable[[psycopg.Connection[Any]], T]) -> Callable[[], T]:
    """``make`` (dependencies that hold a connection) of this environment's connection
    (:func:`get_connection`, checked at every call), made again only when that connection was
    replaced; per thread, as the connections are."""
    local = threading.local()

    def get() -> T:
        conn = get_connection()
        if getattr(local, "conn", None) is not conn:
            local.value, local.conn = make(conn), conn
        value: T = local.value
        return value

    return get


def close_connection() -> None:
    for conn in _connections().values():
        if not conn.closed:
            conn.close()
    _local.conns = {}


def _connections() -> dict[str, psycopg.Connection[Any]]:
    conns: dict[str, psycopg.Connection[Any]] | None = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    return conns


@contextmanager
def transaction(conn: psycopg.Connection[Any] | None = None) -> Iterator[psycopg.Connection[Any]]:
    """``with transaction() as conn:`` on this environment's connection (or the one given)."""
    c = conn or get_connection()
    with c.transaction():
        yield c


def fetch_all(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def fetch_one(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return cur.fetchone()
