"""Monthly partitions of ``listening_events``.

Partitions are named ``listening_events_pYYYY_MM`` and hold ``[first of month, first of next month)``
in UTC. Creating one is idempotent and serialised by a transaction-level advisory lock, so two runs
(a schedule and an import, or two imports) never race. When rows for a month already sit in the
default partition, they are moved into a new table that is then attached as that month's partition:
copy, delete, attach, in one transaction, so nothing is lost or seen twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from psycopg import sql

from myi.observability import logger

PARENT = "listening_events"
DEFAULT_PARTITION = "listening_events_default"
PARTITION_LOCK_ID = 0x4D59492D50415254  # "MYI-PART"

_known: set[date] = set()
_known_lock = threading.Lock()


def month_start(value: date | datetime) -> date:
    if isinstance(value, datetime):
        value = value.astimezone(UTC).date() if value.tzinfo else value.date()
    return date(value.year, value.month, 1)


def add_months(month: date, n: int) -> date:
    index = month.year * 12 + (month.month - 1) + n
    return date(index // 12, index % 12 + 1, 1)


def months_between(first: date | datetime, last: date | datetime) -> list[date]:
    start, end = month_start(first), month_start(last)
    out = []
    while start <= end:
        out.append(start)
        start = add_months(start, 1)
    return out


def partition_name(month: date) -> str:
    return f"{PARENT}_p{month.year:04d}_{month.month:02d}"


def existing_partitions(conn: psycopg.Connection[Any]) -> set[date]:
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = %s::regclass
        """,
        (PARENT,),
    ).fetchall()
    months = set()
    for (name,) in rows:
        suffix = name.removeprefix(f"{PARENT}_p")
        if suffix != name:
            year, month = suffix.split("_")
            months.add(date(int(year), int(month), 1))
    return months


def _create_month(conn: psycopg.Connection[Any], month: date) -> bool:
    """Create one month's partition, moving its rows out of the default partition. True if created."""
    name = partition_name(month)
    lower = datetime(month.year, month.month, 1, tzinfo=UTC)
    nxt = add_months(month, 1)
    upper = datetime(nxt.year, nxt.month, 1, tzinfo=UTC)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK_ID,))
        if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() != (None,):
            return False
        # Block writers of the default partition while its rows for this month move.
        conn.execute(
            sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(DEFAULT_PARTITION))
        )
        stray = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE played_at >= %s AND played_at < %s").format(
                sql.Identifier(DEFAULT_PARTITION)
            ),
            (lower, upper),
        ).fetchone()
        moved = int(stray[0]) if stray else 0
        if moved == 0:
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(name), sql.Identifier(PARENT), sql.Literal(lower), sql.Literal(upper)
                )
            )
        else:
            conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
                    sql.Identifier(name), sql.Identifier(PARENT)
                )
            )
            conn.execute(
                sql.SQL(
                    "WITH moved AS (DELETE FROM {} WHERE played_at >= %s AND played_at < %s RETURNING *) "
                    "INSERT INTO {} SELECT * FROM moved"
                ).format(sql.Identifier(DEFAULT_PARTITION), sql.Identifier(name)),
                (lower, upper),
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(PARENT), sql.Identifier(name), sql.Literal(lower), sql.Literal(upper)
                )
            )
        logger.info("partition created", extra={"partition": name, "rows_moved": moved})
    return True


def ensure_months(conn: psycopg.Connection[Any], months: Iterable[date]) -> list[str]:
    """Make sure the partitions of these months exist; returns the names created.

    Cheap when they exist: a per-process cache answers without a query. ``conn`` must not be inside
    a transaction (each month is created in its own short one).
    """
    wanted = {month_start(m) for m in months}
    with _known_lock:
        missing = wanted - _known
    if not missing:
        return []
    present = existing_partitions(conn)
    created = [partition_name(m) for m in sorted(missing - present) if _create_month(conn, m)]
    with _known_lock:
        _known.update(missing)
    return created


def ensure_range(conn: psycopg.Connection[Any], first: datetime, last: datetime) -> list[str]:
    return ensure_months(conn, months_between(first, last))


def forget_cache() -> None:
    with _known_lock:
        _known.clear()


def maintain(conn: psycopg.Connection[Any], today: date, months_ahead: int) -> dict[str, Any]:
    """The scheduled job: the current month and the next ``months_ahead`` exist, and every month that
    has rows in the default partition gets its own partition with those rows moved in."""
    wanted = [add_months(month_start(today), n) for n in range(months_ahead + 1)]
    stray_rows = conn.execute(
        sql.SQL("SELECT DISTINCT date_trunc('month', played_at AT TIME ZONE 'UTC')::date FROM {}").format(
            sql.Identifier(DEFAULT_PARTITION)
        )
    ).fetchall()
    stray = [row[0] for row in stray_rows]
    forget_cache()
    created = [partition_name(m) for m in sorted(set(wanted) | set(stray)) if _create_month(conn, m)]
    remaining = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(DEFAULT_PARTITION))
    ).fetchone()
    return {
        "created": created,
        "months_checked": len(set(wanted) | set(stray)),
        "default_rows_left": int(remaining[0]) if remaining else 0,
    }
