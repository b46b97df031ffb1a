"""What the statistics routes answer: overview, top lists, activity and history of one user.

Every query is scoped to its user and reads the statistics tables that :mod:`myi.ingestion` keeps
exact: all-time rows (grain 0) for ``all``; for a window that starts at or after the user's recent
floor (four weeks and at most a day ago: ``4w``), the recent rows (grain 3) less the plays of the
strip between the floor and the window; for any other bounded window, the monthly rows (grain 1)
that lie wholly inside it plus the events of the partial buckets at its edges (see
:mod:`myi.windows`); day series from the daily rows of ``stat_user``. Lists page with keyset
cursors: a cursor carries the last row's sort key, its rank and the resolved window, so a page never
rescans what came before it and a rolling window does not move under a client that is paging
through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import psycopg

from myi import cursors, windows
from myi.db import fetch_all, fetch_one
from myi.errors import InvalidRequest, NotFound
from myi.users import first_and_last_played, iso
from myi.windows import Window

Kind = Literal["tracks", "artists", "albums"]
By = Literal["plays", "ms_played"]


@dataclass(frozen=True)
class _Top:
    table: str  # the all-time rows (grain 0)
    key: str
    # rows (id, plays, ms_played) of the whole months: monthly statistics are kept per track, so an
    # artist's or album's month is the sum of its tracks' months
    months: str
    # rows (id, plays, ms_played) of the edge events (summed per track first, then credited);
    # {edge} is the events' predicate
    edge: str
    # rows (id, plays, ms) of the recent strip (per track: ``strip``), credited
    strip: str


_TOPS: dict[str, _Top] = {
    "tracks": _Top(
        "stat_track",
        "track_id",
        "SELECT st.track_id, st.plays, st.ms_played FROM stat_track st WHERE {months}",
        "SELECT e.track_id, 1, e.ms_played FROM listening_events e WHERE {edge}",
        "SELECT track_id, plays, ms FROM strip",
    ),
    "artists": _Top(
        "stat_artist",
        "artist_id",
        """SELECT ta.artist_id, st.plays, st.ms_played
             FROM stat_track st JOIN track_artists ta ON ta.track_id = st.track_id WHERE {months}""",
        """SELECT ta.artist_id, e.plays, e.ms_played FROM (
               SELECT e.track_id, count(*) AS plays, sum(e.ms_played) AS ms_played
                 FROM listening_events e WHERE {edge} GROUP BY 1) e
             JOIN track_artists ta ON ta.track_id = e.track_id""",
        """SELECT ta.artist_id, sum(s.plays), sum(s.ms) FROM strip s
             JOIN track_artists ta ON ta.track_id = s.track_id GROUP BY 1""",
    ),
    "albums": _Top(
        "stat_album",
        "album_id",
        """SELECT t.album_id, st.plays, st.ms_played
             FROM stat_track st JOIN tracks t ON t.id = st.track_id
            WHERE t.album_id IS NOT NULL AND {months}""",
        """SELECT t.album_id, e.plays, e.ms_played FROM (
               SELECT e.track_id, count(*) AS plays, sum(e.ms_played) AS ms_played
                 FROM listening_events e WHERE {edge} GROUP BY 1) e
             JOIN tracks t ON t.id = e.track_id
            WHERE t.album_id IS NOT NULL""",
        """SELECT t.album_id, sum(s.plays), sum(s.ms) FROM strip s
             JOIN tracks t ON t.id = s.track_id WHERE t.album_id IS NOT NULL GROUP BY 1""",
    ),
}

# The events of a bounded window that its whole buckets do not cover.
_EDGE = """e.user_id = %(user)s
       AND ((e.played_at >= %(start)s AND e.played_at < %(m_inner_start)s)
         OR (e.played_at >= %(m_inner_end)s AND e.played_at < %(end)s))"""
# The events of a bounded window that its whole days do not cover.
_DAY_EDGE = """e.user_id = %(user)s
       AND ((e.played_at >= %(start)s AND e.played_at < %(d_inner_start)s)
         OR (e.played_at >= %(d_inner_end)s AND e.played_at < %(end)s))"""
# The plays, per track, that a window's recent rows hold and the window does not: from the floor
# to the window's start, and from its end on. The floor is read in the statement itself (it moves
# only forward, with the recent rows, in one transaction); %(floor)s, read just before, gives the
# planner a plain bound to leave out every older partition.
_STRIP = """strip AS MATERIALIZED (
    SELECT e.track_id, count(*) AS plays, sum(e.ms_played) AS ms FROM listening_events e
     WHERE e.user_id = %(user)s AND e.played_at >= %(floor)s
       AND e.played_at >= (SELECT recent_floor FROM users WHERE id = %(user)s)
       AND (e.played_at < %(start)s OR e.played_at >= %(end)s)
     GROUP BY 1
)"""
# Whether the recent rows still serve the window (false once the floor has passed its start).
_FITS = "%(start)s >= (SELECT recent_floor FROM users WHERE id = %(user)s)"
_RECENT = "s.user_id = %(user)s AND s.grain = 3 AND s.bucket = DATE '1970-01-01'"


def _recent_rows(table: str, key: str, out: str) -> str:
    """Rows (id, plays, ms_played) of a window from ``table``'s recent rows, less ``out``."""
    return f"""SELECT s.{key}, s.plays - COALESCE(o.plays, 0), s.ms_played - COALESCE(o.ms, 0)
                 FROM {table} s LEFT JOIN ({out}) o (id, plays, ms) ON o.id = s.{key}
                WHERE {_RECENT} AND {_FITS}"""


