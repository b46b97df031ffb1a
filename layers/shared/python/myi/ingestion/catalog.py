"""Catalog: the artists, albums and tracks of a batch's staging tables upserted, and their ids.

Keys are sorted, so concurrent users' batches lock rows in one order. Export records create what is
missing and fill a missing duration, never an existing track's album or credits (enrichment does,
with full objects); full API objects fill and correct. When an existing track's album or credits
change, statistics follow (:mod:`myi.ingestion.merges`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from myi.ingestion import merges
from myi.ingestion.locks import CATALOG_EXCLUSIVE_SQL
from myi.ingestion.session import Exec, transaction
from myi.ingestion.staging import Staged, stage
from myi.ingestion.statistics import record_gaps
from myi.plays import Play, TrackRef

# Artists: real ones by Spotify id, provisional ones by name.
INSERT_REAL_ARTISTS_SQL = """
INSERT INTO artists (spotify_id, name, name_key, image_url)
SELECT spotify_id, name, name_key, image_url FROM tmp_artists WHERE spotify_id IS NOT NULL
ORDER BY spotify_id
ON CONFLICT (spotify_id) DO NOTHING"""
INSERT_NAMED_ARTISTS_SQL = """
INSERT INTO artists (name, name_key)
SELECT name, name_key FROM tmp_artists WHERE spotify_id IS NULL ORDER BY name_key
ON CONFLICT (name_key) WHERE spotify_id IS NULL DO NOTHING"""
# Real artists' names and images corrected (apart from the insert: an upsert locks every row it
# meets, changed or not, and concurrent syncs of other users naming the same artists would wait for
# one another), and the batch's ids.
CORRECT_REAL_ARTISTS_SQL = """
WITH corrected AS (
    UPDATE artists a SET name = t.name, name_key = t.name_key, image_url = COALESCE(t.image_url, a.image_url),
           updated_at = now()
      FROM tmp_artists t
     WHERE t.spotify_id IS NOT NULL AND a.spotify_id = t.spotify_id
       AND (a.name, a.image_url) IS DISTINCT FROM (t.name, COALESCE(t.image_url, a.image_url))
)
UPDATE tmp_artists t SET id = a.id FROM artists a
 WHERE t.spotify_id IS NOT NULL AND a.spotify_id = t.spotify_id"""
NAMED_ARTIST_IDS_SQL = """
UPDATE tmp_artists t SET id = a.id FROM artists a
 WHERE t.spotify_id IS NULL AND a.spotify_id IS NULL AND a.name_key = t.name_key"""

# Albums, the same way; provisional albums are keyed by (artist name, album name).
INSERT_REAL_ALBUMS_SQL = """
INSERT INTO albums (spotify_id, name, name_key, artist_key, image_url, release_date)
SELECT spotify_id, name, name_key, artist_key, image_url, release_date FROM tmp_albums
 WHERE spotify_id IS NOT NULL ORDER BY spotify_id
ON CONFLICT (spotify_id) DO NOTHING"""
INSERT_NAMED_ALBUMS_SQL = """
INSERT INTO albums (name, name_key, artist_key)
SELECT name, name_key, artist_key FROM tmp_albums WHERE spotify_id IS NULL ORDER BY artist_key, name_key
ON CONFLICT (artist_key, name_key) WHERE spotify_id IS NULL DO NOTHING"""
CORRECT_REAL_ALBUMS_SQL = """
WITH corrected AS (
    UPDATE albums a SET name = t.name, name_key = t.name_key, artist_key = t.artist_key,
           image_url = COALESCE(t.image_url, a.image_url),
           release_date = COALESCE(t.release_date, a.release_date), updated_at = now()
      FROM tmp_albums t
     WHERE t.spotify_id IS NOT NULL AND a.spotify_id = t.spotify_id
       AND (a.name, a.image_url, a.release_date) IS DISTINCT FROM
           (t.name, COALESCE(t.image_url, a.image_url), COALESCE(t.release_date, a.release_date))
)
UPDATE tmp_albums t SET id = a.id FROM albums a
 WHERE t.spotify_id IS NOT NULL AND a.spotify_id = t.spotify_id"""
NAMED_ALBUM_IDS_SQL = """
UPDATE tmp_albums t SET id = a.id FROM albums a
 WHERE t.spotify_id IS NULL AND a.spotify_id IS NULL AND a.artist_key = t.artist_key
   AND a.name_key = t.name_key"""
ALBUM_CREDITS_SQL = """
INSERT INTO album_artists (album_id, artist_id, position)
SELECT al.id, ar.id, aa.position FROM tmp_album_artists aa
  JOIN tmp_albums al USING (ak) JOIN tmp_artists ar USING (rk)
 ORDER BY 1, 2
