"""Web API objects as MYI reads them: names it can store, and objects it cannot read refused."""

from __future__ import annotations

from typing import Any

import pytest

from myi.plays import AlbumRef, ArtistRef, TrackRef
from myi.spotify.client import artist_ref, track_ref
from myi.spotify.errors import SpotifyBadResponse


def track(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "t1",
        "name": "Song",
        "duration_ms": 200_000,
        "explicit": False,
        "artists": [{"id": "a1", "name": "Singer"}],
        "album": {
            "id": "al1",
            "name": "Record",
            "artists": [{"id": "a1", "name": "Singer"}],
            "images": [{"url": "https://i.scdn.co/image/big", "width": 640}],
            "release_date": "2020-01-01",
        },
    }
    return {**obj, **changes}


def test_a_track_object_becomes_a_full_reference() -> None:
    singer = ArtistRef("Singer", "a1")
    assert track_ref(track()) == TrackRef(
        "Song",
        "t1",
        (singer,),
        AlbumRef("Record", "al1", (singer,), "https://i.scdn.co/image/big", "2020-01-01"),
        200_000,
        False,
    )


def test_nul_characters_leave_every_name() -> None:
    ref = track_ref(
        track(
            name="So\x00ng",
            artists=[{"id": "a1", "name": "\x00Singer"}],
            album={"id": "al1", "name": "Rec\x00ord", "artists": []},
        )
    )
    assert (ref.name, ref.artists[0].name, ref.album and ref.album.name) == ("Song", "Singer", "Record")


def test_an_artist_without_an_id_is_provisional_and_its_image_optional() -> None:
    assert artist_ref({"id": None, "name": "Local", "images": [{"url": None}]}) == ArtistRef("Local")


@pytest.mark.parametrize(
    "obj",
    [
        track(name=None),
        track(name=7),
        track(artists=[{"id": "a1"}]),
        track(album={"id": "al1"}),
        track(album={"id": "al1", "name": "Record", "images": ["not an object"]}),
        track(duration_ms="long"),
    ],
    ids=["null-name", "number-name", "artist-no-name", "album-no-name", "bad-image", "bad-duration"],
)
def test_an_object_myi_cannot_read_is_a_bad_response(obj: dict[str, Any]) -> None:
    with pytest.raises(SpotifyBadResponse):
        track_ref(obj)
