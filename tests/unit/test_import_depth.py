"""The nesting limit in front of ijson (myi.imports.reader.DepthGuard): brackets inside strings,
escapes and chunk boundaries anywhere, judged exactly like a plain character-by-character scan."""

from __future__ import annotations

import io
import json
import random

import pytest

from myi.imports.reader import MAX_DEPTH, BadUpload, DepthGuard, array_records


class _Pieces(io.RawIOBase):
    """A stream that hands out at most ``step`` bytes per read, so chunks end anywhere."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._step, self._pos = data, step, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._step if size < 0 else min(size, self._step)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


def _deepest(data: bytes) -> int:
    """The nesting depth of a JSON text, byte by byte."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in data.decode():
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _guarded(data: bytes, step: int) -> bool:
    """Whether the guard lets the whole text through, read ``step`` bytes at a time."""
    guard = DepthGuard(_Pieces(data, step), "x.json")  # type: ignore[arg-type]
    try:
        while guard.read(step):
            pass
    except BadUpload:
        return False
    return True


def _value(rng: random.Random, depth: int) -> object:
    pick = rng.random()
    if depth > 0 and pick < 0.35:
        return [_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    if depth > 0 and pick < 0.7:
        return {_text(rng): _value(rng, depth - 1) for _ in range(rng.randint(0, 3))}
    return _text(rng) if pick < 0.9 else rng.randint(-5, 5)


def _text(rng: random.Random) -> str:
    return "".join(rng.choice('ab[]{}"\\\n/é') for _ in range(rng.randint(0, 12)))


@pytest.mark.parametrize("seed", range(40))
def test_the_guard_judges_depth_exactly_whatever_the_chunks(seed: int) -> None:
    rng = random.Random(seed)
    doc = json.dumps([_value(rng, rng.randint(1, MAX_DEPTH + 3)) for _ in range(4)]).encode()
    expected = _deepest(doc) <= MAX_DEPTH
    for step in (1, 2, 3, 5, 7, 64, 1 << 16):
        assert _guarded(doc, step) is expected, (step, _deepest(doc))


def test_brackets_quotes_and_backslashes_in_names_are_not_nesting() -> None:
    name = '[[[[{{{{ "quoted" \\ back\\slash \\\\" ' * 20
    doc = json.dumps([{"ts": "2020-01-01T00:00:00Z", "ms_played": 1, "master_metadata_track_name": name}])
    for step in range(1, 40):
        assert _guarded(doc.encode(), step)
    assert (
        next(array_records(io.BufferedReader(io.BytesIO(doc.encode())), "x.json"))[
            "master_metadata_track_name"
        ]
        == name
    )


def test_long_runs_of_backslashes_across_chunks_pair_up_correctly() -> None:
    for run in (1, 2, 3, 64, 65, 1001):
        name = "\\" * run + '"[[[[[[[[[[[[[[[[[[[[' + "\\" * run
        doc = json.dumps([{"name": name}, [[[]]]]).encode()
        for step in (1, 2, 3, 7, 64):
            assert _guarded(doc, step)
        deep = json.dumps([{"name": name}, json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)]).encode()
        assert not _guarded(deep, 5)


def test_the_limit_is_exact() -> None:
    fits = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    deeper = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    assert _guarded(fits, 1 << 16) and _guarded(fits, 1)
    assert not _guarded(deeper, 1 << 16) and not _guarded(deeper, 1)


def test_deep_nesting_is_refused_before_ijson_parses_it() -> None:
    doc = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(BadUpload, match="nested deeper than a Spotify export ever is"):
        list(array_records(io.BufferedReader(io.BytesIO(doc)), "deep.json"))
