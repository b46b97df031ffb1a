"""A zip streamed into an S3 multipart upload, in constant memory, resumable in a new invocation.

Two pieces:

- :class:`MultipartSink`: bytes go to an S3 multipart upload, a part whenever ``part_size`` bytes
  (at least S3's 5 MiB) have gathered; one part is uploaded on a thread of its own while the next
  one fills, so at most two parts are held. Its state is the parts uploaded (number and ETag), the
  count of bytes written and the bytes written since the last part (``pending``, less than a part).
- :class:`ZipWriter`: the zip format written forward only, never seeking back. A member is either
  added whole (its compressed bytes gathered first, so its name may depend on what it holds: an
  extended-history file is named by the years of its plays) or streamed (its local header first,
  sizes and CRC after it in a data descriptor, as zip tools write to pipes). Zip64 is used where
  needed: for sizes and offsets past ``ZIP64_LIMIT`` (the limit Python's zipfile uses) and for more
  than 65,535 members; a streamed member always carries the zip64 descriptor, whatever its size.

A writer can stop between any two writes: :meth:`ZipWriter.suspend` ends the open member's deflate
stream with a full flush (no later block refers back past it, so a new compressor carries on the
same stream) and returns the members written and the open one's CRC and sizes; with the sink's
state, that is everything a continuation needs (:meth:`ZipWriter.__init__` with ``state``). The
central directory is written once, at :meth:`ZipWriter.close`.

Nothing here knows about exports or plays; the zip is read back by :mod:`zipfile`, Info-ZIP's
``unzip`` and MYI's own import reader (the tests check all three).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MIN_PART_BYTES = 5 * 1024 * 1024  # S3: every part but the last
PART_BYTES = MIN_PART_BYTES
MAX_PARTS = 10_000  # S3's limit: with 5 MiB parts, a 50 GB zip

# Sizes and offsets above this take zip64 fields (Python's zipfile uses the same, signed, limit).
ZIP64_LIMIT = (1 << 31) - 1
ZIP_COUNT_LIMIT = (1 << 16) - 1

_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64 = struct.Struct("<4sLQL")
_DESCRIPTOR64 = struct.Struct("<4sLQQ")
_DEFLATED = 8
_DESCRIPTOR_FLAG = 0x08
_UTF8_FLAG = 0x800
_UNIX = 3
_FILE_MODE = 0o100644 << 16


class MultipartSink:
    """A forward-only file whose bytes become the parts of one S3 multipart upload."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        upload_id: str,
        *,
        part_size: int = PART_BYTES,
        parts: Iterable[dict[str, Any]] = (),
        offset: int = 0,
        pending: bytes = b"",
    ) -> None:
        if part_size < MIN_PART_BYTES:
            raise ValueError(f"a part is at least {MIN_PART_BYTES} bytes")
        self.s3, self.bucket, self.key, self.upload_id = s3, bucket, key, upload_id
        self.part_size = part_size
        self.parts: list[dict[str, Any]] = [dict(p) for p in parts]
        self._offset = offset
        self._buffer = bytearray(pending)
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: Future[dict[str, Any]] | None = None

    def write(self, data: bytes) -> int:
        self._buffer += data
        self._offset += len(data)
        if len(self._buffer) >= self.part_size:
            body, self._buffer = self._buffer, bytearray()  # handed over, not copied
            self._send(body)
        return len(data)

    def tell(self) -> int:
        return self._offset

    @property
    def pending(self) -> bytes:
        """What was written after the last part (kept by a continuation)."""
        return bytes(self._buffer)

    def settle(self) -> list[dict[str, Any]]:
        """Wait for the part in flight; the parts uploaded so far."""
        if self._inflight is not None:
            done, self._inflight = self._inflight, None
            self.parts.append(done.result())
        return [dict(p) for p in self.parts]

    def complete(self) -> None:
        """Upload what is left as the last part and complete the upload."""
        self.settle()
        if self._buffer or not self.parts:
            self.parts.append(self._upload(len(self.parts) + 1, bytes(self._buffer)))
            self._buffer = bytearray()
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )
        self.close()

    def close(self) -> None:
        """Stop the upload thread (a part in flight is waited for, its failure ignored)."""
        if self._inflight is not None:
            self._inflight.exception()
            self._inflight = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _send(self, body: bytes | bytearray) -> None:
        """Upload ``body`` as the next part while the caller goes on (one part in flight)."""
        self.settle()
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            raise RuntimeError(f"an upload has at most {MAX_PARTS} parts")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="myi-export-part")
        self._inflight = self._pool.submit(self._upload, number, body)

    def _upload(self, number: int, body: bytes | bytearray) -> dict[str, Any]:
        answer = self.s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}


