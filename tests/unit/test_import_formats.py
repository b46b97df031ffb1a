"""Each export format's records, on Spotify's samples and on hand-written edge records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from myi.catalog import name_key
from myi.imports.formats import is_export_record, normalise
from myi.plays import Play

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "spotify" / "samples"


def sample(name: str) -> list[Any]:
    return json.loads((SAMPLES / name).read_text())


def test_the_new_extended_sample_gives_plays_and_each_skip_reason() -> None:
    results = [normalise(r) for r in sample("synthetic_Streaming_History_Audio_2024-2025_0.json")]
    kinds = [r if isinstance(r, str) else "play" for r in results]
    assert kinds == ["play", "play", "short_play", "episode", "audiobook", "incognito"]
    skipped_play = results[0]
    assert isinstance(skipped_play, Play)
    assert skipped_play.played_at == datetime(2024, 11, 4, 22, 19, 36, tzinfo=UTC)
    assert skipped_play.ms_played == 140956 and skipped_play.origin == "extended"
    assert skipped_play.track.spotify_id == "4NoM07yO0Luyv3OpeTwlyW"
    assert skipped_play.track.name == "HEY NEIGHBOR!"
    assert [a.name for a in skipped_play.track.artists] == ["poutyface"]
    assert skipped_play.track.album is not None and skipped_play.track.album.name == "POUTY PACK 1.0"


def test_the_old_extended_sample_gives_a_play_and_an_episode() -> None:
    results = [normalise(r) for r in sample("synthetic_endsong_0.json")]
    assert isinstance(results[0], Play) and results[0].track.spotify_id == "6I3mqTwhRpn34SLVafSH7G"
    assert results[1] == "episode"


def test_the_account_data_sample_gives_name_only_plays_at_minute_precision() -> None:
    results = [normalise(r) for r in sample("synthetic_StreamingHistory_music_0.json")]
    first = results[0]
    assert isinstance(first, Play) and first.origin == "account"
    assert first.played_at == datetime(2024, 5, 6, 18, 43, tzinfo=UTC)
    assert first.track.spotify_id is None and first.track.name == "Oh Ms Believer"
    assert [a.name for a in first.track.artists] == ["Twenty One Pilots"]
    assert results[2] == "short_play"


def test_account_data_podcasts_are_episodes() -> None:
    assert [normalise(r) for r in sample("synthetic_StreamingHistory_podcast_0.json")] == ["episode"]


def test_every_sample_is_recognised_as_an_export_by_its_first_record() -> None:
    for path in SAMPLES.glob("*.json"):
        assert is_export_record(json.loads(path.read_text())[0]), path.name
    assert not is_export_record({"playlists": []})
    assert not is_export_record(["ts", "ms_played"])


def ext(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "ts": "2024-01-01T10:00:00Z",
        "ms_played": 200_000,
        "master_metadata_track_name": "Song",
        "master_metadata_album_artist_name": "Artist",
        "master_metadata_album_album_name": "Album",
        "spotify_track_uri": "spotify:track:0000000000000000000001",
        "episode_name": None,
        "spotify_episode_uri": None,
        "reason_end": "endplay",
        "incognito_mode": False,
    }
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("not an object", "invalid"),
        ([1, 2], "invalid"),
        ({"unrelated": 1}, "invalid"),
        (ext(ts=None), "invalid"),
        (ext(ts="yesterday"), "invalid"),
        (ext(ms_played="200000"), "invalid"),
        (ext(ms_played=True), "invalid"),
        (ext(ms_played=-5), "invalid"),
        (ext(ms_played=Decimal("1.5")), "invalid"),
        (ext(audiobook_chapter_uri="spotify:chapter:x", spotify_track_uri=None), "audiobook"),
        (ext(spotify_episode_uri="spotify:episode:x", spotify_track_uri=None), "episode"),
        (ext(spotify_track_uri=None), "no_track_uri"),
        (ext(spotify_track_uri="spotify:local:Artist:Album:Song:200"), "no_track_uri"),
        (ext(incognito_mode=True), "incognito"),
        (ext(incognito_mode=True, ms_played=1000), "incognito"),  # the first rule that applies
        (ext(ms_played=29_999), "short_play"),
        ({"endTime": "2024-01-01 10:00", "msPlayed": 1000}, "invalid"),
        ({"endTime": "2024-01-01T10:00", "artistName": "A", "trackName": "T", "msPlayed": 60_000}, "invalid"),
        ({"endTime": "2024-01-01 10:00", "artistName": "A", "trackName": "T", "msPlayed": 10}, "short_play"),
    ],
)
def test_edge_records_land_under_the_first_reason_that_applies(record: Any, expected: str) -> None:
    assert normalise(record) == expected


def test_a_short_play_that_ended_naturally_still_counts() -> None:
    play = normalise(ext(ms_played=12_000, reason_end="trackdone"))
    assert isinstance(play, Play) and play.ms_played == 12_000


def test_numbers_from_the_streaming_parser_are_accepted() -> None:
    play = normalise(ext(ms_played=Decimal("200000")))
    assert isinstance(play, Play) and play.ms_played == 200_000


def test_a_track_without_album_names_keeps_its_id() -> None:
    play = normalise(ext(master_metadata_album_album_name=None, master_metadata_album_artist_name=None))
    assert isinstance(play, Play) and play.track.album is None and play.track.artists == ()


def test_account_datas_unknown_placeholder_is_no_track_but_a_real_name_is_a_play() -> None:
    record = {"endTime": "2024-12-04 20:50", "msPlayed": 36_989}
    assert (
        normalise({**record, "artistName": "Unknown Artist", "trackName": "Unknown Track"}) == "no_track_uri"
    )
    for artist, track in (("Unknown Artist", "Intro"), ("Unknown Mortal Orchestra", "Unknown Track")):
        play = normalise({**record, "artistName": artist, "trackName": track})
        assert isinstance(play, Play) and play.track.name == track


def test_a_music_video_with_a_track_uri_is_a_play_and_a_video_episode_is_not() -> None:
    video = {"ts": "2023-03-01T10:00:00Z", "ms_played": 200_000, "reason_end": "trackdone"}
    song = normalise({**video, "spotify_track_uri": "spotify:track:4NoM07yO0Luyv3OpeTwlyW"})
    assert isinstance(song, Play) and song.track.spotify_id == "4NoM07yO0Luyv3OpeTwlyW"
    assert (
        normalise({**video, "spotify_episode_uri": "spotify:episode:0Z1x", "episode_name": "E"}) == "episode"
    )


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("=", "÷", False),
        ("!!!", "...", False),
        ("+", "\u00d7", False),  # multiplication sign
        ("!!!", "! ! !", False),
        ("Beyoncé", "beyonce", True),
        ("AC/DC", "ac dc", True),
        ("Sigur Rós", "SIGUR ROS!", True),
        ("ÿ", "Ÿ", True),
        (" ÷ ", "÷", True),
    ],
)
def test_a_name_key_ignores_accents_case_and_punctuation_but_is_never_empty(
    a: str, b: str, same: bool
) -> None:
    assert (name_key(a) == name_key(b)) is same
    assert name_key(a) and name_key(b)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("spotify:track:4NoM07yO0Luyv3OpeTwlyW", "4NoM07yO0Luyv3OpeTwlyW"),
        ("spotify:track:4NoM07yO0Luyv3OpeTwly", None),  # 21 characters
        ("spotify:track:" + "a" * 10_000, None),
        ("spotify:track:４NoM07yO0Luyv3OpeTwlyW", None),  # a fullwidth digit is alphanumeric, not base 62  # noqa: RUF001
        ("spotify:track:4NoM07yO0Luyv3OpeTwly_", None),
        ("spotify:episode:4NoM07yO0Luyv3OpeTwlyW", None),
    ],
)
def test_track_ids_are_22_base62_characters(uri: str, expected: str | None) -> None:
    from myi.catalog import spotify_id_from_uri

    assert spotify_id_from_uri(uri) == expected


def test_a_malformed_track_uri_is_invalid_and_a_missing_one_is_no_track_uri() -> None:
    record = {"ts": "2020-01-01T00:00:00Z", "ms_played": 40_000, "reason_end": "trackdone"}
    assert normalise({**record, "spotify_track_uri": "spotify:track:" + "a" * 10_000}) == "invalid"
    assert normalise({**record, "spotify_track_uri": None}) == "no_track_uri"
