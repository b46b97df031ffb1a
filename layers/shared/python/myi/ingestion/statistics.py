"""Statistics: the deltas of tmp_delta folded into the statistics tables, the statistics that follow
album and credit changes and merges, the row counts of ``stat_counts``, and catalog gaps.

Statistics are per user for all time (grain 0), per month (1) and, for totals only, per day (2),
in the user's zone; plays at or after the user's recent floor are added to the recent rows (grain 3)
too (migration 0009). An artist's or album's statistics are the sum of those of the tracks credited
to it. Rows are added with ``ON CONFLICT DO UPDATE SET plays = plays + excluded.plays``; rows of
grains 0 and 3 that a change empties are deleted, and ``stat_counts`` counts those that come and go.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from myi.ingestion.session import Exec


def fold_sql(user: str) -> str:
    """The statement that adds the statistics of the plays in tmp_delta, in the user's zone.
    ``user`` is how it names the user's id: psycopg's placeholder, or a prepared statement's $1.

    A month without a row in stat_user (grain 1) has no statistics in any table (every statement
    that writes statistics writes that row too), so its rows are inserted without looking for a
    conflict (``*_new``): a first import's months are. The rest are added to what is stored
    (``*_old``). Rows new to the all-time and recent statistics are counted in stat_counts."""
    return f"""
