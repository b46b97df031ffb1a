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

from devtools.fakespotify.world import World, spotify_id

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
    count: int,
    *,
    tracks: list[SyntheticTrack],
    start: datetime = START,
    seed: int = 2,
    old: bool = False,
    breaks: float = 0.05,
) -> Iterator[dict[str, Any]]:
    """``count`` extended-history records in time order: about 85 % music plays, the rest skips,
    short plays, podcast episodes, audiobook chapters and incognito plays; after a share ``breaks``
    of them, a pause of 4 to 40 hours."""
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
        if rng.random() < breaks:
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
    the files Spotify adds that are not history. However many, they lie between ``START`` and a
    day ago (an import counts a play from the future as invalid): a long history pauses less."""
    tracks = tracks or catalog(max(100, min(30_000, count // 15)), seed)
    hours = (datetime.now(UTC) - timedelta(days=1) - START) / timedelta(hours=1)
    # about 4 minutes a record, and 22 hours a pause on average
    breaks = min(0.05, max(0.0, (hours * 0.9 / count - 4 / 60) / 22))
    records = extended_records(count, tracks=tracks, seed=seed, breaks=breaks)
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


# --- the demo user's download ---------------------------------------------------------------------


def world_catalog(world: World) -> list[SyntheticTrack]:
    """The tracks of a fake Spotify world as an export names them (album artist first)."""
    out = []
    for track_id, track in sorted(world.tracks.items()):
        album = world.albums[track["album_id"]]
        artist = world.artists[album["artist_ids"][0]]["name"]
        out.append(SyntheticTrack(track_id, track["name"], artist, album["name"], track["duration_ms"]))
    return out


def _as_old(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A new-style record in the old ``endsong`` shape: username and decrypted addresses, no
    audiobook keys, ``skipped`` often null, ``offline_timestamp`` in milliseconds."""
    old = {k: v for k, v in record.items() if not k.startswith("audiobook_") and k != "ip_addr"}
    old.update(username="demo-listener", ip_addr_decrypted="198.51.100.23", user_agent_decrypted="unknown")
    old["offline_timestamp"] = record["offline_timestamp"] * 1000
    if rng.random() < 0.6:
        old["skipped"] = None
    return old


def _stamped(record: dict[str, Any]) -> dict[str, Any]:
    end = datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
    record["offline_timestamp"] = int(end.timestamp()) - record["ms_played"] // 1000
    if record.get("audiobook_chapter_uri"):
        record["offline"] = None
    return record


def demo_export(
    path: Path, world: World, user: str, *, until: datetime, count: int = 120_000
) -> dict[str, int]:
    """The download a long-time listener of ``world`` would get: ``count`` records of extended
    history in the new format (the oldest fifth in the old ``endsong`` shape), ending with the
    user's plays in ``world`` up to ``until``; the account-data files of the last year (minute
    precision, names only) for music and podcasts; a video file; and the files Spotify adds that
    are no history. Returns the number of records per kind of file."""
    tracks = world_catalog(world)
    recent = [(at, track_id) for at, track_id in world.plays.get(user, []) if at <= until]
    history_end = (recent[0][0] if recent else until) - timedelta(hours=6)
    synthetic = count - len(recent)
    span = _span(synthetic, tracks)
    start = history_end - span
    old_count = synthetic // 5
    rng = random.Random(17)
    counts = {"extended": 0, "endsong": 0, "account_music": 0, "account_podcast": 0, "video": 0}
    year_ago = until - timedelta(days=365)
    account: list[dict[str, Any]] = []
    podcasts: list[dict[str, Any]] = []

    def history() -> Iterator[dict[str, Any]]:
        for record in extended_records(synthetic, tracks=tracks, start=start, seed=5):
            yield _stamped(record)
        by_id = {t.id: t for t in tracks}
        for at, track_id in recent:
            t = by_id[track_id]
            yield _stamped(
                {
                    **_RECENT_TEMPLATE,
                    "ts": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "ms_played": t.duration_ms,
                    "master_metadata_track_name": t.name,
                    "master_metadata_album_artist_name": t.artist,
                    "master_metadata_album_album_name": t.album,
                    "spotify_track_uri": f"spotify:track:{t.id}",
                }
            )

    records = history()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr(
            "Spotify Extended Streaming History/ReadMeFirst_ExtendedStreamingHistory.pdf", b"%PDF-1.4"
        )
        zf.writestr("Spotify Account Data/Userdata.json", json.dumps({"username": "demo-listener"}))
        zf.writestr("Spotify Account Data/Playlist1.json", json.dumps({"playlists": []}))
        written, index = 0, 0
        while written < count:
            chunk = min(RECORDS_PER_FILE, count - written)
            batch = [next(records) for _ in range(chunk)]
            first, last = batch[0]["ts"][:4], batch[-1]["ts"][:4]
            for r in batch:
                at = datetime.fromisoformat(r["ts"].replace("Z", "+00:00"))
                if at >= year_ago and r.get("spotify_track_uri") and not r["incognito_mode"]:
                    account.append(r)
                elif at >= year_ago and r.get("spotify_episode_uri"):
                    podcasts.append(r)
            if written + chunk <= old_count:
                name = f"MyData/endsong_{index}.json"
                batch = [_as_old(r, rng) for r in batch]
                counts["endsong"] += chunk
            else:
                name = (
                    f"Spotify Extended Streaming History/Streaming_History_Audio_{first}-{last}_{index}.json"
                )
                counts["extended"] += chunk
            with zf.open(name, "w", force_zip64=True) as member:
                write_json_array(member, batch)
            written += chunk
            index += 1
        music = account_records(account)
        with zf.open("Spotify Account Data/StreamingHistory_music_0.json", "w") as member:
            counts["account_music"] = write_json_array(member, music)
        with zf.open("Spotify Account Data/StreamingHistory_podcast_0.json", "w") as member:
            counts["account_podcast"] = write_json_array(
                member,
                [
                    {
                        "endTime": r["ts"][:16].replace("T", " "),
                        "podcastName": r["episode_show_name"],
                        "episodeName": r["episode_name"],
                        "msPlayed": r["ms_played"],
                    }
                    for r in podcasts
                ],
            )
        video = podcasts[:50]
        with zf.open(
            f"Spotify Extended Streaming History/Streaming_History_Video_{until.year - 1}-{until.year}.json",
            "w",
        ) as member:
            counts["video"] = write_json_array(member, video)
    return counts


def _span(count: int, tracks: list[SyntheticTrack]) -> timedelta:
    """How long ``count`` records of :func:`extended_records` last (they are deterministic)."""
    last = START
    for record in extended_records(count, tracks=tracks, start=START, seed=5):
        last = datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
    return last - START


_RECENT_TEMPLATE: dict[str, Any] = {
    "platform": "android",
    "conn_country": "DE",
    "ip_addr": "203.0.113.9",
    "episode_name": None,
    "episode_show_name": None,
    "spotify_episode_uri": None,
    "audiobook_title": None,
    "audiobook_uri": None,
    "audiobook_chapter_uri": None,
    "audiobook_chapter_title": None,
    "reason_start": "trackdone",
    "reason_end": "trackdone",
    "shuffle": False,
    "skipped": False,
    "offline": False,
    "offline_timestamp": 0,
    "incognito_mode": False,
}
