"""Reading an upload as a stream: ranged reads from S3, zip members decompressed on the fly, JSON
parsed record by record with ijson's C backend. Memory stays flat whatever the file size, and
nothing is written to disk.

Why ranged reads rather than a spooled file: a zip's directory is at its end, so the reader seeks
there once, then reads each member front to back; an object seekable through HTTP ranges costs a
few extra requests (one per ``CHUNK`` bytes) and no ``/tmp`` space, so a 512 MiB upload fits a
Lambda with the default ephemeral storage.

Safety: an upload is checked before anything is committed (:func:`inspect` reads it whole once):
not a zip or JSON, no export inside, encrypted members, zip bombs (declared or real decompressed
size over ``max_uncompressed`` or a ratio over ``max_ratio``), truncated or malformed JSON, a JSON
object where an array belongs. Entry names are only ever compared, never used as paths.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
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


class BadUpload(Exception):
    """The upload cannot be imported; the message is for the person who uploaded it."""


class S3Object(io.RawIOBase):
    """A read-only, seekable view of an S3 object through ranged GETs."""

    def __init__(self, s3: Any, bucket: str, key: str, size: int) -> None:
        self._s3, self._bucket, self._key, self._size = s3, bucket, key, size
        self._pos = 0
        self.bytes_fetched = 0

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

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._size:
            return 0
        end = min(self._pos + len(buffer), self._size) - 1
        body = self._s3.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={self._pos}-{end}")[
            "Body"
        ]
        data = body.read()
        n = len(data)
        buffer[:n] = data
        self._pos += n
        self.bytes_fetched += n
        return n


def open_s3(s3: Any, bucket: str, key: str, size: int) -> tuple[IO[bytes], S3Object]:
    raw = S3Object(s3, bucket, key, size)
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
        if head.startswith(ZIP_MAGIC) or head.startswith(EMPTY_ZIP_MAGIC):
            try:
                self._zip = zipfile.ZipFile(stream)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise BadUpload(f"{filename} is not a readable zip file ({exc})") from None
        elif not _looks_like_json(stream):
            raise BadUpload(f"{filename} is neither a zip file nor JSON")

    def candidates(self) -> list[Member]:
        """The members that may be export files, in a stable order: every ``.json`` of a zip."""
        if self._zip is None:
            return [Member(0, self.filename, self.size, self.size)]
        out = []
        for index, info in enumerate(self._zip.infolist()):
            if info.is_dir() or not info.filename.lower().endswith(".json"):
                continue
            out.append(Member(index, info.filename, info.compress_size, info.file_size))
        return out

    def open(self, member: Member) -> IO[bytes]:
        if self._zip is None:
            self._stream.seek(0)
            return self._stream
        info = self._zip.infolist()[member.index]
        if info.flag_bits & 0x1:
            raise BadUpload(f"{member.name} is encrypted; upload the zip as Spotify sent it")
        if info.file_size > self._budget.max_uncompressed:
            raise BadUpload(f"{member.name} is too large once decompressed; import refused")
        try:
            inner = self._zip.open(info)
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
    by_name = bool(_EXPORT_NAME.search(member.name.rsplit("/", 1)[-1]))
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
        yield from ijson.items(stream, "item", use_float=False)
    except ijson.JSONError as exc:
        raise BadUpload(f"{name} is not valid JSON, or is cut short ({_short(exc)})") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise BadUpload(f"{name} is damaged ({_short(exc)})") from None


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
