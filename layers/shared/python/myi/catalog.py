"""The shared catalog: tracks, albums, artists and credits, keyed by Spotify id where known and by
normalised names where not (provisional rows).

``name_key`` is the one normalisation every name-keyed lookup uses: NFKD, accents stripped,
case-folded, every run of punctuation or whitespace collapsed to one space. It deliberately keeps
words such as "Remastered" or "feat.": two names that differ in them may be different recordings,
and a wrong merge is worse than a provisional row that enrichment resolves later. A name with no
letter or digit (``÷``, ``=``, ``!!!``) keys to itself, compatibility-normalised, case-folded and
with its whitespace collapsed, never to the empty string that every such name would share.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

import psycopg

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


@functools.lru_cache(maxsize=200_000)
def name_key(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    key = " ".join(_NON_WORD.sub(" ", stripped).split())
    return key or " ".join(unicodedata.normalize("NFKC", name).casefold().split())


# Rows of each catalog table whose first credited artist keys them (``artist_key``), by credit table.
_CREDITS = {"albums": ("album_artists", "album_id"), "tracks": ("track_artists", "track_id")}


def rekey_empty_names(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Give every catalog row whose ``name_key`` or ``artist_key`` is empty the key of today's
    :func:`name_key` (migration 0011): before it, every name without a letter or digit keyed to ''.

    Only empty keys change, so no other row moves and no unique key can collide: a new key made of
    symbols equals no key of letters and digits. Rows that once collided stay one row (which names
    went into it is not stored); their ids, and so every statistic, are unchanged. Returns the rows
    changed per table.
    """
    changed: dict[str, int] = {}
    for table in ("artists", "albums", "tracks"):
        rows = conn.execute(f"SELECT id, name FROM {table} WHERE name_key = ''").fetchall()
        keyed = [(name_key(name), row_id) for row_id, name in rows if name_key(name)]
        if keyed:
            with conn.cursor() as cur:
                cur.executemany(f"UPDATE {table} SET name_key = %s WHERE id = %s", keyed)
        changed[table] = len(keyed)
    for table, (credits, column) in _CREDITS.items():
        rows = conn.execute(
            f"""
            SELECT x.id, a.name FROM {table} x
              JOIN {credits} c ON c.{column} = x.id
              JOIN artists a ON a.id = c.artist_id
             WHERE x.artist_key = ''
             ORDER BY x.id, c.position, a.id
            """
        ).fetchall()
        first: dict[int, str] = {}
        for row_id, artist in rows:
            first.setdefault(row_id, artist)
        keyed = [(name_key(artist), row_id) for row_id, artist in first.items() if name_key(artist)]
        if keyed:
            with conn.cursor() as cur:
                cur.executemany(f"UPDATE {table} SET artist_key = %s WHERE id = %s", keyed)
        changed[table] += len(keyed)
    return changed


_SPOTIFY_ID = re.compile(r"[0-9A-Za-z]{22}")


def spotify_id_from_uri(uri: str | None, kind: str = "track") -> str | None:
    """``spotify:track:<id>`` -> ``<id>``; None for anything else, and for an id that is not
    Spotify's 22 base-62 characters (the form the Web API schema gives its ids)."""
    if not uri:
        return None
    prefix = f"spotify:{kind}:"
    if not uri.startswith(prefix):
        return None
    ident = uri[len(prefix) :]
    return ident if len(ident) == 22 and _SPOTIFY_ID.fullmatch(ident) else None