_MONTHS = "user_id = %(user)s AND grain = 1 AND bucket >= %(m_first)s AND bucket < %(m_stop)s"
_TRACK_MONTHS = (
    "st.user_id = %(user)s AND st.grain = 1 AND st.bucket >= %(m_first)s AND st.bucket < %(m_stop)s"
)

_ARTISTS_OF_TRACK = """(SELECT coalesce(json_agg(json_build_object('id', a.id::text, 'name', a.name)
                                ORDER BY ta.position, a.id), '[]'::json)
                        FROM track_artists ta JOIN artists a ON a.id = ta.artist_id
                       WHERE ta.track_id = {track})"""
_ARTISTS_OF_ALBUM = """(SELECT coalesce(json_agg(json_build_object('id', a.id::text, 'name', a.name)
                                ORDER BY aa.position, a.id), '[]'::json)
                        FROM album_artists aa JOIN artists a ON a.id = aa.artist_id
                       WHERE aa.album_id = {album})"""

_DETAILS: dict[str, str] = {
    "tracks": f"""SELECT t.id, t.name, t.spotify_id, al.image_url,
                         {_ARTISTS_OF_TRACK.format(track="t.id")} AS artists
                    FROM tracks t LEFT JOIN albums al ON al.id = t.album_id WHERE t.id = ANY(%(ids)s)""",
    "artists": """SELECT a.id, a.name, a.spotify_id, a.image_url, NULL::json AS artists
                    FROM artists a WHERE a.id = ANY(%(ids)s)""",
    "albums": f"""SELECT al.id, al.name, al.spotify_id, al.image_url,
                         {_ARTISTS_OF_ALBUM.format(album="al.id")} AS artists
                    FROM albums al WHERE al.id = ANY(%(ids)s)""",
}


# --- the user and the window ---------------------------------------------------------------------


def user_zone(conn: psycopg.Connection[Any], user_id: int) -> ZoneInfo:
    row = conn.execute("SELECT timezone FROM users WHERE id = %s", (user_id,)).fetchone()
    if row is None:
        raise NotFound("No such user.")
    return ZoneInfo(row[0])


def recent_floor(conn: psycopg.Connection[Any], user_id: int) -> datetime | None:
    row = conn.execute("SELECT recent_floor FROM users WHERE id = %s", (user_id,)).fetchone()
    return row[0] if row else None


def _recent(conn: psycopg.Connection[Any], user_id: int, window: Window) -> datetime | None:
    """The user's recent floor when the window can be answered from the recent rows."""
    if not window.bounded:
        return None
    assert window.start is not None
    floor = recent_floor(conn, user_id)
    return floor if floor is not None and floor <= window.start else None