class Deflater:
    """Raw deflate with the CRC-32 and both sizes of what went through it."""

    def __init__(self, level: int, crc: int = 0, size: int = 0, compressed: int = 0) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.crc, self.size, self.compressed = crc, size, compressed

    def compress(self, data: bytes) -> bytes:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        out = self._z.compress(data)
        self.compressed += len(out)
        return out

    def flush(self, mode: int = zlib.Z_FINISH) -> bytes:
        out = self._z.flush(mode)
        self.compressed += len(out)
        return out


@dataclass(frozen=True)
class Entry:
    """A member written, as the central directory describes it."""

    name: str
    offset: int
    crc: int
    compressed: int
    size: int
    streamed: bool  # written with a data descriptor

    def as_list(self) -> list[Any]:
        return [self.name, self.offset, self.crc, self.compressed, self.size, self.streamed]

    @classmethod
    def from_list(cls, raw: list[Any]) -> Entry:
        name, offset, crc, compressed, size, streamed = raw
        return cls(str(name), int(offset), int(crc), int(compressed), int(size), bool(streamed))


def _dos_time(moment: datetime) -> tuple[int, int]:
    year = min(max(moment.year, 1980), 2107)
    date = (year - 1980) << 9 | moment.month << 5 | moment.day
    time = moment.hour << 11 | moment.minute << 5 | moment.second // 2
    return time, date


