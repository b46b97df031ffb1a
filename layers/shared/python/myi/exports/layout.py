"""What goes into the export's zip: the catalog rendered per track, and the layouts that turn
plays into the members of each format (Spotify's extended streaming history, or one CSV)."""

from __future__ import annotations

import zoneinfo
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg

from myi.exports.formats import (
    CSV_NAME,
    MAX_ACCOUNT_RECORDS,
    MAX_BYTES,
    MAX_RECORDS,
    RECORD_HEAD,
    RECORD_TAILS,
    SHORT_MS,
    CsvRows,
    Track,
    account_name,
    account_record,
    extended_name,
    extended_ts,
)
from myi.exports.writer import Deflater, ZipWriter
from myi.observability import logger

TRACK_CACHE = 10_000  # tracks whose rendering is kept at once

_TRACKS_SQL = """
SELECT t.id, t.spotify_id, t.name, al.name,
       ARRAY(SELECT ar.name FROM track_artists ta JOIN artists ar ON ar.id = ta.artist_id
              WHERE ta.track_id = t.id ORDER BY ta.position, ta.artist_id),
       (SELECT ar.name FROM album_artists aa JOIN artists ar ON ar.id = aa.artist_id
         WHERE aa.album_id = t.album_id ORDER BY aa.position, aa.artist_id LIMIT 1)
  FROM tracks t LEFT JOIN albums al ON al.id = t.album_id
 WHERE t.id = ANY (%s)
"""
_UNKNOWN_TRACK = Track.of(None, None, (), None, None)


# --- the catalog, per track ------------------------------------------------------------------------
class Tracks:
    """What the export writes of each track, rendered once and kept for ``TRACK_CACHE`` tracks."""

    def __init__(self, conn: psycopg.Connection[Any], limit: int = TRACK_CACHE) -> None:
        self._conn, self._limit = conn, limit
        self._known: dict[int, Track] = {}

    def cover(self, ids: set[int]) -> dict[int, Track]:
        """The tracks ``ids`` (a chunk's), a play of a track missing from the catalog without names.
        When the cache is full, only the tracks of this chunk stay: the tracks a listener plays
        most are in nearly every chunk, and are not looked up again."""
        known = self._known
        missing = ids - known.keys()
        if missing:
            if len(known) + len(missing) > self._limit:
                known = self._known = {i: known[i] for i in ids if i in known}
            for track_id, spotify_id, name, album, artists, album_artist in self._conn.execute(
                _TRACKS_SQL, (list(missing),)
            ):
                known[track_id] = Track.of(spotify_id, name, tuple(artists or ()), album, album_artist)
            if not missing <= known.keys():
                logger.warning("plays of tracks missing from the catalog are exported without names")
        return {i: known.get(i, _UNKNOWN_TRACK) for i in ids}


# --- what goes into the zip, by format --------------------------------------------------------------
class Layout:
    """Turns plays into the members of the zip. :meth:`add_rows` answers where in a chunk the export
    can stop (after a file ends); ``resumable_anywhere`` formats can also stop after any chunk."""

    resumable_anywhere = False

    def add_rows(self, rows: list[tuple[Any, ...]], known: dict[int, Track], start: int) -> int:
        """Add ``rows[start:]``; the index of the row after which the export can stop (the rows
        after it are not added yet), or -1 once the whole chunk is added."""
        raise NotImplementedError

    def chunk_done(self) -> None:
        """A chunk of plays has been added."""

    def suspend(self) -> dict[str, Any]:
        """Write what must not wait for the next invocation; the state to carry on from."""
        raise NotImplementedError

    def finish(self, now: datetime) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop any thread of the layout's own."""


class Gathered:
    """A JSON file of records, deflated as it grows (on ``pool``'s thread, where zlib runs beside
    Python: it lets go of the interpreter while it works), added to the zip whole once complete (its
    name depends on its last record). A record goes in as pieces, the first one starting with the
    text before it (``[`` or ``,``), so that the file's text is the pieces joined."""

    FLUSH = 3_000  # pieces joined and deflated at a time
    IN_FLIGHT = 2  # blocks handed to the deflating thread and not yet back

    def __init__(self, level: int, pool: ThreadPoolExecutor | None) -> None:
        self.deflater = Deflater(level)
        self.chunks: list[bytes] = []
        self.count = 0
        self.bytes = 2
        self.first_key: str | None = None
        self.last_key: str | None = None
        self.pieces: list[str] = []
        self.sep = "[\n"  # what comes before the next record
        self._pool = pool
        self._pending: deque[Future[bytes]] = deque()

    def add(self, record: str, size: int, key: str) -> None:
        if self.first_key is None:
            self.first_key = key
        self.last_key = key
        self.pieces.append(self.sep + record)
        self.sep = ",\n"
        self.count += 1
        self.bytes += size + 2
        if len(self.pieces) >= self.FLUSH:
            self.push()

    def push(self) -> None:
        data = "".join(self.pieces).encode()
        self.pieces = []
        if self._pool is None:
            self._out(self.deflater.compress(data))
            return
        while len(self._pending) >= self.IN_FLIGHT:
            self._out(self._pending.popleft().result())
        self._pending.append(self._pool.submit(self.deflater.compress, data))

    def _out(self, data: bytes) -> None:
        if data:
            self.chunks.append(data)

    def write_to(self, zw: ZipWriter, name: str) -> None:
        if self.pieces:
            self.push()
        while self._pending:
            self._out(self._pending.popleft().result())
        self._out(self.deflater.compress(b"[]" if self.count == 0 else b"\n]"))
        self._out(self.deflater.flush())
        d = self.deflater
        zw.add(name, self.chunks, crc=d.crc, size=d.size, compressed=d.compressed)