ON CONFLICT DO NOTHING"""
TRACK_ALBUM_IDS_SQL = """
UPDATE tmp_tracks t SET album_id = al.id FROM tmp_albums al WHERE al.ak = t.ak"""

# Tracks known by Spotify id: new ones inserted, existing ones looked up.
INSERT_REAL_TRACKS_SQL = """
WITH new AS (
    INSERT INTO tracks (spotify_id, name, name_key, artist_key, album_id, duration_ms, explicit)
    SELECT spotify_id, name, name_key, artist_key, album_id, duration_ms, explicit FROM tmp_tracks
     WHERE spotify_id IS NOT NULL ORDER BY spotify_id
    ON CONFLICT (spotify_id) DO NOTHING
    RETURNING id, spotify_id
)
UPDATE tmp_tracks t SET id = new.id, is_new = true FROM new WHERE new.spotify_id = t.spotify_id"""
REAL_TRACK_IDS_SQL = """
UPDATE tmp_tracks t SET id = x.id FROM tracks x
 WHERE t.id IS NULL AND t.spotify_id IS NOT NULL AND x.spotify_id = t.spotify_id"""
# Tracks known by name only (account data): an existing track of that artist and name (a real one
# first), else a provisional name-only track (one another transaction inserted meanwhile, last).
NAMED_TRACK_IDS_SQL = """
UPDATE tmp_tracks t SET id = (
    SELECT x.id FROM tracks x WHERE x.artist_key = t.artist_key AND x.name_key = t.name_key
     ORDER BY (x.spotify_id IS NULL), x.id LIMIT 1)
 WHERE t.spotify_id IS NULL"""
INSERT_NAMED_TRACKS_SQL = """
WITH new AS (
    INSERT INTO tracks (name, name_key, artist_key, album_id, duration_ms)
    SELECT name, name_key, artist_key, album_id, duration_ms FROM tmp_tracks
     WHERE spotify_id IS NULL AND id IS NULL ORDER BY artist_key, name_key
    ON CONFLICT (artist_key, name_key) WHERE spotify_id IS NULL DO NOTHING
    RETURNING id, artist_key, name_key
)
UPDATE tmp_tracks t SET id = new.id, is_new = true FROM new
 WHERE t.spotify_id IS NULL AND new.artist_key = t.artist_key AND new.name_key = t.name_key"""
LATE_NAMED_TRACK_IDS_SQL = """
UPDATE tmp_tracks t SET id = x.id FROM tracks x
 WHERE t.id IS NULL AND x.spotify_id IS NULL AND x.artist_key = t.artist_key AND x.name_key = t.name_key"""

# Album changes of existing tracks come from full API data only (it corrects, and the statistics of
# every user move with it under the exclusive catalog lock). Export data never changes an existing
# track's album or credits, not even a missing one: other users' batches may be counting its plays
# at the same time under the shared lock. Such a track is a catalog gap that enrichment fills.
ALBUM_MOVES_SQL = """
INSERT INTO tmp_album_moves (track_id, old_album, new_album)
SELECT x.id, x.album_id, t.album_id FROM tmp_tracks t JOIN tracks x ON x.id = t.id
 WHERE NOT t.is_new AND t.album_id IS NOT NULL AND x.album_id IS DISTINCT FROM t.album_id
   AND t.full_data"""
UPDATE_TRACKS_SQL = """
UPDATE tracks x SET
       name = CASE WHEN t.full_data THEN t.name ELSE x.name END,
       name_key = CASE WHEN t.full_data THEN t.name_key ELSE x.name_key END,
       artist_key = CASE WHEN t.full_data THEN t.artist_key ELSE x.artist_key END,
       album_id = CASE WHEN t.full_data THEN COALESCE(t.album_id, x.album_id) ELSE x.album_id END,
       duration_ms = CASE WHEN t.full_data THEN COALESCE(t.duration_ms, x.duration_ms)
                          ELSE COALESCE(x.duration_ms, t.duration_ms) END,
       explicit = COALESCE(t.explicit, x.explicit),
       updated_at = now()
  FROM tmp_tracks t
 WHERE x.id = t.id AND NOT t.is_new
   AND ((t.full_data AND (x.name, x.artist_key, x.album_id, x.duration_ms, x.explicit)
                         IS DISTINCT FROM (t.name, t.artist_key, COALESCE(t.album_id, x.album_id),
                                           COALESCE(t.duration_ms, x.duration_ms),
                                           COALESCE(t.explicit, x.explicit)))
        OR (NOT t.full_data AND x.duration_ms IS NULL AND t.duration_ms IS NOT NULL))"""
# Credits: full API data replaces the credits of existing tracks (statistics move with them); new
# tracks take the credits of the batch.
CREDIT_MOVES_SQL = """
INSERT INTO tmp_credit_moves (track_id, artist_id, sign)
SELECT old.track_id, old.artist_id, -1 FROM track_artists old
  JOIN tmp_tracks t ON t.id = old.track_id AND t.full_data AND NOT t.is_new
 WHERE NOT EXISTS (SELECT 1 FROM tmp_track_artists ta JOIN tmp_artists ar USING (rk)
                    WHERE ta.tk = t.tk AND ar.id = old.artist_id)