WITH d AS MATERIALIZED (
    SELECT d.track_id, d.plays, d.ms, (d.played_at AT TIME ZONE u.timezone) AS local,
           d.played_at >= u.recent_floor AS recent
      FROM tmp_delta d CROSS JOIN (SELECT timezone, recent_floor FROM users WHERE id = {user}) u
), m AS MATERIALIZED (
    SELECT track_id, date_trunc('month', local)::date AS bucket, sum(plays) AS plays, sum(ms) AS ms
      FROM d GROUP BY 1, 2
), fresh AS MATERIALIZED (
    SELECT DISTINCT bucket FROM m
    EXCEPT SELECT bucket FROM stat_user WHERE user_id = {user} AND grain = 1
), t0 AS MATERIALIZED (
    -- all time (grain 0) and since the recent floor (grain 3)
    SELECT 0 AS g, DATE '1970-01-01' AS bucket, track_id, sum(plays) AS plays, sum(ms) AS ms, false AS new
      FROM m GROUP BY track_id
    UNION ALL
    SELECT 3, DATE '1970-01-01', track_id, sum(plays), sum(ms), false FROM d WHERE recent GROUP BY track_id
), ar AS MATERIALIZED (
    SELECT t0.g, DATE '1970-01-01' AS bucket, ta.artist_id, sum(plays) AS plays, sum(ms) AS ms,
           false AS new
      FROM t0 JOIN track_artists ta ON ta.track_id = t0.track_id
     GROUP BY 1, 3
), al AS MATERIALIZED (
    SELECT t0.g, DATE '1970-01-01' AS bucket, x.album_id, sum(plays) AS plays, sum(ms) AS ms,
           false AS new
      FROM t0 JOIN tracks x ON x.id = t0.track_id
     WHERE x.album_id IS NOT NULL
     GROUP BY 1, 3
), dh AS MATERIALIZED (
    SELECT local::date AS day, date_part('hour', local)::smallint AS hour, sum(plays) AS plays,
           sum(ms) AS ms
      FROM d GROUP BY 1, 2
), us AS MATERIALIZED (
    SELECT x.g, x.bucket, sum(x.plays) AS plays, sum(x.ms) AS ms,
           x.g > 0 AND bool_and(f.bucket IS NOT NULL) AS new
      FROM (SELECT 2 AS g, day AS bucket, plays, ms, date_trunc('month', day)::date AS month FROM dh
            UNION ALL SELECT 1, date_trunc('month', day)::date, plays, ms, date_trunc('month', day)::date
              FROM dh
            UNION ALL SELECT 0, DATE '1970-01-01', plays, ms, NULL FROM dh) x
      LEFT JOIN fresh f ON f.bucket = x.month
     GROUP BY 1, 2
), hm AS MATERIALIZED (
    SELECT date_trunc('month', day)::date AS bucket, extract(isodow FROM day)::smallint AS weekday, hour,
           sum(plays) AS plays, sum(ms) AS ms
      FROM dh GROUP BY 1, 2, 3
), hr AS MATERIALIZED (
    SELECT 2 AS g, day AS bucket, extract(isodow FROM day)::smallint AS weekday, hour, plays, ms,
           date_trunc('month', day)::date IN (SELECT bucket FROM fresh) AS new
      FROM dh
    UNION ALL
    SELECT 1, hm.bucket, weekday, hour, plays, ms, f.bucket IS NOT NULL
      FROM hm LEFT JOIN fresh f ON f.bucket = hm.bucket
    UNION ALL
    SELECT 0, DATE '1970-01-01', weekday, hour, sum(plays), sum(ms), false FROM hm GROUP BY 3, 4
),
t_new AS (
    INSERT INTO stat_track (user_id, grain, bucket, track_id, plays, ms_played)
    SELECT {user}, g, bucket, track_id, plays, ms
      FROM (SELECT 1 AS g, bucket, track_id, plays, ms, bucket IN (SELECT bucket FROM fresh) AS new FROM m) tm
     WHERE new ORDER BY 2, 3, 4
), t_old AS (
    INSERT INTO stat_track (user_id, grain, bucket, track_id, plays, ms_played)
    SELECT {user}, g, bucket, track_id, plays, ms
      FROM (SELECT 1 AS g, bucket, track_id, plays, ms, bucket IN (SELECT bucket FROM fresh) AS new FROM m) tm
     WHERE NOT new ORDER BY 2, 3, 4
    ON CONFLICT (user_id, grain, bucket, track_id) DO UPDATE
       SET plays = stat_track.plays + EXCLUDED.plays, ms_played = stat_track.ms_played + EXCLUDED.ms_played
),
t0_new AS (
    INSERT INTO stat_track (user_id, grain, bucket, track_id, plays, ms_played)
    SELECT {user}, g, bucket, track_id, plays, ms FROM t0 WHERE new ORDER BY 2, 3, 4
    RETURNING grain, true AS inserted
), t0_old AS (
    INSERT INTO stat_track (user_id, grain, bucket, track_id, plays, ms_played)
    SELECT {user}, g, bucket, track_id, plays, ms FROM t0 WHERE NOT new ORDER BY 2, 3, 4
    ON CONFLICT (user_id, grain, bucket, track_id) DO UPDATE
       SET plays = stat_track.plays + EXCLUDED.plays, ms_played = stat_track.ms_played + EXCLUDED.ms_played
    RETURNING grain, xmax = 0 AS inserted
),
a_new AS (
    INSERT INTO stat_artist (user_id, grain, bucket, artist_id, plays, ms_played)
    SELECT {user}, g, bucket, artist_id, plays, ms FROM ar WHERE new ORDER BY 2, 3, 4
    RETURNING grain, true AS inserted
), a_old AS (
    INSERT INTO stat_artist (user_id, grain, bucket, artist_id, plays, ms_played)
    SELECT {user}, g, bucket, artist_id, plays, ms FROM ar WHERE NOT new ORDER BY 2, 3, 4
    ON CONFLICT (user_id, grain, bucket, artist_id) DO UPDATE
       SET plays = stat_artist.plays + EXCLUDED.plays, ms_played = stat_artist.ms_played + EXCLUDED.ms_played
    RETURNING grain, xmax = 0 AS inserted
),
b_new AS (
    INSERT INTO stat_album (user_id, grain, bucket, album_id, plays, ms_played)
    SELECT {user}, g, bucket, album_id, plays, ms FROM al WHERE new ORDER BY 2, 3, 4
    RETURNING grain, true AS inserted
), b_old AS (
    INSERT INTO stat_album (user_id, grain, bucket, album_id, plays, ms_played)
    SELECT {user}, g, bucket, album_id, plays, ms FROM al WHERE NOT new ORDER BY 2, 3, 4
    ON CONFLICT (user_id, grain, bucket, album_id) DO UPDATE
       SET plays = stat_album.plays + EXCLUDED.plays, ms_played = stat_album.ms_played + EXCLUDED.ms_played
    RETURNING grain, xmax = 0 AS inserted
),
u_new AS (
    INSERT INTO stat_user (user_id, grain, bucket, plays, ms_played)
    SELECT {user}, g, bucket, plays, ms FROM us WHERE new ORDER BY 2, 3
), u_old AS (
    INSERT INTO stat_user (user_id, grain, bucket, plays, ms_played)
    SELECT {user}, g, bucket, plays, ms FROM us WHERE NOT new ORDER BY 2, 3
    ON CONFLICT (user_id, grain, bucket) DO UPDATE
       SET plays = stat_user.plays + EXCLUDED.plays, ms_played = stat_user.ms_played + EXCLUDED.ms_played
),
h_new AS (
    INSERT INTO stat_hour (user_id, grain, bucket, weekday, hour, plays, ms_played)
    SELECT {user}, g, bucket, weekday, hour, plays, ms FROM hr WHERE new ORDER BY 2, 3, 4, 5
), h_old AS (
    INSERT INTO stat_hour (user_id, grain, bucket, weekday, hour, plays, ms_played)
    SELECT {user}, g, bucket, weekday, hour, plays, ms FROM hr WHERE NOT new ORDER BY 2, 3, 4, 5
    ON CONFLICT (user_id, grain, bucket, weekday, hour) DO UPDATE
       SET plays = stat_hour.plays + EXCLUDED.plays, ms_played = stat_hour.ms_played + EXCLUDED.ms_played
),
cnt AS (
    INSERT INTO stat_counts (user_id, grain, tracks, artists, albums)
    SELECT {user}, grain, sum(t), sum(a), sum(b) FROM (
        SELECT grain, 1, 0, 0 FROM t0_new UNION ALL SELECT grain, 1, 0, 0 FROM t0_old WHERE inserted
        UNION ALL
        SELECT grain, 0, 1, 0 FROM a_new UNION ALL SELECT grain, 0, 1, 0 FROM a_old WHERE inserted
        UNION ALL
        SELECT grain, 0, 0, 1 FROM b_new UNION ALL SELECT grain, 0, 0, 1 FROM b_old WHERE inserted
    ) x (grain, t, a, b)
    GROUP BY grain
    ON CONFLICT (user_id, grain) DO UPDATE
       SET tracks = stat_counts.tracks + EXCLUDED.tracks, artists = stat_counts.artists + EXCLUDED.artists,
           albums = stat_counts.albums + EXCLUDED.albums
)
SELECT 1
"""


FOLD_SQL = fold_sql("%(user)s")

# Catalog gaps of the batch's catalog rows, for the enrichment worker: tracks without duration or
# album, provisional artists and albums, artists without an image.
GAPS_SQL = """
INSERT INTO catalog_gaps (kind, entity_id, reason)
SELECT 'track', x.id, CASE WHEN x.spotify_id IS NULL THEN 'name_only'
                           WHEN x.duration_ms IS NULL THEN 'missing_duration'
                           ELSE 'missing_album' END
  FROM tmp_tracks t JOIN tracks x ON x.id = t.id
 WHERE x.spotify_id IS NOT NULL AND (x.duration_ms IS NULL OR x.album_id IS NULL)