class Extended(Layout):
    """Spotify's extended streaming history (and the account-data records of plays known only by
    name): see :mod:`myi.exports.formats`."""

    def __init__(self, zw: ZipWriter, state: dict[str, Any]) -> None:
        self.zw = zw
        self.zone_name = str(state.get("zone") or "UTC")
        try:
            self.zone = zoneinfo.ZoneInfo(self.zone_name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.zone = zoneinfo.ZoneInfo("UTC")
        self.file = int(state.get("file", 0))
        self.account = int(state.get("account", 0))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="myi-export-deflate")
        self.member = Gathered(zw.level, self._pool)
        self.names = Gathered(zw.level, self._pool)

    def add_rows(self, rows: list[tuple[Any, ...]], known: dict[int, Track], start: int) -> int:
        # formats.extended_record, inlined (a million times a run): one record is three pieces, its
        # start (ts, ms_played), its track's keys, its end.
        head, tails, short, flush = RECORD_HEAD, RECORD_TAILS, SHORT_MS, Gathered.FLUSH
        max_records, max_bytes = MAX_RECORDS, MAX_BYTES
        m = self.member
        pieces = m.pieces
        for index in range(start, len(rows)):
            key, ms, estimated, _origin, track_id = rows[index]
            track = known[track_id]
            first = m.sep + head % (key[:19] + "Z" if key.endswith(".000000Z") else extended_ts(key), ms)
            tail = tails[ms < short, estimated]
            pieces += (first, track.fragment, tail)
            if m.first_key is None:
                m.first_key = key
                m.sep = ",\n"
            m.count += 1
            m.bytes += len(first) + track.size + len(tail)
            if len(pieces) >= flush:
                m.push()
                pieces = m.pieces
            if track.spotify_id is None and track.name and track.album_artist:
                self.names.add(account_record(key, ms, track), 0, key)
                if self.names.count >= MAX_ACCOUNT_RECORDS:
                    self._write_names()
            if m.count >= max_records or m.bytes >= max_bytes:
                m.last_key = key
                self._write_file()
                return index
        if m.count:
            m.last_key = rows[-1][0]
        return -1

    def _year(self, key: str) -> int:
        return datetime.fromisoformat(key).astimezone(self.zone).year

    def _write_file(self, now: datetime | None = None) -> None:
        m = self.member
        if m.first_key is not None and m.last_key is not None:
            first, last = self._year(m.first_key), self._year(m.last_key)
        else:
            first = last = (now or datetime.now(UTC)).astimezone(self.zone).year
        m.write_to(self.zw, extended_name(first, last, self.file))
        self.file += 1
        self.member = Gathered(self.zw.level, self._pool)

    def _write_names(self) -> None:
        self.names.write_to(self.zw, account_name(self.account))
        self.account += 1
        self.names = Gathered(self.zw.level, self._pool)

    def suspend(self) -> dict[str, Any]:
        assert self.member.count == 0, "an extended export stops between files only"
        if self.names.count:
            self._write_names()
        return {"zone": self.zone_name, "file": self.file, "account": self.account}

    def finish(self, now: datetime) -> None:
        if self.member.count or self.file == 0:
            self._write_file(now)
        if self.names.count:
            self._write_names()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Csv(Layout):
    """One CSV file, streamed (its deflate stream full-flushed at a continuation)."""

    resumable_anywhere = True

    def __init__(self, zw: ZipWriter, state: dict[str, Any]) -> None:
        self.zw = zw
        self.rows = CsvRows()
        if not state.get("begun"):
            zw.begin(CSV_NAME)
            self.rows.header()

    def add_rows(self, rows: list[tuple[Any, ...]], known: dict[int, Track], start: int) -> int:
        add = self.rows.add
        for key, ms, estimated, origin, track_id in rows[start:]:
            add(key, ms, estimated, origin, known[track_id])
        return -1

    def chunk_done(self) -> None:
        self.zw.write(self.rows.take())

    def suspend(self) -> dict[str, Any]:
        self.chunk_done()
        return {"begun": True}

    def finish(self, now: datetime) -> None:
        self.chunk_done()
        self.zw.end()
