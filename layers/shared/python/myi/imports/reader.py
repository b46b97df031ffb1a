"""Reading an upload as a stream: ranged reads from S3, zip members decompressed on the fly, JSON
parsed record by record with ijson's C backend. Memory stays flat whatever the file size, and
nothing is written to disk.

Why ranged reads rather than a spooled file: a zip's directory is at its end, so the reader seeks
there once, then reads each member front to back; an object seekable through HTTP ranges costs a
few extra requests (one per ``CHUNK`` bytes) and no ``/tmp`` space, so a 512 MiB upload fits a
Lambda with the default ephemeral storage.

Uploads as people make them: the export files may sit in any folder of the zip or at its top;
entry names may use ``\\`` as their separator (zips made on Windows); the metadata operating systems
add (``__MACOSX/`` with an AppleDouble ``._<name>`` beside every file, as macOS Finder zips,
``.DS_Store``, ``Thumbs.db``, ``desktop.ini``) is left out by name before anything is opened; and
the download forwarded inside another zip (``my_spotify_data.zip`` in ``Archive.zip``) is read
from within, one level deep only (a zip inside that is ignored). See :class:`_ZipInZip` for how a
nested zip is read without memory or ``/tmp`` growing with it.

Safety: an upload is checked before anything is committed (the worker reads it whole once): not a
zip or JSON, no export inside, encrypted members (or an encrypted or broken nested zip), zip bombs
(declared or real decompressed size over ``max_uncompressed`` or a ratio over ``max_ratio``; a
nested zip's own decompression counts against the same budget as its members'), truncated or
malformed JSON, a JSON object where an array belongs. Entry names are only ever compared, never
used as paths.
"""

from __future__ import annotations

import bisect
import io
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import ijson

from myi.imports.formats import is_export_record

CHUNK = 8 * 1024 * 1024
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_EXPORT_NAME = re.compile(
    r"(Streaming_History_(Audio|Video)_.*|endsong_\d+|StreamingHistory(_music|_podcast|_video)?_?\d*)\.json$",
    re.IGNORECASE,
)


# What operating systems put into a zip beside the files a person chose (compared case-blind).
_METADATA_FOLDERS = frozenset({"__macosx"})
_METADATA_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
_SEPARATORS = re.compile(r"[/\\]")


def name_parts(name: str) -> list[str]:
    """An entry name's folders and file name: ``/`` and ``\\`` both separate (zips made on Windows
    may use either); empty parts (a leading or doubled separator) are dropped."""
    return [part for part in _SEPARATORS.split(name) if part]


def base_name(name: str) -> str:
    """The file name of an entry, whichever separator its zip used."""
    parts = name_parts(name)
    return parts[-1] if parts else ""


def is_os_metadata(name: str) -> bool:
    """Whether an entry is metadata an operating system added rather than a file someone chose:
    anything under ``__MACOSX/`` (at any depth), AppleDouble ``._<name>`` files, ``.DS_Store``,
    ``Thumbs.db``, ``desktop.ini``."""
    parts = name_parts(name)
    if any(part.casefold() in _METADATA_FOLDERS for part in parts):
        return True
    return bool(parts) and (parts[-1].startswith("._") or parts[-1].casefold() in _METADATA_FILES)


def _is_dir(name: str) -> bool:
    return name.endswith(("/", "\\"))


def _json_name(name: str) -> bool:
    return not _is_dir(name) and name.lower().endswith(".json") and not is_os_metadata(name)


def _zip_name(name: str) -> bool:
    return not _is_dir(name) and name.lower().endswith(".zip") and not is_os_metadata(name)


class BadUpload(Exception):
    """The upload cannot be imported; the message is for the person who uploaded it."""


class UploadChanged(Exception):
    """The object was replaced while it was being read (another upload to the same key)."""


class _View(io.RawIOBase):
    """A read-only, seekable stream of ``_size`` bytes read at ``_pos`` (subclasses read)."""

    _pos: int
    _size: int

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos


class S3Object(_View):
    """A read-only, seekable view of one version of an S3 object through ranged GETs: with
    ``etag``, every GET carries ``If-Match`` and a replaced object raises :class:`UploadChanged`
    rather than mixing the bytes of two files."""

    def __init__(self, s3: Any, bucket: str, key: str, size: int, etag: str | None = None) -> None:
        self._s3, self._bucket, self._key, self._size = s3, bucket, key, size
        self._match = {"IfMatch": etag} if etag else {}
        self._pos = 0
        self.bytes_fetched = 0

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._size:
            return 0
        end = min(self._pos + len(buffer), self._size) - 1
        try:
            body = self._s3.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={self._pos}-{end}", **self._match
            )["Body"]
        except self._s3.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if error.get("Code") in ("PreconditionFailed", "412") or status == 412:
                raise UploadChanged(self._key) from None
            raise
        data = body.read()
        n = len(data)
        buffer[:n] = data
        self._pos += n
        self.bytes_fetched += n
        return n


def open_s3(s3: Any, bucket: str, key: str, size: int, etag: str | None = None) -> tuple[IO[bytes], S3Object]:
    raw = S3Object(s3, bucket, key, size, etag)
    return io.BufferedReader(raw, buffer_size=CHUNK), raw


@dataclass(frozen=True)
class Member:
    """One export file of an upload: a zip member, or the upload itself (a bare JSON file)."""

    index: int
    name: str
    compressed_size: int
    size: int


class _Limited(io.RawIOBase):
    """Counts what a member really decompresses to and stops at the limits."""

    def __init__(self, inner: IO[bytes], name: str, budget: _Budget) -> None:
        self._inner, self._name, self._budget = inner, name, budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._budget.spend(n, self._name)
        return n


@dataclass
class _Budget:
    max_uncompressed: int
    max_ratio: int
    compressed_total: int
    spent: int = 0

    def spend(self, n: int, name: str) -> None:
        self.spent += n
        if self.spent > self.max_uncompressed or self.spent > self.max_ratio * max(self.compressed_total, 1):
            raise BadUpload(
                f"{name} decompresses to far more than a Spotify export would (a zip bomb?); import refused"
            )


# A zip inside the upload (the download forwarded inside another zip), read where it lies.
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile's structFileHeader
SNAPSHOT_EVERY = 4 * 1024 * 1024  # inflated bytes between two saved decompressor states, at least
MAX_SNAPSHOTS = 256  # ... and at most this many of them (about 40 KiB each)
_INFLATE_INPUT = 64 * 1024
NESTED = 1 << 32  # a nested member's index: NESTED * (its zip's index + 1) + its index in that zip


