"""Staging: a batch of plays as rows of the staging tables, before any SQL (no database)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

import pytest

from myi.catalog import name_key
from myi.ingestion.staging import artist_key, is_full, stage, stage_checked, stage_document, track_key
from myi.plays import AlbumRef, ArtistRef, Play, TrackRef
from tests.fixtures.plays import (
    account_play,
    account_track,
    api_play,
    api_track,
    at,
    export_track,
    extended_play,
)


def test_keys_are_spotify_ids_or_normalised_names() -> None:
    assert artist_key(ArtistRef("Beyoncé", "b1")) == ("s", "b1")
    assert artist_key(ArtistRef("Beyoncé")) == ("p", "beyonce")
    assert track_key(api_track(1)) == ("s", api_track(1).spotify_id)
    assert track_key(account_track(1)) == ("p", "artist 1", "track 1")
    assert track_key(TrackRef("AC/DC Song", None, ())) == ("p", "", "ac dc song")


def test_a_full_track_has_ids_for_itself_its_album_and_every_artist() -> None:
    full = api_track(1)
    assert is_full(full)
    assert not is_full(export_track(1))  # its album has no id
    assert not is_full(replace(full, artists=(*full.artists, ArtistRef("Guest"))))
    assert not is_full(replace(full, artists=()))
    assert not is_full(replace(full, album=None))


def test_each_artist_album_and_track_is_one_row_with_its_batch_key() -> None:
    plays = [api_play(1, at(0)), api_play(1, at(60)), api_play(4, at(120)), api_play(2, at(180))]
    st = stage(plays)
    # api_track(n): artist n % 3, album n % 4; tracks 1 and 4 share artist 1.
    assert [row[0] for row in st.tracks.values()] == [0, 1, 2]
    assert [row[2] for row in st.tracks.values()] == ["Track 1", "Track 4", "Track 2"]
    assert len(st.artists) == 2 and len(st.albums) == 3
    assert st.has_full
    artist_1 = st.artists[("s", f"art{1:019d}")]
    assert artist_1 == [0, f"art{1:019d}", "Artist 1", "artist 1", None]
    album_1 = st.albums[("s", f"alb{1:019d}")]
    assert album_1 == [0, f"alb{1:019d}", "Album 1", "album 1", "artist 1", "https://img/1", None]
    track_1 = st.tracks[("s", f"trk{1:019d}")]
    assert track_1 == [0, f"trk{1:019d}", "Track 1", "track 1", "artist 1", 200_000, None, 0, True]
    assert st.track_artists == {(0, 0): 0, (1, 0): 0, (2, 1): 0}
    assert st.album_artists == {(0, 0): 0, (1, 0): 0, (2, 1): 0}
    # One row per play, API plays without ms_played (their track's duration, known later).
    assert [(p[0], p[1], p[3], p[4]) for p in st.plays] == [
        (0, 0, None, "api"),
        (1, 0, None, "api"),
        (2, 1, None, "api"),
        (3, 2, None, "api"),
    ]


def test_a_later_full_object_replaces_a_partial_row_and_its_credits() -> None:
    partial = replace(export_track(5), artists=(ArtistRef("Old Credit"),))
    full = api_track(5)
    st = stage([Play(partial, at(0), "extended", 1000), Play(full, at(60), "api", None)])
    [row] = st.tracks.values()
    assert row[0] == 0 and row[8] is True and row[5] == 200_000
    credited = {rk for (tk, rk) in st.track_artists if tk == 0}
    by_rk = {r[0]: r[2] for r in st.artists.values()}
    assert {by_rk[rk] for rk in credited} == {"Artist 2"}
    # Both plays point at the one row; the export play keeps its ms_played.
    assert [(p[1], p[3]) for p in st.plays] == [(0, 1000), (0, None)]


def test_a_later_record_only_fills_what_is_missing() -> None:
    first = replace(export_track(7), duration_ms=None)
    later = replace(export_track(7, album=9), duration_ms=123_000)
    st = stage([Play(first, at(0), "extended", 1), Play(later, at(60), "extended", 2)])
    [row] = st.tracks.values()
    assert row[5] == 123_000  # a missing duration filled
    assert row[7] == 0 and len(st.albums) == 1  # the first record's album stays
    assert not st.has_full


def test_images_missing_from_the_first_mention_are_filled_by_a_later_one() -> None:
    bare = ArtistRef("Artist 0", "a0")
    pictured = ArtistRef("Artist 0", "a0", image_url="https://img/a0")
    album = AlbumRef("Album", "l0", artists=(bare,))
    tracks = [
        TrackRef("One", "t1", (bare,), album=album),
        TrackRef("Two", "t2", (pictured,), album=replace(album, image_url="https://img/l0")),
    ]
    st = stage([Play(t, at(60 * i), "api", None) for i, t in enumerate(tracks)])
    assert st.artists[("s", "a0")][4] == "https://img/a0"
    assert st.albums[("s", "l0")][5] == "https://img/l0"


def test_a_provisional_album_is_keyed_by_its_first_credited_artist_or_the_tracks() -> None:
    credited = TrackRef(
        "Song", None, (ArtistRef("Singer"),), album=AlbumRef("Hits", artists=(ArtistRef("Band"),))
    )
    uncredited = TrackRef("Other", None, (ArtistRef("Singer"),), album=AlbumRef("Hits"))
    st = stage([Play(credited, at(0), "account", 1), Play(uncredited, at(60), "account", 1)])
    assert set(st.albums) == {("p", "band", "hits"), ("p", "singer", "hits")}
    assert {(r[4], r[3]) for r in st.albums.values()} == {("band", "hits"), ("singer", "hits")}


def test_an_album_without_a_name_is_no_album() -> None:
    track = TrackRef("Song", "t1", (ArtistRef("Singer", "s1"),), album=AlbumRef(""))
    st = stage([Play(track, at(0), "extended", 1)])
    assert st.albums == {} and next(iter(st.tracks.values()))[7] is None


def test_extent_is_the_span_and_origins_of_the_plays() -> None:
    st = stage([extended_play(1, at(600)), account_play(2, at(-60)), extended_play(3, at(0))])
    assert st.extent() == (at(-60), at(600), {"extended", "account"})


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        stage_checked([Play(export_track(1), datetime(2024, 1, 1), "extended", 1)])


def test_the_document_holds_every_table_in_column_order() -> None:
    names = ['It\'s \\ "quoted"', "東京事変", "🎵\u2028line\ttab"]
    plays = [
        replace(p, track=replace(p.track, name=n))
        for p, n in zip([api_play(i, at(60 * i)) for i in range(3)], names, strict=True)
    ]
    plays.append(account_play(1, at(600)))
    st = stage(plays)
    doc = json.loads(stage_document(st))
    assert len(doc) == 6
    artists, albums, album_artists, tracks, track_artists, rows = doc
    assert artists == [list(r) for r in st.artists.values()]
    assert albums == [list(r) for r in st.albums.values()]
    assert album_artists == [[ak, rk, pos] for (ak, rk), pos in st.album_artists.items()]
    assert [t[2] for t in tracks] == [*names, "Track 1"]
    assert tracks[3][1] is None and tracks[3][3] == name_key("Track 1") == "track 1"
    assert track_artists == [[tk, rk, pos] for (tk, rk), pos in st.track_artists.items()]
    assert rows[0] == [0, 0, at(0).isoformat(), None, "api"]
    assert rows[3] == [3, 3, at(600).isoformat(), 150_000, "account"]
    assert rows == [[p[0], p[1], p[2].isoformat(), p[3], p[4]] for p in st.plays]
