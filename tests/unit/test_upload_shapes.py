"""The reader on zips as people make them, without AWS or a database: which entries count as OS
metadata, names with ``\\`` separators, what a zip lists as possible export files, and a zip
inside the zip read in place (seeks back and forth, flat memory, damage and bombs refused)."""

from __future__ import annotations

import io
import os
import random
import tracemalloc
import zipfile

import pytest

from myi.imports.reader import NESTED, BadUpload, Upload, base_name, is_export, is_os_metadata, name_parts
from tests.fixtures.imports import apple_double, finder_zip, nested_zip, windows_zip, zip_of

FOLDER = "Spotify Extended Streaming History"
RECORD = b'{"ts": "2024-01-01T10:00:00Z", "ms_played": 40000, "spotify_track_uri": "spotify:track:x"}'
EXPORT = b"[" + RECORD + b"]"


def upload(data: bytes, *, limit: int = 1 << 32, ratio: int = 200) -> Upload:
    return Upload(
        io.BytesIO(data), len(data), filename="Archive.zip", max_uncompressed=limit, max_ratio=ratio
    )


@pytest.mark.parametrize(
    "name",
    [
        "__MACOSX/",
        "__MACOSX/Spotify Extended Streaming History/._Streaming_History_Audio_2019_0.json",
        "__macosx/Streaming_History_Audio_2019_0.json",
        "my_spotify_data/__MACOSX/x/Streaming_History_Audio_2019_0.json",
        "__MACOSX\\Spotify Extended Streaming History\\._Streaming_History_Audio_2019_0.json",
        "._Streaming_History_Audio_2019_0.json",
        "Spotify Extended Streaming History/._Streaming_History_Audio_2019_0.json",
        "a\\b\\._endsong_0.json",
        "Spotify Extended Streaming History/.DS_Store",
        ".ds_store",
        "Thumbs.db",
        "my_spotify_data\\THUMBS.DB",
        "my_spotify_data\\Desktop.ini",
        "__MACOSX/._my_spotify_data.zip",
    ],
)
def test_what_operating_systems_add_is_metadata(name: str) -> None:
    assert is_os_metadata(name)


@pytest.mark.parametrize(
    "name",
    [
        "Spotify Extended Streaming History/Streaming_History_Audio_2019_0.json",
        "my_spotify_data\\Spotify Extended Streaming History\\Streaming_History_Audio_2019_0.json",
        "Streaming_History_Audio_2019_0.json",
        "__MACOSX_notes/Streaming_History_Audio_2019_0.json",
        "MACOSX/endsong_0.json",
        "._folder/StreamingHistory0.json",
        "Thumbs.db.json",
        "my_spotify_data.zip",
        "",
    ],
)
def test_what_a_person_chose_is_not_metadata(name: str) -> None:
    assert not is_os_metadata(name)


def test_backslashes_separate_folders_like_slashes() -> None:
    name = "my_spotify_data\\Spotify Extended Streaming History\\Streaming_History_Audio_2019_0.json"
    assert name_parts(name) == ["my_spotify_data", FOLDER, "Streaming_History_Audio_2019_0.json"]
    assert base_name(name) == base_name(name.replace("\\", "/")) == "Streaming_History_Audio_2019_0.json"
    assert name_parts("/a//b\\\\c/") == ["a", "b", "c"] and base_name("") == ""


def names(data: bytes) -> list[str]:
    return [m.name for m in upload(data).candidates()]


def test_a_finder_zip_lists_only_the_files_that_were_zipped() -> None:
    files = {"Streaming_History_Audio_2019_0.json": EXPORT, "Streaming_History_Video_2019.json": b"[]"}
    assert names(finder_zip(files, FOLDER)) == [f"{FOLDER}/{name}" for name in files]
    assert names(finder_zip(files)) == list(files)


def test_an_appledouble_named_like_an_export_is_never_opened() -> None:
    """The ``._`` file is not JSON: opened, it would read as 'a single value where a list of plays
    belongs' and fail the upload."""
    data = zip_of({f"__MACOSX/{FOLDER}/._Streaming_History_Audio_2019_0.json": apple_double()})
    assert names(data) == []


def test_a_windows_zip_lists_its_exports_under_backslash_names() -> None:
    data = windows_zip({"Streaming_History_Audio_2019_0.json": EXPORT}, f"my_spotify_data/{FOLDER}")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert all("\\" in name and "/" not in name for name in zf.namelist())  # as written
    up = upload(data)
    [member] = up.candidates()
    assert member.name == f"my_spotify_data\\{FOLDER}\\Streaming_History_Audio_2019_0.json"
    assert is_export(up, member) and up.open(member).read() == EXPORT


def inner_zip(members: dict[str, bytes]) -> bytes:
    return zip_of({f"{FOLDER}/{name}": data for name, data in members.items()})


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_zip_inside_the_zip_is_listed_and_read_in_place(method: int) -> None:
    inner = inner_zip({"Streaming_History_Audio_2019_0.json": EXPORT, "endsong_0.json": b"[]"})
    data = nested_zip(
        {
            "README.txt": b"forwarded",
            "my_spotify_data.zip": inner,
            "Streaming_History_Audio_2020_0.json": EXPORT,
        },
        method,
    )
    up = upload(data)
    members = up.candidates()
    assert [(m.index, m.name) for m in members] == [
        (NESTED * 2 + 0, f"my_spotify_data.zip/{FOLDER}/Streaming_History_Audio_2019_0.json"),
        (NESTED * 2 + 1, f"my_spotify_data.zip/{FOLDER}/endsong_0.json"),
        (2, "Streaming_History_Audio_2020_0.json"),
    ]
    assert [up.open(m).read() for m in reversed(members)] == [EXPORT, b"[]", EXPORT]
    again = upload(data)  # a resumed job opens the upload anew: the same indices, the same files
    assert [m.index for m in again.candidates()] == [m.index for m in members]
    assert again.open(members[1]).read() == b"[]"