def _window_params(window: Window, user_id: int) -> dict[str, Any]:
    assert window.start is not None and window.end is not None
    params: dict[str, Any] = {
        "user": user_id,
        "start": window.start,
        "end": window.end,
        "tz": window.zone.key,
    }
    params.update(windows.months(window.start, window.end, window.zone).as_params("m"))
    params.update(windows.days(window.start, window.end, window.zone).as_params("d"))
    return params


def _echo(
    conn: psycopg.Connection[Any], user_id: int, window: Window, now: datetime
) -> dict[str, str | None]:
    """The resolved window as API.md echoes it; ``all`` runs from the first play (or now)."""
    if window.bounded:
        return {"from": iso(window.start), "to": iso(window.end)}
    first, _ = first_and_last_played(conn, user_id)
    return {"from": iso(min(first or now, now)), "to": iso(now)}


def _utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


_DAY = timedelta(days=1)


# --- overview ------------------------------------------------------------------------------------


class RawJson(str):
    """A value already serialised as JSON by PostgreSQL (long lists: no Python loop over them)."""


_DAYS_JSON = """(SELECT coalesce(json_agg(json_build_object('date', day, 'plays', plays,
                                                       'ms_played', ms_played) ORDER BY day),
                                 '[]'::json)::text FROM d) AS days,
                 (SELECT coalesce(sum(plays), 0) FROM d) AS plays,
                 (SELECT coalesce(sum(ms_played), 0) FROM d) AS ms_played"""


# Plays per local day of a bounded window: its whole days' rows and the events of its partial days.
_WINDOW_DAYS = f"""d (day, plays, ms_played) AS (
    SELECT bucket, plays, ms_played FROM stat_user
     WHERE user_id = %(user)s AND grain = 2 AND bucket >= %(d_first)s AND bucket < %(d_stop)s
       AND plays > 0
    UNION ALL
    SELECT (e.played_at AT TIME ZONE %(tz)s)::date, count(*), sum(e.ms_played)
      FROM listening_events e WHERE {_DAY_EDGE}
     GROUP BY 1
)"""


def overview(conn: psycopg.Connection[Any], user_id: int, window: Window, *, now: datetime) -> dict[str, Any]:
    """Totals, distinct tracks, artists and albums, and plays per local day of a window."""
    row: dict[str, Any] | None = None
    if not window.bounded:
        row = _overview_all(conn, user_id)
    else:
        floor = _recent(conn, user_id, window)
        if floor is not None:
            row = _overview_recent(conn, user_id, window, floor)
        if row is None:
            row = _overview_months(conn, user_id, window)
    return {
        "window": _echo(conn, user_id, window, now),
        "plays": int(row["plays"]),
        "ms_played": int(row["ms_played"]),
        "tracks": int(row["tracks"]),
        "artists": int(row["artists"]),
        "albums": int(row["albums"]),
        "days": RawJson(row["days"]),
    }


def _recent_count(kind: str) -> str:
    """The items a window's recent rows hold (counted in stat_counts) less those whose every
    recent play is in the (short) strip."""
    spec = _TOPS[kind]
    return f"""(COALESCE((SELECT {kind} FROM stat_counts WHERE user_id = %(user)s AND grain = 3), 0)
              - (SELECT count(*) FROM ({spec.strip}) o (id, plays, ms)
                   JOIN {spec.table} s ON {_RECENT} AND s.{spec.key} = o.id
                  WHERE s.plays > 0 AND s.plays <= o.plays))"""


def _overview_recent(
    conn: psycopg.Connection[Any], user_id: int, window: Window, floor: datetime
) -> dict[str, Any] | None:
    """From the recent rows; None when the floor has passed the window's start meanwhile."""
    row = fetch_one(
        conn,
        f"""
        WITH {_WINDOW_DAYS}, {_STRIP}
        SELECT {_DAYS_JSON}, {_recent_count("tracks")} AS tracks, {_recent_count("artists")} AS artists,
               {_recent_count("albums")} AS albums, {_FITS} AS fits
        """,
        {**_window_params(window, user_id), "floor": floor},
    )
    assert row is not None
    return row if row["fits"] else None


