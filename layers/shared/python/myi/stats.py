"""Statistics of a user: rebuild from the events, verify against a recomputation, change time zone.

The statistics tables (see migrations 0001 and 0006) are maintained incrementally by :mod:`myi.ingestion`.
This module recomputes them from ``listening_events`` with plain set-based SQL: the definition every
incremental change must agree with. Rows whose plays and time are both zero count as absent.

Operators: ``python -m myi.stats verify --user 42`` prints every difference (none: exit 0),
``python -m myi.stats rebuild --user 42`` recomputes; ``--all`` does every user.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import psycopg

from myi.ingestion import CATALOG_LOCK, USER_LOCK_CLASS


@dataclass(frozen=True)
class StatTable:
    name: str
    keys: tuple[str, ...]  # beyond user_id
    select: str  # the recomputation: %(user)s, columns keys..., plays, ms_played


_EVENTS = """
    SELECT e.track_id, e.ms_played, (e.played_at AT TIME ZONE u.timezone) AS local
      FROM listening_events e JOIN users u ON u.id = e.user_id
     WHERE e.user_id = %(user)s
"""
_GRAINS = """
    CROSS JOIN (VALUES (0), (1)) AS grain(g)
"""
_BUCKET = """CASE grain.g WHEN 0 THEN DATE '1970-01-01' WHEN 1 THEN date_trunc('month', ev.local)::date
                ELSE ev.local::date END"""

TABLES: tuple[StatTable, ...] = (
    StatTable(
        "stat_user",
        ("grain", "bucket"),
        f"""SELECT grain.g, {_BUCKET}, count(*), sum(ev.ms_played)
              FROM ({_EVENTS}) ev CROSS JOIN (VALUES (0), (1), (2)) AS grain(g) GROUP BY 1, 2""",
    ),
    StatTable(
        "stat_track",
        ("grain", "bucket", "track_id"),
        f"""SELECT grain.g, {_BUCKET}, ev.track_id, count(*), sum(ev.ms_played)
              FROM ({_EVENTS}) ev {_GRAINS} GROUP BY 1, 2, 3""",
    ),
    # Artists and albums: all time only (a month is the sum of its tracks' months).
    StatTable(
        "stat_artist",
        ("grain", "bucket", "artist_id"),
        f"""SELECT 0, DATE '1970-01-01', ta.artist_id, count(*), sum(ev.ms_played)
              FROM ({_EVENTS}) ev JOIN track_artists ta ON ta.track_id = ev.track_id
             GROUP BY 3""",
    ),
    StatTable(
        "stat_album",
        ("grain", "bucket", "album_id"),
        f"""SELECT 0, DATE '1970-01-01', x.album_id, count(*), sum(ev.ms_played)
              FROM ({_EVENTS}) ev JOIN tracks x ON x.id = ev.track_id AND x.album_id IS NOT NULL
             GROUP BY 3""",
    ),
    StatTable(
        "stat_hour",
        ("grain", "bucket", "weekday", "hour"),
        f"""SELECT grain.g, {_BUCKET}, extract(isodow FROM ev.local)::smallint,
                   extract(hour FROM ev.local)::smallint, count(*), sum(ev.ms_played)
              FROM ({_EVENTS}) ev CROSS JOIN (VALUES (0), (1), (2)) AS grain(g) GROUP BY 1, 2, 3, 4""",
    ),
)


@dataclass(frozen=True)
class Difference:
    table: str
    key: tuple[Any, ...]
    stored: tuple[int, int]  # plays, ms_played
    expected: tuple[int, int]


def _lock(conn: psycopg.Connection[Any], user_id: int) -> None:
    conn.execute(
        "SELECT pg_advisory_xact_lock_shared(%s), pg_advisory_xact_lock(%s, %s)",
        (CATALOG_LOCK, USER_LOCK_CLASS, user_id),
    )


def verify(conn: psycopg.Connection[Any], user_id: int) -> list[Difference]:
    """Every difference between the stored statistics and a recomputation (empty: exact)."""
    diffs: list[Difference] = []
    with conn.transaction():
        _lock(conn, user_id)
        for table in TABLES:
            keys = ", ".join(table.keys)
            on = " AND ".join(f"s.{k} = c.{k}" for k in table.keys)
            rows = conn.execute(
                f"""
                WITH c ({keys}, plays, ms_played) AS ({table.select}),
                     s AS (SELECT {keys}, plays, ms_played FROM {table.name}
                            WHERE user_id = %(user)s AND (plays <> 0 OR ms_played <> 0))
                SELECT {", ".join(f"COALESCE(s.{k}, c.{k})" for k in table.keys)},
                       COALESCE(s.plays, 0), COALESCE(s.ms_played, 0),
                       COALESCE(c.plays, 0), COALESCE(c.ms_played, 0)
                  FROM s FULL OUTER JOIN c ON {on}
                 WHERE (s.plays, s.ms_played) IS DISTINCT FROM (c.plays, c.ms_played)
                 ORDER BY 1, 2
                """,
                {"user": user_id},
            ).fetchall()
            n = len(table.keys)
            for row in rows:
                diffs.append(
                    Difference(
                        table.name,
                        tuple(row[:n]),
                        (int(row[n]), int(row[n + 1])),
                        (int(row[n + 2]), int(row[n + 3])),
                    )
                )
    return diffs


def _rebuild_in_transaction(conn: psycopg.Connection[Any], user_id: int) -> None:
    for table in TABLES:
        keys = ", ".join(table.keys)
        conn.execute(f"DELETE FROM {table.name} WHERE user_id = %(user)s", {"user": user_id})
        conn.execute(
            f"""INSERT INTO {table.name} (user_id, {keys}, plays, ms_played)
                SELECT %(user)s, * FROM ({table.select}) c""",
            {"user": user_id},
        )


def rebuild(conn: psycopg.Connection[Any], user_id: int) -> None:
    """Recompute every statistic of a user from their events, in one transaction."""
    with conn.transaction():
        _lock(conn, user_id)
        _rebuild_in_transaction(conn, user_id)


class UnknownTimezone(ValueError):
    pass


def valid_timezone(name: str) -> str:
    if not isinstance(name, str) or not name or name not in _zone_names():
        raise UnknownTimezone(f"Unknown time zone {name!r}: use an IANA name such as Europe/Berlin.")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownTimezone(f"Unknown time zone {name!r}.") from exc
    return name


def _zone_names() -> set[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = set(available_timezones()) | {"UTC"}
    return _ZONES


_ZONES: set[str] | None = None


def change_timezone(conn: psycopg.Connection[Any], user_id: int, timezone: str) -> bool:
    """Set a user's time zone and rebuild what depends on it (day, month, hour and weekday
    buckets), in one transaction. Returns False when the user does not exist."""
    valid_timezone(timezone)
    with conn.transaction():
        _lock(conn, user_id)
        row = conn.execute("SELECT timezone FROM users WHERE id = %s FOR UPDATE", (user_id,)).fetchone()
        if row is None:
            return False
        if row[0] == timezone:
            return True
        conn.execute(
            "UPDATE users SET timezone = %s, updated_at = now(), stats_rebuilt_at = now() WHERE id = %s",
            (timezone, user_id),
        )
        _rebuild_in_transaction(conn, user_id)
    return True


def main(argv: list[str] | None = None) -> int:
    from myi import db

    parser = argparse.ArgumentParser(prog="python -m myi.stats", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("verify", "rebuild"))
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, help="the user's internal id")
    who.add_argument("--all", action="store_true", help="every user")
    args = parser.parse_args(argv)
    failed = False
    with db.connect() as conn:
        users = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id")] if args.all else [args.user]
        for user_id in users:
            if args.action == "rebuild":
                rebuild(conn, user_id)
                print(f"user {user_id}: rebuilt")
                continue
            diffs = verify(conn, user_id)
            failed = failed or bool(diffs)
            print(f"user {user_id}: {'exact' if not diffs else f'{len(diffs)} differences'}")
            for d in diffs[:50]:
                print(f"  {d.table} {d.key}: stored {d.stored}, expected {d.expected}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
