"""Statistics of a user: rebuild from the events, verify against a recomputation, change time zone.

The statistics tables (see migrations 0001, 0006, 0009 and 0010) are maintained incrementally by
:mod:`myi.ingestion`; :func:`advance_recent` moves the users' recent floors on every day.
``stat_counts`` holds how many all-time and recent track, artist and album rows a user has (no
such row is ever left empty), checked and rebuilt with the rest.
This module recomputes them from ``listening_events`` with plain set-based SQL: the definition every
incremental change must agree with. Rows whose plays and time are both zero count as absent.

Operators: ``python -m myi.statistics.maintenance verify --user 42`` prints every difference (none: exit 0),
``python -m myi.statistics.maintenance rebuild --user 42`` recomputes; ``--all`` does every user.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import psycopg

from myi.ingestion import CATALOG_LOCK, USER_LOCK_CLASS, count_rows


@dataclass(frozen=True)
class StatTable:
    name: str
    keys: tuple[str, ...]  # beyond user_id
    select: str  # the recomputation: %(user)s, columns keys..., plays, ms_played


_EVENTS = """
    SELECT e.track_id, e.ms_played, (e.played_at AT TIME ZONE u.timezone) AS local,
           e.played_at >= u.recent_floor AS recent
      FROM listening_events e JOIN users u ON u.id = e.user_id
     WHERE e.user_id = %(user)s
"""
# Per track, artist and album: all time (grain 0) and since the user's recent floor (grain 3).
_ALL_AND_RECENT = """
    CROSS JOIN (VALUES (0), (3)) AS grain(g) WHERE grain.g = 0 OR ev.recent
"""
_BUCKET = """CASE grain.g WHEN 1 THEN date_trunc('month', ev.local)::date WHEN 2 THEN ev.local::date
                ELSE DATE '1970-01-01' END"""

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
              FROM ({_EVENTS}) ev CROSS JOIN (VALUES (0), (1), (3)) AS grain(g)
             WHERE grain.g < 3 OR ev.recent GROUP BY 1, 2, 3""",
    ),
    # Artists and albums: all time and recent only (a month is the sum of its tracks' months).
    StatTable(
        "stat_artist",
        ("grain", "bucket", "artist_id"),
        f"""SELECT grain.g, DATE '1970-01-01', ta.artist_id, count(*), sum(ev.ms_played)
              FROM ({_EVENTS}) ev JOIN track_artists ta ON ta.track_id = ev.track_id {_ALL_AND_RECENT}
             GROUP BY 1, 3""",
    ),
    StatTable(
        "stat_album",
        ("grain", "bucket", "album_id"),
        f"""SELECT grain.g, DATE '1970-01-01', x.album_id, count(*), sum(ev.ms_played)
              FROM ({_EVENTS}) ev JOIN tracks x ON x.id = ev.track_id AND x.album_id IS NOT NULL
                   {_ALL_AND_RECENT}
             GROUP BY 1, 3""",
    ),
    StatTable(
        "stat_hour",
        ("grain", "bucket", "weekday", "hour"),
        f"""SELECT grain.g, {_BUCKET}, extract(isodow FROM ev.local)::smallint,
                   extract(hour FROM ev.local)::smallint, count(*), sum(ev.ms_played)
              FROM ({_EVENTS}) ev CROSS JOIN (VALUES (0), (1), (2)) AS grain(g) GROUP BY 1, 2, 3, 4""",
    ),
)