UNION ALL
SELECT 'artist', a.id, CASE WHEN a.spotify_id IS NULL THEN 'provisional' ELSE 'missing_image' END
  FROM tmp_artists t JOIN artists a ON a.id = t.id
 WHERE a.spotify_id IS NULL OR a.image_url IS NULL
UNION ALL
SELECT 'album', a.id, 'provisional' FROM tmp_albums t JOIN albums a ON a.id = t.id
 WHERE a.spotify_id IS NULL
ORDER BY 1, 2
ON CONFLICT (kind, entity_id) DO NOTHING
"""

# (user, grain, delta) rows added to one column of stat_counts; the others add 0.
COUNT_ROWS_SQL = """
INSERT INTO stat_counts (user_id, grain, tracks, artists, albums)
SELECT u, g, sum(t), sum(a), sum(b)
  FROM unnest(%(users)s::bigint[], %(grains)s::smallint[], %(tracks)s::bigint[], %(artists)s::bigint[],
              %(albums)s::bigint[]) x (u, g, t, a, b)
 GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (user_id, grain) DO UPDATE
   SET tracks = stat_counts.tracks + EXCLUDED.tracks, artists = stat_counts.artists + EXCLUDED.artists,
       albums = stat_counts.albums + EXCLUDED.albums
"""
_COUNTED = ("tracks", "artists", "albums")

# Album and credit changes of stored tracks (tmp_album_moves, tmp_credit_moves) move every user's
# statistics of the albums and artists concerned, derived from stat_track. Each ADD statement tells
# the rows it made new, per user and grain; each DELETE, minus the rows it deleted (emptied).
ADD_ALBUM_MOVES_SQL = """
WITH added AS (
    INSERT INTO stat_album (user_id, grain, bucket, album_id, plays, ms_played)
    SELECT st.user_id, st.grain, st.bucket, m.album_id, sum(m.sign * st.plays), sum(m.sign * st.ms_played)
      FROM (SELECT track_id, old_album AS album_id, -1 AS sign FROM tmp_album_moves
             WHERE old_album IS NOT NULL
            UNION ALL
            SELECT track_id, new_album, 1 FROM tmp_album_moves WHERE new_album IS NOT NULL) m
      JOIN stat_track st ON st.track_id = m.track_id AND st.grain IN (0, 3)
     GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (user_id, grain, bucket, album_id) DO UPDATE
       SET plays = stat_album.plays + EXCLUDED.plays, ms_played = stat_album.ms_played + EXCLUDED.ms_played
    RETURNING user_id, grain, xmax = 0 AS inserted
)
SELECT user_id, grain, count(*) FROM added WHERE inserted GROUP BY 1, 2"""
DELETE_EMPTIED_ALBUMS_SQL = """
WITH gone AS (
    DELETE FROM stat_album s
     WHERE s.album_id IN (SELECT old_album FROM tmp_album_moves UNION SELECT new_album FROM tmp_album_moves)
       AND s.grain IN (0, 3) AND s.plays = 0 AND s.ms_played = 0
    RETURNING s.user_id, s.grain
)
SELECT user_id, grain, -count(*) FROM gone GROUP BY 1, 2"""
ADD_CREDIT_MOVES_SQL = """
WITH added AS (
    INSERT INTO stat_artist (user_id, grain, bucket, artist_id, plays, ms_played)
    SELECT st.user_id, st.grain, st.bucket, m.artist_id, sum(m.sign * st.plays), sum(m.sign * st.ms_played)
      FROM tmp_credit_moves m JOIN stat_track st ON st.track_id = m.track_id AND st.grain IN (0, 3)
     GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (user_id, grain, bucket, artist_id) DO UPDATE
       SET plays = stat_artist.plays + EXCLUDED.plays, ms_played = stat_artist.ms_played + EXCLUDED.ms_played
    RETURNING user_id, grain, xmax = 0 AS inserted
)
SELECT user_id, grain, count(*) FROM added WHERE inserted GROUP BY 1, 2"""
DELETE_EMPTIED_ARTISTS_SQL = """
WITH gone AS (
    DELETE FROM stat_artist s
     WHERE s.artist_id IN (SELECT artist_id FROM tmp_credit_moves)
       AND s.grain IN (0, 3) AND s.plays = 0 AND s.ms_played = 0
    RETURNING s.user_id, s.grain
)
SELECT user_id, grain, -count(*) FROM gone GROUP BY 1, 2"""

# Merges of provisional artists and albums into real ones (tmp_artist_merges, tmp_album_merges):
# every user's statistics move to the real one (a track credited to both artists counts once), and
# the provisional one's rows go.
ADD_ARTIST_MERGES_SQL = """
WITH added AS (
    INSERT INTO stat_artist (user_id, grain, bucket, artist_id, plays, ms_played)
    SELECT st.user_id, st.grain, st.bucket, m.r, sum(st.plays), sum(st.ms_played)
      FROM tmp_artist_merges m
      JOIN track_artists ta ON ta.artist_id = m.p
      JOIN stat_track st ON st.track_id = ta.track_id AND st.grain IN (0, 3)
     WHERE NOT EXISTS (SELECT 1 FROM track_artists x
                        WHERE x.track_id = ta.track_id AND x.artist_id = m.r)
     GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (user_id, grain, bucket, artist_id) DO UPDATE
       SET plays = stat_artist.plays + EXCLUDED.plays, ms_played = stat_artist.ms_played + EXCLUDED.ms_played
    RETURNING user_id, grain, xmax = 0 AS inserted
)
SELECT user_id, grain, count(*) FROM added WHERE inserted GROUP BY 1, 2"""
DELETE_MERGED_ARTISTS_SQL = """
WITH gone AS (
    DELETE FROM stat_artist s WHERE s.artist_id IN (SELECT p FROM tmp_artist_merges)
    RETURNING s.user_id, s.grain
)
SELECT user_id, grain, -count(*) FROM gone GROUP BY 1, 2"""
ADD_ALBUM_MERGES_SQL = """
WITH added AS (
    INSERT INTO stat_album (user_id, grain, bucket, album_id, plays, ms_played)
    SELECT st.user_id, st.grain, st.bucket, m.r, sum(st.plays), sum(st.ms_played)
      FROM tmp_album_merges m
      JOIN tracks x ON x.album_id = m.p
      JOIN stat_track st ON st.track_id = x.id AND st.grain IN (0, 3)
     GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (user_id, grain, bucket, album_id) DO UPDATE
       SET plays = stat_album.plays + EXCLUDED.plays, ms_played = stat_album.ms_played + EXCLUDED.ms_played
    RETURNING user_id, grain, xmax = 0 AS inserted
)
SELECT user_id, grain, count(*) FROM added WHERE inserted GROUP BY 1, 2"""
DELETE_MERGED_ALBUMS_SQL = """
WITH gone AS (
    DELETE FROM stat_album s WHERE s.album_id IN (SELECT p FROM tmp_album_merges)
    RETURNING s.user_id, s.grain
)
SELECT user_id, grain, -count(*) FROM gone GROUP BY 1, 2"""


def apply_deltas(ex: Exec, user_id: int) -> None:
    """Add the statistics of tmp_delta."""
    ex(FOLD_SQL, {"user": user_id})


def record_gaps(ex: Exec) -> int:
    """Record the gaps of the batch's catalog rows; returns how many are new."""
    return ex(GAPS_SQL).rowcount


