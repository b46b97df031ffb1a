"""Merges: statistics and provisional rows follow the album and credit changes of stored tracks.

When full API data changes an existing track's album or credits (tmp_album_moves,
tmp_credit_moves), every user's album and artist statistics move from the old to the new, and the
provisional artists and albums the real ones replace under the same normalised name are merged into
them. Both need the catalog lock held exclusively. Enrichment merges a provisional row it resolved
the same way (:func:`merge_artist`, :func:`merge_album`).
"""

from __future__ import annotations

from typing import Any

import psycopg

from myi.ingestion.locks import CATALOG_EXCLUSIVE_SQL
from myi.ingestion.session import Exec, transaction
from myi.ingestion.statistics import merge_album_statistics, merge_artist_statistics, move_statistics


class CatalogChanges(Exception):
    """A batch holding the catalog lock shared would move statistics of other users (an album or
    credit change of a stored track): it is rolled back and runs again holding it exclusively."""


# A provisional artist that a real one replaced on a track, under the same name, is that artist.
FIND_ARTIST_MERGES_SQL = """
INSERT INTO tmp_artist_merges (p, r)
SELECT DISTINCT ON (p.id) p.id, r.id FROM tmp_credit_moves out
  JOIN artists p ON p.id = out.artist_id AND p.spotify_id IS NULL
  JOIN tmp_credit_moves inn ON inn.track_id = out.track_id AND inn.sign = 1
  JOIN artists r ON r.id = inn.artist_id AND r.spotify_id IS NOT NULL AND r.name_key = p.name_key
 WHERE out.sign = -1
 ORDER BY p.id, r.id"""
# The same for albums.
FIND_ALBUM_MERGES_SQL = """
INSERT INTO tmp_album_merges (p, r)
SELECT DISTINCT ON (p.id) p.id, r.id FROM tmp_album_moves m
  JOIN albums p ON p.id = m.old_album AND p.spotify_id IS NULL
  JOIN albums r ON r.id = m.new_album AND r.spotify_id IS NOT NULL AND r.name_key = p.name_key
 ORDER BY p.id, r.id"""

# Folding the provisional artists of tmp_artist_merges into the real ones (after their statistics).
MOVE_MERGED_TRACK_CREDITS_SQL = """
UPDATE track_artists ta SET artist_id = m.r FROM tmp_artist_merges m
 WHERE ta.artist_id = m.p
   AND NOT EXISTS (SELECT 1 FROM track_artists x
                    WHERE x.track_id = ta.track_id AND x.artist_id = m.r)"""
DELETE_MERGED_TRACK_CREDITS_SQL = (
    "DELETE FROM track_artists ta USING tmp_artist_merges m WHERE ta.artist_id = m.p"
)
MOVE_MERGED_ALBUM_CREDITS_SQL = """
INSERT INTO album_artists (album_id, artist_id, position)
SELECT aa.album_id, m.r, aa.position
  FROM album_artists aa JOIN tmp_artist_merges m ON aa.artist_id = m.p
 ORDER BY 1, 2
ON CONFLICT DO NOTHING"""
DELETE_MERGED_ALBUM_CREDITS_SQL = (
    "DELETE FROM album_artists aa USING tmp_artist_merges m WHERE aa.artist_id = m.p"
)
DELETE_MERGED_ARTIST_GAPS_SQL = (
    "DELETE FROM catalog_gaps g USING tmp_artist_merges m WHERE g.kind = 'artist' AND g.entity_id = m.p"
)
DELETE_MERGED_ARTISTS_SQL = "DELETE FROM artists a USING tmp_artist_merges m WHERE a.id = m.p"

# Folding the provisional albums of tmp_album_merges into the real ones (after their statistics).
MOVE_MERGED_TRACKS_SQL = (
    "UPDATE tracks x SET album_id = m.r, updated_at = now() FROM tmp_album_merges m WHERE x.album_id = m.p"
)
DELETE_MERGED_ALBUM_GAPS_SQL = (
    "DELETE FROM catalog_gaps g USING tmp_album_merges m WHERE g.kind = 'album' AND g.entity_id = m.p"
)
DELETE_MERGED_ALBUM_ARTISTS_SQL = (
    "DELETE FROM album_artists aa USING tmp_album_merges m WHERE aa.album_id = m.p"
)
DELETE_MERGED_ALBUMS_SQL = "DELETE FROM albums a USING tmp_album_merges m WHERE a.id = m.p"

MERGE_ARTIST_SQL = "INSERT INTO tmp_artist_merges (p, r) VALUES (%s, %s)"
MERGE_ALBUM_SQL = "INSERT INTO tmp_album_merges (p, r) VALUES (%s, %s)"


def follow_moves(ex: Exec, *, exclusive: bool) -> None:
    """Statistics and provisional rows follow tmp_album_moves and tmp_credit_moves; without the
    catalog lock held exclusively, raises CatalogChanges."""
    if not exclusive:
        raise CatalogChanges
    move_statistics(ex)
    ex(FIND_ARTIST_MERGES_SQL)
    merge_artists(ex)
    ex(FIND_ALBUM_MERGES_SQL)
    merge_albums(ex)


def merge_artists(ex: Exec) -> None:
    """Fold the provisional artists of tmp_artist_merges into their real ones: every user's
    statistics move (a track credited to both counts once), credits move, the provisional rows go."""
    merge_artist_statistics(ex)
    ex(MOVE_MERGED_TRACK_CREDITS_SQL)
    ex(DELETE_MERGED_TRACK_CREDITS_SQL)
    ex(MOVE_MERGED_ALBUM_CREDITS_SQL)
    ex(DELETE_MERGED_ALBUM_CREDITS_SQL)
    ex(DELETE_MERGED_ARTIST_GAPS_SQL)
    ex(DELETE_MERGED_ARTISTS_SQL)


def merge_albums(ex: Exec) -> None:
    """Fold the provisional albums of tmp_album_merges into their real ones: every user's statistics
    and the tracks move, the provisional rows go."""
    merge_album_statistics(ex)
    ex(MOVE_MERGED_TRACKS_SQL)
    ex(DELETE_MERGED_ALBUM_GAPS_SQL)
    ex(DELETE_MERGED_ALBUM_ARTISTS_SQL)
    ex(DELETE_MERGED_ALBUMS_SQL)


def merge_artist(conn: psycopg.Connection[Any], provisional_id: int, real_id: int) -> None:
    """Resolve a provisional artist to a real one (enrichment); statistics stay exact."""
    with transaction(conn) as ex:
        ex(CATALOG_EXCLUSIVE_SQL)
        ex(MERGE_ARTIST_SQL, (provisional_id, real_id))
        merge_artists(ex)


def merge_album(conn: psycopg.Connection[Any], provisional_id: int, real_id: int) -> None:
    """Resolve a provisional album to a real one (enrichment); statistics stay exact."""
    with transaction(conn) as ex:
        ex(CATALOG_EXCLUSIVE_SQL)
        ex(MERGE_ALBUM_SQL, (provisional_id, real_id))
        merge_albums(ex)