def _overview_months(conn: psycopg.Connection[Any], user_id: int, window: Window) -> dict[str, Any]:
    row = fetch_one(
        conn,
        f"""
        WITH {_WINDOW_DAYS},
        ev AS MATERIALIZED (SELECT e.track_id FROM listening_events e WHERE {_EDGE}),
        tr AS (SELECT track_id FROM stat_track WHERE {_MONTHS} AND plays > 0
               UNION SELECT track_id FROM ev)
        SELECT {_DAYS_JSON},
               (SELECT count(*) FROM tr) AS tracks,
               -- (the window's tracks are looked up one by one: no pass over the catalog)
               (SELECT count(DISTINCT ta.artist_id) FROM tr CROSS JOIN LATERAL (
                    SELECT artist_id FROM track_artists WHERE track_id = tr.track_id OFFSET 0) ta)
                   AS artists,
               (SELECT count(DISTINCT t.album_id) FROM tr CROSS JOIN LATERAL (
                    SELECT album_id FROM tracks WHERE id = tr.track_id OFFSET 0) t) AS albums
        """,
        _window_params(window, user_id),
    )
    assert row is not None
    return row


def _overview_all(conn: psycopg.Connection[Any], user_id: int) -> dict[str, Any]:
    row = fetch_one(
        conn,
        f"""
        WITH d (day, plays, ms_played) AS (
            SELECT bucket, plays, ms_played FROM stat_user
             WHERE user_id = %(user)s AND grain = 2 AND plays > 0
        )
        SELECT {_DAYS_JSON},
               COALESCE(c.tracks, 0) AS tracks, COALESCE(c.artists, 0) AS artists,
               COALESCE(c.albums, 0) AS albums
          FROM (SELECT 1) one LEFT JOIN stat_counts c ON c.user_id = %(user)s AND c.grain = 0
        """,
        {"user": user_id},
    )
    assert row is not None
    return row


# --- cursors -------------------------------------------------------------------------------------
# The codec (signed, scoped to the list and the user, instants as microseconds) is myi.cursors.


def _keyset(first: str, second: str, key: str) -> str:
    """Rows after the cursor in the order ``first DESC, second DESC, key ASC``; the leading
    ``first <=`` lets an index on ``first`` start at the cursor."""
    return (
        f"{first} <= %(k1)s AND ({first} < %(k1)s OR {second} < %(k2)s"
        f" OR ({second} = %(k2)s AND {key} > %(kid)s))"
    )


# --- top lists -----------------------------------------------------------------------------------