def count_rows(ex: Callable[..., Any], column: str, deltas: Sequence[tuple[int, int, int]]) -> None:
    """Add (user, grain, delta) rows to ``stat_counts.<column>`` (``ex``: runs a statement)."""
    if not deltas:
        return
    if column not in _COUNTED:
        raise ValueError(f"stat_counts has no column {column!r}")
    users, grains, counts = zip(*deltas, strict=True)
    zeros = [0] * len(deltas)
    ex(
        COUNT_ROWS_SQL,
        {"users": list(users), "grains": list(grains)}
        | {c: list(counts) if c == column else zeros for c in _COUNTED},
    )


def _add_and_delete(ex: Exec, column: str, add: str, delete: str) -> None:
    """Run an ADD and then a DELETE statement, counting in ``stat_counts.<column>`` the rows that
    came and went."""
    added = ex(add).fetchall()
    gone = ex(delete).fetchall()
    count_rows(ex, column, added + gone)


def move_statistics(ex: Exec) -> None:
    """Every user's album and artist statistics follow tmp_album_moves and tmp_credit_moves."""
    _add_and_delete(ex, "albums", ADD_ALBUM_MOVES_SQL, DELETE_EMPTIED_ALBUMS_SQL)
    _add_and_delete(ex, "artists", ADD_CREDIT_MOVES_SQL, DELETE_EMPTIED_ARTISTS_SQL)


def merge_artist_statistics(ex: Exec) -> None:
    """Every user's statistics of the provisional artists of tmp_artist_merges move to the real ones."""
    _add_and_delete(ex, "artists", ADD_ARTIST_MERGES_SQL, DELETE_MERGED_ARTISTS_SQL)


def merge_album_statistics(ex: Exec) -> None:
    """Every user's statistics of the provisional albums of tmp_album_merges move to the real ones."""
    _add_and_delete(ex, "albums", ADD_ALBUM_MERGES_SQL, DELETE_MERGED_ALBUMS_SQL)