UNION ALL
SELECT t.id, ar.id, 1 FROM tmp_tracks t
  JOIN tmp_track_artists ta USING (tk) JOIN tmp_artists ar USING (rk)
 WHERE NOT t.is_new
   AND t.full_data AND NOT EXISTS (SELECT 1 FROM track_artists x
                                    WHERE x.track_id = t.id AND x.artist_id = ar.id)"""
DELETE_MOVED_CREDITS_SQL = """
DELETE FROM track_artists x USING tmp_credit_moves m
 WHERE m.sign = -1 AND x.track_id = m.track_id AND x.artist_id = m.artist_id"""
# The credits of new tracks and every credit of full API objects (two keys of a batch can name one
# track, its Spotify id and its artist and name: one credit). Stored credits whose order full API
# data corrects are updated apart from the insert, as for artists: an upsert would lock every
# credit it meets.
TRACK_CREDITS_SQL = """
WITH credits AS (
    SELECT DISTINCT ON (t.id, ar.id) t.id AS track_id, ar.id AS artist_id, ta.position FROM tmp_tracks t
      JOIN tmp_track_artists ta USING (tk) JOIN tmp_artists ar USING (rk)
     WHERE t.is_new OR t.full_data
     ORDER BY t.id, ar.id, t.full_data DESC, t.is_new DESC, ta.position
), reordered AS (
    UPDATE track_artists x SET position = c.position FROM credits c
     WHERE x.track_id = c.track_id AND x.artist_id = c.artist_id AND x.position <> c.position
)
INSERT INTO track_artists (track_id, artist_id, position)
SELECT * FROM credits
ON CONFLICT (track_id, artist_id) DO NOTHING"""

# The catalog statements in their order, each with what a batch must hold for it to have any work
# (None: every batch): ``real_*`` and ``named_*``, artists, albums or tracks with and without a
# Spotify id; ``albums``, any album; ``full``, a full API track object. See held().
CATALOG: tuple[tuple[str | None, str], ...] = (
    ("real_artists", INSERT_REAL_ARTISTS_SQL),
    ("named_artists", INSERT_NAMED_ARTISTS_SQL),
    ("real_artists", CORRECT_REAL_ARTISTS_SQL),
    ("named_artists", NAMED_ARTIST_IDS_SQL),
    ("real_albums", INSERT_REAL_ALBUMS_SQL),
    ("named_albums", INSERT_NAMED_ALBUMS_SQL),
    ("real_albums", CORRECT_REAL_ALBUMS_SQL),
    ("named_albums", NAMED_ALBUM_IDS_SQL),
    ("albums", ALBUM_CREDITS_SQL),
    ("albums", TRACK_ALBUM_IDS_SQL),
    ("real_tracks", INSERT_REAL_TRACKS_SQL),
    ("real_tracks", REAL_TRACK_IDS_SQL),
    ("named_tracks", NAMED_TRACK_IDS_SQL),
    ("named_tracks", INSERT_NAMED_TRACKS_SQL),
    ("named_tracks", LATE_NAMED_TRACK_IDS_SQL),
    ("full", ALBUM_MOVES_SQL),
    (None, UPDATE_TRACKS_SQL),
    ("full", CREDIT_MOVES_SQL),
    ("full", DELETE_MOVED_CREDITS_SQL),
    (None, TRACK_CREDITS_SQL),
)
# Whether the catalog statements changed the album or credits of stored tracks.
MOVES_FOUND_SQL = "SELECT EXISTS (SELECT 1 FROM tmp_album_moves) OR EXISTS (SELECT 1 FROM tmp_credit_moves)"

COPY_ARTISTS_SQL = "COPY tmp_artists (rk, spotify_id, name, name_key, image_url) FROM STDIN"
COPY_ALBUMS_SQL = (
    "COPY tmp_albums (ak, spotify_id, name, name_key, artist_key, image_url, release_date) FROM STDIN"
)
COPY_ALBUM_ARTISTS_SQL = "COPY tmp_album_artists (ak, rk, position) FROM STDIN"
COPY_TRACKS_SQL = (
    "COPY tmp_tracks (tk, spotify_id, name, name_key, artist_key, duration_ms, explicit, ak, full_data) "
    "FROM STDIN"
)
COPY_TRACK_ARTISTS_SQL = "COPY tmp_track_artists (tk, rk, position) FROM STDIN"
ANALYZE_CATALOG_SQL = "ANALYZE tmp_artists, tmp_albums, tmp_album_artists, tmp_tracks, tmp_track_artists"


def held(st: Staged) -> frozenset[str]:
    """What ``st`` holds of what the statements of CATALOG need to have any work (an API batch has
    no rows without a Spotify id, an export batch no full track object)."""
    holds = (
        ("real_artists", any(row[1] for row in st.artists.values())),
        ("named_artists", any(not row[1] for row in st.artists.values())),
        ("real_albums", any(row[1] for row in st.albums.values())),
        ("named_albums", any(not row[1] for row in st.albums.values())),
        ("albums", bool(st.albums)),
        ("real_tracks", any(row[1] for row in st.tracks.values())),
        ("named_tracks", any(not row[1] for row in st.tracks.values())),
        ("full", st.has_full),
    )
    return frozenset(name for name, present in holds if present)


def needed(holding: frozenset[str]) -> list[int]:
    """The places in CATALOG of the statements a batch that holds ``holding`` has work for."""
    return [i for i, (need, _) in enumerate(CATALOG) if need is None or need in holding]


@functools.cache
def catalog_script(holding: frozenset[str]) -> str:
    """Those statements as one script."""
    return ";\n".join(CATALOG[i][1] for i in needed(holding))


def copy_catalog(ex: Exec, st: Staged, *, analyze: bool = True) -> None:
    """Stage the artists, albums, tracks and credits of ``st`` (``analyze``: and analyse them)."""
    with ex.copy(COPY_ARTISTS_SQL) as cp:
        for row in st.artists.values():
            cp.write_row(row)
    if st.albums:
        with ex.copy(COPY_ALBUMS_SQL) as cp:
            for row in st.albums.values():
                cp.write_row(row)
        with ex.copy(COPY_ALBUM_ARTISTS_SQL) as cp:
            for (ak, rk), pos in st.album_artists.items():
                cp.write_row((ak, rk, pos))
    with ex.copy(COPY_TRACKS_SQL) as cp:
        for row in st.tracks.values():
            cp.write_row(row)
    with ex.copy(COPY_TRACK_ARTISTS_SQL) as cp:
        for (tk, rk), pos in st.track_artists.items():
            cp.write_row((tk, rk, pos))
    if analyze:
        ex(ANALYZE_CATALOG_SQL)


def upsert_catalog(ex: Exec, st: Staged) -> bool:
    """The catalog rows of the staged ``st``; returns whether they changed the album or credits of
    a stored track (only full API objects can; mostly they do not), which statistics must follow
    (:func:`myi.ingestion.merges.follow_moves`)."""
    ex.script(catalog_script(held(st)))
    if not st.has_full:
        return False
    row = ex(MOVES_FOUND_SQL).fetchone()
    return bool(row and row[0])


def apply_track_metadata(conn: psycopg.Connection[Any], tracks: Sequence[TrackRef]) -> None:
    """Full track objects from the Web API (enrichment, top lists) fill and correct the catalog;
    album and credit changes move every user's statistics, provisional rows under the same name
    are merged. No play is recorded."""
    full = [t for t in tracks if t.spotify_id]
    if not full:
        return
    staged = stage([Play(t, datetime(1970, 1, 1).astimezone(), "api", None) for t in full])
    staged.plays.clear()
    with transaction(conn) as ex:
        ex(CATALOG_EXCLUSIVE_SQL)
        copy_catalog(ex, staged)
        staged.has_full = True
        if upsert_catalog(ex, staged):
            merges.follow_moves(ex, exclusive=True)
        record_gaps(ex)