def top(
    conn: psycopg.Connection[Any],
    user_id: int,
    kind: Kind,
    window: Window,
    *,
    by: By,
    limit: int,
    cursor: str | None,
    now: datetime,
) -> dict[str, Any]:
    """One page of the user's top tracks, artists or albums of a window, ranked by ``by``
    descending, ties broken by the other measure descending, then by id ascending."""
    spec = _TOPS[kind]
    first, second = ("plays", "ms_played") if by == "plays" else ("ms_played", "plays")
    rank = 0
    params: dict[str, Any] = {"user": user_id, "limit": limit + 1}
    if cursor:
        c = cursors.decode("top", user_id, cursor)
        try:
            if c.get("kind") != kind or c.get("by") != by:
                raise ValueError(cursor)
            rank = int(c["rank"])
            if rank < 0:
                raise ValueError(cursor)
            k1, k2, kid = (int(v) for v in c["key"])
            bounds = c["window"]
            if not isinstance(bounds, list) or len(bounds) != 2:
                raise ValueError(cursor)
            start = end = None
            if bounds != [None, None]:
                start, end = cursors.instant(bounds[0]), cursors.instant(bounds[1])
                if start >= end:
                    raise ValueError(cursor)
        except (KeyError, ValueError, TypeError, IndexError, OverflowError) as exc:
            raise InvalidRequest(
                "Invalid parameter cursor: pass back the value of next unchanged, with the same kind and by."
            ) from exc
        window = Window(start, end, window.zone) if start is not None and end is not None else window
        params.update({"k1": k1, "k2": k2, "kid": kid})
    after = _keyset(first, second, "id") if cursor else "TRUE"
    rows: list[dict[str, Any]] | None = None
    if window.bounded:
        params.update(_window_params(window, user_id))
        floor = _recent(conn, user_id, window)
        if floor is not None:
            rows = fetch_all(
                conn,
                f"""
                WITH {_STRIP}
                SELECT id, plays, ms_played FROM ({_recent_rows(spec.table, spec.key, spec.strip)})
                       x (id, plays, ms_played)
                 WHERE plays > 0 AND {after}
                 ORDER BY {first} DESC, {second} DESC, id LIMIT %(limit)s""",
                {**params, "floor": floor},
            )
            if not rows and _recent(conn, user_id, window) is None:
                rows = None  # the floor passed the window's start meanwhile: from the months
        ranked = f"""
            SELECT id, plays, ms_played FROM (
                SELECT id, sum(plays)::bigint AS plays, sum(ms_played)::bigint AS ms_played FROM (
                    {spec.months.format(months=_TRACK_MONTHS)}
                    UNION ALL {spec.edge.format(edge=_EDGE)}
                ) x (id, plays, ms_played) GROUP BY id
            ) agg
             WHERE plays > 0 AND {after}
             ORDER BY {first} DESC, {second} DESC, id LIMIT %(limit)s"""
    else:
        ranked = f"""
            SELECT {spec.key} AS id, plays, ms_played FROM {spec.table}
             WHERE user_id = %(user)s AND grain = 0 AND plays > 0
               AND {_keyset(first, second, spec.key) if cursor else "TRUE"}
             ORDER BY {first} DESC, {second} DESC, {spec.key} LIMIT %(limit)s"""
    if rows is None:
        rows = fetch_all(conn, ranked, params)
    more = len(rows) > limit
    rows = rows[:limit]
    details = (
        {r["id"]: r for r in fetch_all(conn, _DETAILS[kind], {"ids": [row["id"] for row in rows]})}
        if rows
        else {}
    )
    items = []
    for i, row in enumerate(rows, start=rank + 1):
        d = details.get(row["id"], {})
        item: dict[str, Any] = {
            "rank": i,
            "id": str(row["id"]),
            "spotify_id": d.get("spotify_id"),
            "name": d.get("name", ""),
            "image_url": d.get("image_url"),
            "plays": int(row["plays"]),
            "ms_played": int(row["ms_played"]),
        }
        if kind != "artists":
            item["artists"] = d.get("artists") or []
        items.append(item)
    nxt = None
    if more:
        last = rows[-1]
        nxt = cursors.encode(
            "top",
            user_id,
            {
                "kind": kind,
                "by": by,
                "rank": rank + len(rows),
                "key": [int(last[first]), int(last[second]), int(last["id"])],
                "window": [cursors.to_microseconds(window.start), cursors.to_microseconds(window.end)],
            },
        )
    return {"window": _echo(conn, user_id, window, now), "by": by, "items": items, "next": nxt}


# --- activity ------------------------------------------------------------------------------------


def activity(conn: psycopg.Connection[Any], user_id: int, window: Window, *, now: datetime) -> dict[str, Any]:
    """Plays and time by hour of day, by weekday (Monday first) and both, in the user's zone."""
    if window.bounded:
        rows = fetch_all(
            conn,
            f"""
            SELECT weekday, hour, sum(plays)::bigint AS plays, sum(ms_played)::bigint AS ms_played FROM (
                SELECT weekday, hour, plays, ms_played FROM stat_hour WHERE {_MONTHS}
                UNION ALL
                SELECT weekday, hour, plays, ms_played FROM stat_hour
                 WHERE user_id = %(user)s AND grain = 2 AND bucket >= %(d_first)s AND bucket < %(d_stop)s
                   AND NOT (bucket >= %(m_first)s AND bucket < %(m_stop)s)
                UNION ALL
                SELECT extract(isodow FROM e.played_at AT TIME ZONE %(tz)s)::smallint,
                       extract(hour FROM e.played_at AT TIME ZONE %(tz)s)::smallint, 1, e.ms_played
                  FROM listening_events e WHERE {_DAY_EDGE}
            ) x GROUP BY 1, 2
            """,
            _window_params(window, user_id),
        )
    else:
        rows = fetch_all(
            conn,
            """SELECT weekday, hour, plays, ms_played FROM stat_hour
                WHERE user_id = %(user)s AND grain = 0 AND plays > 0""",
            {"user": user_id},
        )
    hours = [{"plays": 0, "ms_played": 0} for _ in range(24)]
    weekdays = [{"plays": 0, "ms_played": 0} for _ in range(7)]
    heatmap = [[0] * 24 for _ in range(7)]
    for r in rows:
        wd, hour, plays, ms = int(r["weekday"]) - 1, int(r["hour"]), int(r["plays"]), int(r["ms_played"])
        hours[hour]["plays"] += plays
        hours[hour]["ms_played"] += ms
        weekdays[wd]["plays"] += plays
        weekdays[wd]["ms_played"] += ms
        heatmap[wd][hour] += plays
    return {
        "window": _echo(conn, user_id, window, now),
        "hours": hours,
        "weekdays": weekdays,
        "heatmap": heatmap,
    }