def test_only_one_level_of_nesting_is_read() -> None:
    deeper = inner_zip({"Streaming_History_Audio_2018_0.json": EXPORT})
    inner = inner_zip({"Streaming_History_Audio_2019_0.json": EXPORT, "old/backup.zip": deeper})
    data = nested_zip({"my_spotify_data.zip": inner, "__MACOSX/._my_spotify_data.zip": apple_double()})
    assert names(data) == [f"my_spotify_data.zip/{FOLDER}/Streaming_History_Audio_2019_0.json"]


def test_a_finder_zip_inside_a_windows_style_zip_drops_the_metadata_of_both() -> None:
    inner = finder_zip({"Streaming_History_Audio_2019_0.json": EXPORT}, FOLDER)
    data = nested_zip({"Downloads\\my_spotify_data.zip": inner, "Downloads\\Thumbs.db": b"\xd0\xcf"})
    assert names(data) == [f"Downloads\\my_spotify_data.zip/{FOLDER}/Streaming_History_Audio_2019_0.json"]


def big_inner(seed: int) -> tuple[bytes, dict[str, bytes]]:
    """A nested zip of about 24 MB that deflate cannot shrink (as a zip inside a zip is), in members of
    1 to 3 MiB: reading them in any order makes the reader seek back and forth across it."""
    rng = random.Random(seed)
    files = {f"{FOLDER}/part_{i}.json": rng.randbytes(rng.randrange(1 << 20, 3 << 20)) for i in range(12)}
    return nested_zip(files, zipfile.ZIP_STORED), files


def test_a_deflated_nested_zip_reads_the_same_in_any_order_with_flat_memory() -> None:
    inner, files = big_inner(7)
    data = nested_zip({"my_spotify_data.zip": inner}, zipfile.ZIP_DEFLATED)
    tracemalloc.start()
    try:
        up = upload(data)
        members = {m.name.split("/", 1)[1]: m for m in up.candidates()}
        order = list(files)
        random.Random(3).shuffle(order)
        for name in order + order[::-1]:  # backwards too: every member after every other
            stream = up.open(members[name])
            assert stream.read(1000) == files[name][:1000], name
            assert stream.read() == files[name][1000:], name
            del stream
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # never the nested zip whole (memory or /tmp): a member being compared, and little besides
    assert peak < len(inner) // 2, (peak, len(inner))


def test_a_stored_nested_zip_is_a_window_on_the_upload() -> None:
    inner, files = big_inner(8)
    data = nested_zip({"notes.txt": b"x", "my_spotify_data.zip": inner}, zipfile.ZIP_STORED)
    up = upload(data, ratio=1)  # nothing is decompressed to read the window: a ratio of 1 is room enough
    for member in reversed(up.candidates()):
        assert up.open(member).read() == files[member.name.split("/", 1)[1]]


def _central(data: bytes, name: bytes) -> int:
    """The offset of ``name``'s central-directory record."""
    at = data.find(b"PK\x01\x02")
    while at != -1:
        length = int.from_bytes(data[at + 28 : at + 30], "little")
        if data[at + 46 : at + 46 + length] == name:
            return at
        at = data.find(b"PK\x01\x02", at + 4)
    raise AssertionError(name)


def test_a_damaged_deflated_nested_zip_is_refused() -> None:
    inner = inner_zip({"Streaming_History_Audio_2019_0.json": EXPORT})
    data = bytearray(nested_zip({"my_spotify_data.zip": inner}, zipfile.ZIP_DEFLATED))
    crc = _central(bytes(data), b"my_spotify_data.zip") + 16
    data[crc] ^= 0xFF
    with pytest.raises(BadUpload, match=r"my_spotify_data\.zip is damaged \(its checksum"):
        upload(bytes(data)).candidates()


def test_a_nested_zip_cut_short_is_refused() -> None:
    inner = inner_zip({"Streaming_History_Audio_2019_0.json": os.urandom(200_000)})
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        data = nested_zip({"my_spotify_data.zip": inner[: len(inner) // 2]}, method)
        with pytest.raises(BadUpload, match=r"my_spotify_data\.zip is not a readable zip"):
            upload(data).candidates()


def test_a_nested_zip_counts_against_the_decompression_budget() -> None:
    """A bomb posing as the nested zip: megabytes of zeros, refused while it is inflated, long
    before its end (the limit is the upload's, shared with the members read out of it)."""
    data = nested_zip({"my_spotify_data.zip": b"\0" * (64 * 1024 * 1024)}, zipfile.ZIP_DEFLATED)
    with pytest.raises(BadUpload, match="zip bomb"):
        upload(data, ratio=50).candidates()
    with pytest.raises(BadUpload, match="too large once decompressed"):
        upload(data, limit=32 * 1024 * 1024).candidates()
