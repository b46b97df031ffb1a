"""Synthetic Spotify exports for tests and benchmarks: the formats of ``tests/data/spotify/samples``,
with a realistic mix of plays, skips, episodes, audiobook chapters and incognito sessions, written
as Spotify's zip (``Spotify Extended Streaming History/Streaming_History_Audio_2019-2020_0.json``...)
without holding the records in memory."""

from __future__ import annotations

import json
import random
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from myi.fakespotify.world import spotify_id

RECORDS_PER_FILE = 15_000
START = datetime(2016, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SyntheticTrack:
    id: str
    name: str
    artist: str
    album: str
    duration_ms: int


def catalog(size: int, seed: int = 1) -> list[SyntheticTrack]:
    rng = random.Random(seed)
    artists = [f"Synthetic Artist {i}" for i in range(max(1, size // 12))]
    out = []
    for i in range(size):
        artist = artists[i % len(artists)]
        out.append(
            SyntheticTrack(
                spotify_id(f"synthetic-track-{seed}-{i}"),
                f"Synthetic Song {i}",
                artist,
                f"{artist} Album {i // 10}",
                rng.randint(120_000, 360_000),
            )
        )
    return out


def extended_records(
    count: int, *, tracks: list[SyntheticTrack], start: datetime = START, seed: int = 2, old: bool = False
) -> Iterator[dict[str, Any]]:
    """``count`` extended-history records in time order: about 85 % music plays, the rest skips,
    short plays, podcast episodes, audiobook chapters and incognito plays."""
    rng = random.Random(seed)
    at = start
    for n in range(count):
        track = tracks[int(rng.paretovariate(1.2)) % len(tracks)]
        roll = rng.random()
        ms = track.duration_ms if roll < 0.7 else rng.randint(31_000, track.duration_ms)
        reason_end = "trackdone" if ms == track.duration_ms else "fwdbtn"
        record: dict[str, Any] = {
            "ts": "",
            "platform": "android",
            "ms_played": ms,
            "conn_country": "DE",
            "master_metadata_track_name": track.name,
            "master_metadata_album_artist_name": track.artist,
            "master_metadata_album_album_name": track.album,
            "spotify_track_uri": f"spotify:track:{track.id}",
            "episode_name": None,
            "episode_show_name": None,
            "spotify_episode_uri": None,
            "reason_start": "trackdone",
            "reason_end": reason_end,
            "shuffle": False,
            "skipped": reason_end != "trackdone",
            "offline": False,
            "offline_timestamp": 0,
            "incognito_mode": False,
        }
        if old:
            record.update(
                username="synthetic", ip_addr_decrypted="203.0.113.9", user_agent_decrypted="unknown"
            )
        else:
            record.update(
                ip_addr="203.0.113.9",
                audiobook_title=None,
                audiobook_uri=None,
                audiobook_chapter_uri=None,
                audiobook_chapter_title=None,
            )
        if 0.85 <= roll < 0.9:
            record.update(ms_played=rng.randint(500, 29_000), reason_end="fwdbtn", skipped=True)
        elif 0.9 <= roll < 0.95:
            record.update(
                master_metadata_track_name=None,
                master_metadata_album_artist_name=None,
                master_metadata_album_album_name=None,
                spotify_track_uri=None,
                episode_name=f"Episode {n}",
                episode_show_name="Synthetic Show",
                spotify_episode_uri=f"spotify:episode:{spotify_id(f'ep{n}')}",
            )
        elif 0.95 <= roll < 0.97 and not old:
            record.update(
                master_metadata_track_name=None,
                master_metadata_album_artist_name=None,
                master_metadata_album_album_name=None,
                spotify_track_uri=None,
                audiobook_title="Synthetic Book",
                audiobook_uri=f"spotify:show:{spotify_id('book')}",
                audiobook_chapter_uri=f"spotify:episode:{spotify_id(f'ch{n}')}",
                audiobook_chapter_title=f"Chapter {n}",
            )
        elif 0.97 <= roll < 0.98:
            record["incognito_mode"] = True
        at += timedelta(milliseconds=record["ms_played"] + rng.randint(0, 90) * 1000)
        if rng.random() < 0.05:
            at += timedelta(hours=rng.randint(4, 40))
        record["ts"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        yield record


def account_records(extended: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The account-data view of extended records: music only, minute precision, names only."""
    out = []
    for r in extended:
        if not r.get("spotify_track_uri") or r.get("incognito_mode"):
            continue
        end = datetime.fromisoformat(r["ts"].replace("Z", "+00:00"))
        out.append(
            {
                "endTime": end.strftime("%Y-%m-%d %H:%M"),
                "artistName": r["master_metadata_album_artist_name"],
                "trackName": r["master_metadata_track_name"],
                "msPlayed": r["ms_played"],
            }
        )
    return out


def write_json_array(out: IO[bytes], records: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> int:
    """Stream records as a pretty JSON array (as Spotify writes them); returns how many."""
    out.write(b"[\n")
    n = 0
    for record in records:
        if n:
            out.write(b",\n")
        out.write(json.dumps(record, indent=2).encode())
        n += 1
    out.write(b"\n]")
    return n


def write_extended_zip(
    path: Path, count: int, *, tracks: list[SyntheticTrack] | None = None, seed: int = 2
) -> int:
    """A zip like Spotify's extended-history download: ``count`` records in files of 15,000, plus
    the files Spotify adds that are not history."""
    tracks = tracks or catalog(max(100, min(30_000, count // 15)), seed)
    records = extended_records(count, tracks=tracks, seed=seed)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr(
            "Spotify Extended Streaming History/ReadMeFirst_ExtendedStreamingHistory.pdf", b"%PDF-1.4"
        )
        written, index = 0, 0
        while written < count:
            chunk = min(RECORDS_PER_FILE, count - written)
            name = f"Spotify Extended Streaming History/Streaming_History_Audio_{2016 + index}_{index}.json"
            with zf.open(name, "w", force_zip64=True) as member:
                write_json_array(member, (next(records) for _ in range(chunk)))
            written += chunk
            index += 1
    return count