# The tables whose all-time and recent rows stat_counts counts, and its column for each.
COUNTED = (("stat_track", "tracks"), ("stat_artist", "artists"), ("stat_album", "albums"))
_COUNTS = " UNION ALL ".join(
    f"SELECT grain, '{column}', count(*) FROM {table} "
    "WHERE user_id = %(user)s AND grain IN (0, 3) AND (plays <> 0 OR ms_played <> 0) GROUP BY 1"
    for table, column in COUNTED
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
        stored = conn.execute(
            "SELECT grain, tracks, artists, albums FROM stat_counts WHERE user_id = %(user)s",
            {"user": user_id},
        ).fetchall()
        columns = ("tracks", "artists", "albums")
        have = {(int(g), c): int(n) for g, *ns in stored for c, n in zip(columns, ns, strict=True)}
        want = {(int(g), c): int(n) for g, c, n in conn.execute(_COUNTS, {"user": user_id}).fetchall()}
        for key in sorted(set(have) | set(want)):
            if have.get(key, 0) != want.get(key, 0):
                diffs.append(Difference("stat_counts", key, (have.get(key, 0), 0), (want.get(key, 0), 0)))
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
    conn.execute("DELETE FROM stat_counts WHERE user_id = %(user)s", {"user": user_id})
    conn.execute(
        f"""INSERT INTO stat_counts (user_id, grain, tracks, artists, albums)
            SELECT %(user)s, grain, COALESCE(sum(n) FILTER (WHERE c = 'tracks'), 0),
                   COALESCE(sum(n) FILTER (WHERE c = 'artists'), 0),
                   COALESCE(sum(n) FILTER (WHERE c = 'albums'), 0)
              FROM ({_COUNTS}) x (grain, c, n) GROUP BY grain""",
        {"user": user_id},
    )


def rebuild(conn: psycopg.Connection[Any], user_id: int) -> None:
    """Recompute every statistic of a user from their events, in one transaction."""
    with conn.transaction():
        _lock(conn, user_id)
        _rebuild_in_transaction(conn, user_id)


# The recent rows (grain 3) serve windows that start at or after the user's floor: ``4w`` (28 days)
# for a day after each move, and an hour more for a window resolved just before a move.
RECENT_SPAN = timedelta(days=28, hours=1)
RECENT_STEP = timedelta(hours=12)  # floors less behind than this are left for the next day


def advance_recent(conn: psycopg.Connection[Any], *, now: datetime) -> dict[str, int]:
    """Move every user's recent floor on to ``now - RECENT_SPAN``: the plays it passes leave the
    recent rows (daily, partition maintenance). One transaction per user under the user's lock; a
    user whose ingestion holds it is left for the next run (their windows read a longer strip)."""
    floor = now - RECENT_SPAN
    users = [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM users WHERE recent_floor < %s ORDER BY id", (floor - RECENT_STEP,)
        )
    ]
    moved = busy = 0
    for user_id in users:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (CATALOG_LOCK,))
            got = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s, %s)", (USER_LOCK_CLASS, user_id)
            ).fetchone()
            if not got or not got[0]:
                busy += 1
                continue
            conn.execute(_ADVANCE_SQL, {"user": user_id, "floor": floor})
            for table, column in COUNTED:
                gone = conn.execute(
                    f"DELETE FROM {table} WHERE user_id = %s AND grain = 3 AND plays = 0 AND ms_played = 0",
                    (user_id,),
                ).rowcount
                if gone:
                    count_rows(conn.execute, column, [(user_id, 3, -gone)])
            moved += 1
    return {"recent_floors_moved": moved, "recent_floors_busy": busy}


# The plays between a user's floor and the new one leave the recent rows; the floor moves.
_ADVANCE_SQL = """
WITH old AS (SELECT recent_floor FROM users WHERE id = %(user)s),
gone AS MATERIALIZED (
    SELECT e.track_id, count(*) AS plays, sum(e.ms_played) AS ms FROM listening_events e
     WHERE e.user_id = %(user)s AND e.played_at < %(floor)s
       AND e.played_at >= (SELECT recent_floor FROM old)
     GROUP BY 1
), t AS (
    UPDATE stat_track s SET plays = s.plays - g.plays, ms_played = s.ms_played - g.ms FROM gone g
     WHERE s.user_id = %(user)s AND s.grain = 3 AND s.bucket = DATE '1970-01-01' AND s.track_id = g.track_id
), a AS (
    UPDATE stat_artist s SET plays = s.plays - g.plays, ms_played = s.ms_played - g.ms
      FROM (SELECT ta.artist_id, sum(g.plays) AS plays, sum(g.ms) AS ms
              FROM gone g JOIN track_artists ta ON ta.track_id = g.track_id GROUP BY 1) g
     WHERE s.user_id = %(user)s AND s.grain = 3 AND s.bucket = DATE '1970-01-01' AND s.artist_id = g.artist_id
), b AS (
    UPDATE stat_album s SET plays = s.plays - g.plays, ms_played = s.ms_played - g.ms
      FROM (SELECT x.album_id, sum(g.plays) AS plays, sum(g.ms) AS ms
              FROM gone g JOIN tracks x ON x.id = g.track_id WHERE x.album_id IS NOT NULL GROUP BY 1) g
     WHERE s.user_id = %(user)s AND s.grain = 3 AND s.bucket = DATE '1970-01-01' AND s.album_id = g.album_id
)
UPDATE users SET recent_floor = %(floor)s WHERE id = %(user)s AND recent_floor < %(floor)s
"""


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


def valid_database_timezone(conn: psycopg.Connection[Any], name: str) -> str:
    """``name`` when both Python and PostgreSQL know the zone (their time zone data can differ:
    a zone newer than the server's, or ``localtime``), else :class:`UnknownTimezone`."""
    valid_timezone(name)
    if name not in _database_zone_names(conn):
        raise UnknownTimezone(f"Unknown time zone {name!r}: the database does not know it.")
    return name


def _database_zone_names(conn: psycopg.Connection[Any]) -> frozenset[str]:
    """The zone names of ``pg_timezone_names``, read once per process and server."""
    server = (conn.info.host, conn.info.port, conn.info.server_version)
    names = _DB_ZONES.get(server)
    if names is None:
        names = frozenset(row[0] for row in conn.execute("SELECT name FROM pg_timezone_names").fetchall())
        _DB_ZONES[server] = names
    return names


_DB_ZONES: dict[tuple[str, int, int], frozenset[str]] = {}


def change_timezone(conn: psycopg.Connection[Any], user_id: int, timezone: str) -> bool:
    """Set a user's time zone and rebuild what depends on it (day, month, hour and weekday
    buckets), in one transaction. Returns False when the user does not exist."""
    valid_database_timezone(conn, timezone)
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

    parser = argparse.ArgumentParser(
        prog="python -m myi.statistics.maintenance", description=__doc__.split("\n")[0]
    )
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