# --- history -------------------------------------------------------------------------------------


def _history_floor(
    conn: psycopg.Connection[Any], user_id: int, upper: datetime | None, need: int
) -> datetime:
    """A time before which the next ``need`` plays up to ``upper`` cannot lie, from the monthly
    statistics: the page then reads a few months' partitions, not every month of the history. The
    month of ``upper`` itself is not counted (some of its plays may come after it)."""
    rows = conn.execute(
        """SELECT bucket, plays FROM stat_user
            WHERE user_id = %s AND grain = 1 AND plays > 0 AND bucket <= %s ORDER BY bucket DESC""",
        (user_id, (upper + _DAY).date() if upper else date.max),
    ).fetchall()
    seen = 0
    for bucket, plays in rows[1:]:
        seen += int(plays)
        if seen >= need:
            return _utc(bucket) - _DAY
    return _utc(rows[-1][0]) - _DAY if rows else windows.EPOCH


def history(conn: psycopg.Connection[Any], user_id: int, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """The user's plays, newest first (ties: track id descending)."""
    params: dict[str, Any] = {"user": user_id, "limit": limit + 1}
    keyset = ""
    if cursor:
        c = cursors.decode("history", user_id, cursor)
        try:
            params["c_at"] = cursors.instant(c["at"])
            params["c_track"] = int(c["track"])
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            raise InvalidRequest(cursors.REFUSED) from exc
        keyset = "AND e.played_at <= %(c_at)s AND (e.played_at, e.track_id) < (%(c_at)s, %(c_track)s)"
    params["floor"] = _history_floor(conn, user_id, params.get("c_at"), limit + 1)
    rows = fetch_all(
        conn,
        f"""
        WITH page AS (
            SELECT e.played_at, e.track_id, e.ms_played, e.is_estimated, e.origin
              FROM listening_events e
             WHERE e.user_id = %(user)s AND e.played_at >= %(floor)s {keyset}
             ORDER BY e.played_at DESC, e.track_id DESC
             LIMIT %(limit)s
        )
        SELECT p.*, t.name AS track_name, t.spotify_id AS track_spotify_id,
               al.id AS album_id, al.name AS album_name, al.image_url AS album_image_url,
               {_ARTISTS_OF_TRACK.format(track="p.track_id")} AS artists
          FROM page p JOIN tracks t ON t.id = p.track_id LEFT JOIN albums al ON al.id = t.album_id
         ORDER BY p.played_at DESC, p.track_id DESC
        """,
        params,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "played_at": iso(r["played_at"]),
            "ms_played": int(r["ms_played"]),
            "is_estimated": bool(r["is_estimated"]),
            "source": "api" if r["origin"] == "api" else "import",
            "track": {
                "id": str(r["track_id"]),
                "spotify_id": r["track_spotify_id"],
                "name": r["track_name"],
                "artists": r["artists"] or [],
                "album": (
                    {"id": str(r["album_id"]), "name": r["album_name"], "image_url": r["album_image_url"]}
                    if r["album_id"] is not None
                    else None
                ),
            },
        }
        for r in rows
    ]
    nxt = (
        cursors.encode(
            "history",
            user_id,
            {"at": cursors.to_microseconds(rows[-1]["played_at"]), "track": int(rows[-1]["track_id"])},
        )
        if more
        else None
    )
    return {"items": items, "next": nxt}