class _ZipInZip(_View):
    """A zip that is a member of the upload, as the seekable file :class:`zipfile.ZipFile` needs,
    read in place through the upload's own stream (and so through S3 ranges).

    Stored (Info-ZIP and many tools store a ``.zip`` they add to a zip): a window on the upload,
    nothing decompressed twice. Deflated (macOS Finder, Windows Explorer): a deflate stream cannot
    be sought, and zipfile seeks (its directory is at the end, then back to each member). Spooling
    it to ``/tmp`` or to memory was rejected: the nested zip is about as large as the upload (up to
    ``MAX_UPLOAD_BYTES``, 512 MiB by default), which is all of a Lambda's default 512 MB ``/tmp``
    and half the import worker's 1,024 MB, and every :class:`Upload` the worker opens (listing,
    ingesting, reading a file through before the first commit) would spool it again. Instead, while
    the stream is inflated front to back, the decompressor's state is copied every
    ``SNAPSHOT_EVERY`` bytes of output (``zlib.Decompress.copy``: its 32 KiB window and a few KiB
    more; the interval grows so that there are never more than ``MAX_SNAPSHOTS``, about 10 MB,
    whatever the size), and a seek backwards resumes from the nearest copy before the target,
    inflating at most one interval to get there. Memory stays flat and nothing touches the disk.

    Zipfile reads the directory at the end first, so the nested zip is inflated once whole when it
    is opened: that pass checks its size and CRC against the upload's directory and counts every
    inflated byte against the upload's decompression budget (``max_uncompressed``, ``max_ratio``),
    as the members read out of it then count too. Other methods (bzip2, lzma) are refused.
    """

    def __init__(
        self, source: IO[bytes], start: int, info: zipfile.ZipInfo, name: str, budget: _Budget
    ) -> None:
        self._source, self._start, self._name, self._budget = source, start, name, budget
        self._stored = info.compress_type == zipfile.ZIP_STORED
        self._in_size, self._size, self._crc = info.compress_size, info.file_size, info.CRC
        self._pos = 0
        self._every = max(SNAPSHOT_EVERY, info.file_size // MAX_SNAPSHOTS + 1)
        # where the inflater is: input consumed, output produced, input read but not yet taken
        self._inflater: Any = zlib.decompressobj(-zlib.MAX_WBITS)
        self._in = self._out = 0
        self._tail = b""
        self._snapshots: list[tuple[int, int, Any]] = [(0, 0, self._inflater.copy())]  # (out, in, state)
        self._frontier = 0  # the most output ever produced; checked and counted once
        self._frontier_crc = 0

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        if self._stored:
            self._source.seek(self._start + self._pos)
            data = self._source.read(want)
        else:
            data = self._inflate_at(self._pos, want)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def _inflate_at(self, pos: int, want: int) -> bytes:
        if pos < self._out or pos - self._out > self._every:
            self._restore(pos)
        while self._out < pos:
            if not self._inflate(min(pos - self._out, 4 * _INFLATE_INPUT)):
                raise BadUpload(f"{self._name} is damaged (it ends early)")
        return self._inflate(want)

    def _restore(self, pos: int) -> None:
        """Put the inflater at the last saved state at or before ``pos``."""
        out, consumed, state = self._snapshots[
            bisect.bisect_right(self._snapshots, pos, key=lambda s: s[0]) - 1
        ]
        if out <= self._out <= pos:
            return  # where it is now is nearer
        self._inflater, self._in, self._out, self._tail = state.copy(), consumed, out, b""

    def _inflate(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of output from where the inflater is; b'' at the stream's end."""
        while not self._inflater.eof:
            if not self._tail and self._in < self._in_size:
                if self._out == self._frontier and self._out >= self._snapshots[-1][0] + self._every:
                    self._snapshots.append((self._out, self._in, self._inflater.copy()))
                self._source.seek(self._start + self._in)
                self._tail = self._source.read(min(_INFLATE_INPUT, self._in_size - self._in))
                if not self._tail:
                    raise BadUpload(f"{self._name} is damaged (the upload ends inside it)")
                self._in += len(self._tail)
            try:
                data = self._inflater.decompress(self._tail, limit)
            except zlib.error as exc:
                raise BadUpload(f"{self._name} is damaged ({_short(exc)})") from None
            self._tail = self._inflater.unconsumed_tail
            if data:
                self._produced(data)
                return data
            if not self._tail and self._in >= self._in_size:
                raise BadUpload(f"{self._name} is damaged (it ends early)")
        return b""

    def _produced(self, data: bytes) -> None:
        end = self._out + len(data)
        if end > self._frontier:
            new = data[len(data) - (end - self._frontier) :]
            self._budget.spend(len(new), self._name)
            self._frontier_crc = zlib.crc32(new, self._frontier_crc)
            self._frontier = end
            if end == self._size and self._frontier_crc != self._crc:
                raise BadUpload(f"{self._name} is damaged (its checksum does not match)")
        self._out = end


class Upload:
    """An uploaded file, zip or bare JSON, opened for reading."""

    def __init__(
        self, stream: IO[bytes], size: int, *, filename: str, max_uncompressed: int, max_ratio: int
    ) -> None:
        self._stream = stream
        self.size = size
        self.filename = filename
        self._budget = _Budget(max_uncompressed, max_ratio, size)
        head = stream.read(4)
        stream.seek(0)
        self._zip: zipfile.ZipFile | None = None
        self._candidates: list[Member] | None = None
        self._where: dict[int, tuple[zipfile.ZipFile, zipfile.ZipInfo]] = {}
        if head.startswith(ZIP_MAGIC) or head.startswith(EMPTY_ZIP_MAGIC):
            try:
                self._zip = zipfile.ZipFile(stream)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise BadUpload(f"{filename} is not a readable zip file ({exc})") from None
        elif not _looks_like_json(stream):
            raise BadUpload(f"{filename} is neither a zip file nor JSON")

    def candidates(self) -> list[Member]:
        """The members that may be export files, in a stable order (their indices are what a job's
        checkpoint keeps): every ``.json`` of a zip that is not OS metadata, by name alone; a
        ``.zip`` in it is opened and its ``.json`` files are listed in its place (one level: a zip
        in that zip is ignored)."""
        if self._zip is None:
            return [Member(0, self.filename, self.size, self.size)]
        if self._candidates is None:
            out: list[Member] = []
            for index, info in enumerate(self._zip.infolist()):
                if _json_name(info.filename):
                    out.append(self._member(index, info.filename, self._zip, info))
                elif _zip_name(info.filename):
                    nested = self._open_nested(info)
                    for inner_index, inner in enumerate(nested.infolist()):
                        if _json_name(inner.filename):
                            name = f"{info.filename}/{inner.filename}"
                            out.append(self._member(NESTED * (index + 1) + inner_index, name, nested, inner))
            self._candidates = out
        return list(self._candidates)

    def _member(self, index: int, name: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
        self._where[index] = (zf, info)
        return Member(index, name, info.compress_size, info.file_size)

    def _open_nested(self, info: zipfile.ZipInfo) -> zipfile.ZipFile:
        """A zip inside the upload, opened where it lies (see :class:`_ZipInZip`)."""
        name = info.filename
        if info.flag_bits & 0x1:
            raise BadUpload(f"{name} is encrypted; upload the zip as Spotify sent it")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise BadUpload(
                f"{name} is compressed in a way MYI cannot read inside another zip; upload it by itself"
            )
        if info.file_size > self._budget.max_uncompressed:
            raise BadUpload(f"{name} is too large once decompressed; import refused")
        self._stream.seek(info.header_offset)
        header = self._stream.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or not header.startswith(ZIP_MAGIC):
            raise BadUpload(f"{name} cannot be read from the zip (its header is damaged)")
        name_length, extra_length = _LOCAL_HEADER.unpack(header)[10:12]
        start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        view = _ZipInZip(self._stream, start, info, name, self._budget)
        try:
            return zipfile.ZipFile(io.BufferedReader(view, buffer_size=_INFLATE_INPUT))
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise BadUpload(f"{name} is not a readable zip file ({_short(exc)})") from None

    def open(self, member: Member) -> IO[bytes]:
        if self._zip is None:
            self._stream.seek(0)
            return self._stream
        if self._candidates is None:
            self.candidates()
        zf, info = self._where[member.index]
        if info.flag_bits & 0x1:
            raise BadUpload(f"{member.name} is encrypted; upload the zip as Spotify sent it")
        if info.file_size > self._budget.max_uncompressed:
            raise BadUpload(f"{member.name} is too large once decompressed; import refused")
        try:
            inner = zf.open(info)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
            raise BadUpload(f"{member.name} cannot be read from the zip ({exc})") from None
        return io.BufferedReader(_Limited(inner, member.name, self._budget), buffer_size=256 * 1024)

    @property
    def is_zip(self) -> bool:
        return self._zip is not None

    @property
    def position(self) -> int:
        """Bytes of the upload read so far (compressed), for progress."""
        return min(self._stream.tell(), self.size)


def _looks_like_json(stream: IO[bytes]) -> bool:
    head = stream.read(64)
    stream.seek(0)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return text[:1] in (b"[", b"{")


def is_export(upload: Upload, member: Member) -> bool:
    """Whether a member is an export file: by content (its first record), or by its name when it has
    no records to judge by."""
    by_name = bool(_EXPORT_NAME.search(base_name(member.name)))
    try:
        first = next(array_records(upload.open(member), member.name), None)
    except BadUpload:
        return by_name
    return by_name if first is None else is_export_record(first)


def array_records(stream: IO[bytes], name: str) -> Iterator[Any]:
    """The records of a top-level JSON array, one at a time (ijson's C backend); anything else at
    the top, or broken JSON, is :class:`BadUpload`."""
    try:
        head = _skip_preamble(stream)
        if head == b"":
            raise BadUpload(f"{name} is empty")
        if head != b"[":
            kind = "an object" if head == b"{" else "a single value"
            raise BadUpload(f"{name} holds {kind} where a list of plays belongs")
        yield from ijson.items(DepthGuard(stream, name), "item", use_float=False)
    except ijson.JSONError as exc:
        raise BadUpload(f"{name} is not valid JSON, or is cut short ({_short(exc)})") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise BadUpload(f"{name} is damaged ({_short(exc)})") from None


MAX_DEPTH = 16  # an export is a list of objects of scalars: depth 2; the rest is margin
_SCAN_DELETE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_SCAN_BRACKETS = bytes.maketrans(b"[]{}", b"()()")
_SCAN_STRINGS = re.compile(rb'"[^"]*"')


class DepthGuard:
    """The bytes of a JSON document, passed through unchanged to ijson, refused once its nesting
    goes deeper than ``MAX_DEPTH``: ijson's memory grows with the square of the depth (a 50 KB
    upload of nested lists takes it past a gigabyte), so the depth is checked before ijson sees a
    chunk, in constant memory.

    No loop over bytes in Python: per chunk, escaped backslashes and then escaped quotes are
    removed (``replace``), everything but quotes and brackets is deleted (``translate``), the
    strings are cut out (adjacent quotes first, then one regex if quotes are left), and what
    remains, brackets only, is reduced by removing innermost pairs (``replace('()', '')``) as often
    as they nest. The chunk goes at most ``o + r`` deeper than where it started (``o`` openers left
    unclosed, ``r`` rounds of reduction); only a chunk where that bound passes ``MAX_DEPTH`` is
    walked bracket by bracket."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self._stream, self._name = stream, name
        self._depth = 0
        self._in_string = False
        self._carry = b""  # a backslash at the end of the last chunk that escapes the next byte

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if data:
            self._scan(data)
        return data

    def _scan(self, data: bytes) -> None:
        s = self._carry + data if self._carry else data
        self._carry = b""
        if s.endswith(b"\\"):
            # a run of backslashes pairs from its start: only an odd one out waits for its partner
            kept = s.rstrip(b"\\")
            self._carry, s = (b"\\" if (len(s) - len(kept)) % 2 else b""), kept
        if b"\\" in s:
            s = s.replace(b"\\\\", b"").replace(b'\\"', b"")
        s = s.translate(_SCAN_BRACKETS, _SCAN_DELETE)
        if self._in_string:
            end = s.find(b'"')
            if end < 0:
                return
            s, self._in_string = s[end + 1 :], False
        s = s.replace(b'""', b"")  # an empty string, or two strings made one: no bracket moves
        if b'"' in s:
            s = _SCAN_STRINGS.sub(b"", s)
        start = s.find(b'"')
        if start >= 0:
            s, self._in_string = s[:start], True
        if not s:
            return
        reduced, rounds = s, 0
        while b"()" in reduced and rounds <= MAX_DEPTH:
            reduced, rounds = reduced.replace(b"()", b""), rounds + 1
        opened = reduced.count(b"(")
        if self._depth + opened + rounds > MAX_DEPTH:
            self._walk(s)
        else:
            self._depth = max(0, self._depth + 2 * opened - len(reduced))

    def _walk(self, brackets: bytes) -> None:
        depth = self._depth
        for byte in brackets:
            depth += 1 if byte == 40 else -1  # "("
            if depth > MAX_DEPTH:
                raise BadUpload(
                    f"{self._name} is nested deeper than a Spotify export ever is; import refused"
                )
        self._depth = max(0, depth)


def _skip_preamble(stream: IO[bytes]) -> bytes:
    """Consume a byte-order mark and whitespace; the next byte, not consumed ('' at the end)."""
    while True:
        peeked = stream.peek(3)[:3] if hasattr(stream, "peek") else b""
        if peeked.startswith(b"\xef\xbb\xbf"):
            stream.read(3)
            continue
        if peeked[:1] in (b" ", b"\t", b"\r", b"\n"):
            stream.read(1)
            continue
        return peeked[:1]


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:160]