class ZipWriter:
    """Members one after another into ``sink`` (anything with ``write`` and ``tell``), then the
    central directory. ``state`` (from :meth:`suspend`) carries on a zip another writer began."""

    def __init__(
        self, sink: Any, *, modified: datetime, level: int = 6, state: dict[str, Any] | None = None
    ) -> None:
        self.sink = sink
        self.level = level
        self._time, self._date = _dos_time(modified)
        self.entries: list[Entry] = []
        self._open: Entry | None = None  # the streamed member being written (crc, sizes so far)
        self._deflater: Deflater | None = None
        if state:
            self.entries = [Entry.from_list(e) for e in state.get("entries", [])]
            if state.get("open"):
                self._open = Entry.from_list(state["open"])
                self._deflater = Deflater(level, self._open.crc, self._open.size, self._open.compressed)

    # --- members added whole -----------------------------------------------------------------
    def add(self, name: str, chunks: Iterable[bytes], *, crc: int, size: int, compressed: int) -> None:
        """A member whose deflated bytes (``chunks``) are known already, with their CRC and sizes."""
        if self._open is not None:
            raise RuntimeError("a streamed member is still open")
        raw = name.encode()
        offset = self.sink.tell()
        zip64 = size > ZIP64_LIMIT or compressed > ZIP64_LIMIT
        extra = struct.pack("<HHQQ", 1, 16, size, compressed) if zip64 else b""
        self.sink.write(
            _LOCAL.pack(
                b"PK\x03\x04",
                45 if zip64 else 20,
                0,
                self._flags(name),
                _DEFLATED,
                self._time,
                self._date,
                crc,
                0xFFFFFFFF if zip64 else compressed,
                0xFFFFFFFF if zip64 else size,
                len(raw),
                len(extra),
            )
            + raw
            + extra
        )
        for chunk in chunks:
            self.sink.write(chunk)
        self.entries.append(Entry(name, offset, crc, compressed, size, False))

    # --- a streamed member -------------------------------------------------------------------
    def begin(self, name: str) -> None:
        """Open a member written as it comes: its sizes and CRC follow it in a zip64 data
        descriptor (the local header says so with an empty zip64 field, as zipfile writes it)."""
        if self._open is not None:
            raise RuntimeError("a streamed member is still open")
        raw = name.encode()
        offset = self.sink.tell()
        extra = struct.pack("<HHQQ", 1, 16, 0, 0)
        self.sink.write(
            _LOCAL.pack(
                b"PK\x03\x04",
                45,
                0,
                self._flags(name) | _DESCRIPTOR_FLAG,
                _DEFLATED,
                self._time,
                self._date,
                0,
                0xFFFFFFFF,
                0xFFFFFFFF,
                len(raw),
                len(extra),
            )
            + raw
            + extra
        )
        self._open = Entry(name, offset, 0, 0, 0, True)
        self._deflater = Deflater(self.level)

    def write(self, data: bytes) -> None:
        assert self._deflater is not None, "no member is open"
        out = self._deflater.compress(data)
        if out:
            self.sink.write(out)

    def end(self) -> None:
        """Close the streamed member: the rest of its deflate stream, then its data descriptor."""
        assert self._open is not None and self._deflater is not None, "no member is open"
        d = self._deflater
        self.sink.write(d.flush())
        self.sink.write(_DESCRIPTOR64.pack(b"PK\x07\x08", d.crc, d.compressed, d.size))
        self.entries.append(Entry(self._open.name, self._open.offset, d.crc, d.compressed, d.size, True))
        self._open = self._deflater = None

    # --- continuations -----------------------------------------------------------------------
    def suspend(self) -> dict[str, Any]:
        """Everything a writer in another invocation needs to carry on; the open member's deflate
        stream is full-flushed, so a new compressor continues it."""
        open_state = None
        if self._open is not None and self._deflater is not None:
            d = self._deflater
            self.sink.write(d.flush(zlib.Z_FULL_FLUSH))
            open_state = Entry(
                self._open.name, self._open.offset, d.crc, d.compressed, d.size, True
            ).as_list()
            self._deflater = Deflater(self.level, d.crc, d.size, d.compressed)
        return {"entries": [e.as_list() for e in self.entries], "open": open_state}

    # --- the end -----------------------------------------------------------------------------
    def close(self) -> int:
        """Write the central directory and the end records; the zip's size."""
        if self._open is not None:
            raise RuntimeError("a streamed member is still open")
        start = self.sink.tell()
        for e in self.entries:
            self.sink.write(self._central(e))
        size = self.sink.tell() - start
        count = len(self.entries)
        if count > ZIP_COUNT_LIMIT or start > ZIP64_LIMIT or size > ZIP64_LIMIT:
            at = self.sink.tell()
            self.sink.write(_END64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, start))
            self.sink.write(_LOCATOR64.pack(b"PK\x06\x07", 0, at, 1))
            self.sink.write(_END.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
        else:
            self.sink.write(_END.pack(b"PK\x05\x06", 0, 0, count, count, size, start, 0))
        total: int = self.sink.tell()
        return total

    def _central(self, e: Entry) -> bytes:
        raw = e.name.encode()
        wide: list[int] = []
        size, compressed, offset = e.size, e.compressed, e.offset
        if size > ZIP64_LIMIT:
            wide.append(size)
            size = 0xFFFFFFFF
        if compressed > ZIP64_LIMIT:
            wide.append(compressed)
            compressed = 0xFFFFFFFF
        if offset > ZIP64_LIMIT:
            wide.append(offset)
            offset = 0xFFFFFFFF
        extra = struct.pack(f"<HH{len(wide)}Q", 1, 8 * len(wide), *wide) if wide else b""
        version = 45 if wide or e.streamed else 20
        flags = self._flags(e.name) | (_DESCRIPTOR_FLAG if e.streamed else 0)
        return (
            _CENTRAL.pack(
                b"PK\x01\x02",
                version,
                _UNIX,
                version,
                0,
                flags,
                _DEFLATED,
                self._time,
                self._date,
                e.crc,
                compressed,
                size,
                len(raw),
                len(extra),
                0,
                0,
                0,
                _FILE_MODE,
                offset,
            )
            + raw
            + extra
        )

    @staticmethod
    def _flags(name: str) -> int:
        return 0 if name.isascii() else _UTF8_FLAG
