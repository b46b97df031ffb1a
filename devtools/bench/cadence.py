"""Sync cadence figures: the real listening histories of ``../shared/real-exports`` (five people's
published Spotify data, see its ``SOURCES.md``) replayed through :mod:`myi.cadence`, with no
database and no clock: a pure simulation that takes seconds.

Every record that ``recently-played`` would show is a play at its end time (UTC): extended
history records with a ``spotify_track_uri``, not incognito, of 30 s or more; account data
records (``StreamingHistory*.json``, a 2020 package's in ``MyData/``) of 30 s or more, podcasts and
audiobooks aside. Each person is one user of MYI from their first play to their last, quiet gaps
included; anniesidd's two downloads, four years apart, are two such spans (one user across the gap
would add years of polling that nobody listened through).

The mechanism, for each deployment profile: the fan-out runs every ``P`` seconds (personal: the
profile's ``sync_fanout_schedule``; scale: the wiring's), from a seeded phase, and enqueues every
user whose next sync time has come, each message delayed by 0 to ``SYNC_MAX_DELAY_SECONDS``. A sync
reads the plays since the previous one, the latest 50 at most (the rest are lost; a full page reads
on: one more call), then plans with :func:`myi.cadence.next_interval`, from the profile of the
plays stored before it (refreshed at most once a day) and the rate of the page just read. An
interval that :func:`myi.cadence.reaches_before_fanout` is kept exactly (the worker's own delayed
message); any other is due :func:`myi.cadence.fanout_due` ahead and waits for the first fan-out at
or after that. ``SYNC_MAX_INTERVAL_SECONDS`` is
the profile's ``sync_max_interval_s`` if it sets one, else ``Settings().sync_max_interval_s``.

Figures, per profile (``personal``, ``scale``): ``cadence_lost_plays_<profile>_<person>`` and their
total ``cadence_lost_plays_<profile>`` (target 0); ``cadence_calls_per_user_day_<profile>`` (every
call over every user-day) and ``cadence_calls_vs_fixed_15min_<profile>``, that over a fixed
15-minute poll's 96 (target under 0.4); the same three as ``cadence_heavy_*`` for a synthetic heavy
listener (40 plays an hour, 8 hours a day, 8 weeks); and ``cadence_fixed_15min_lost_plays``, what
such a fixed poll loses of the real histories.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools.bench import BenchContext, Figure
from devtools.paths import REAL_EXPORTS as CORPUS
from myi import cadence
from myi.settings import Settings

FIXED_S = 900  # the fixed poll compared with: 96 calls a day
DAY_S = 86_400
MIN_MS = 30_000  # recently-played shows plays of about 30 s or more
SEED = 25
_TRACK_URI = re.compile(r"^spotify:track:[0-9A-Za-z]+$")


@dataclass(frozen=True)
class Mechanism:
    fanout_s: int  # P
    cooldown_s: int
    max_s: int
    max_delay_s: int = 60


@dataclass
class Replay:
    lost: int = 0
    calls: int = 0
    days: float = 0.0
    losses: list[tuple[float, int]] = field(default_factory=list)  # (sync time, plays since the last)

    @staticmethod
    def total(results: Iterable[Replay]) -> Replay:
        out = Replay()
        for r in results:
            out.lost, out.calls, out.days = out.lost + r.lost, out.calls + r.calls, out.days + r.days
            out.losses += r.losses
        return out


def replay(plays: Sequence[float], mech: Mechanism, *, seed: int = SEED) -> Replay:
    """One user whose plays end at ``plays`` (epoch seconds, sorted), signed up just before the
    first, synced as the mechanism does until a sync has read the last."""
    out = Replay()
    if not plays:
        return out
    rng = random.Random(seed)
    phase = rng.randrange(max(1, mech.fanout_s))  # a rate() schedule runs from its creation
    start = plays[0] - 1
    hourly: Counter[int] = Counter()  # stored plays per clock hour (hours since the epoch)
    rates: cadence.Profile | None = None
    profiled_at: float | None = None
    last: float | None = None  # the previous sync
    seen = 0
    t = _fanout_at(start, mech, rng, phase)
    while seen < len(plays):
        upto = bisect.bisect_right(plays, t)
        new = upto - seen
        out.calls += 1 + (new >= cadence.PAGE)  # a full page reads on at once
        if new > cadence.PAGE:
            out.lost += new - cadence.PAGE
            out.losses.append((t, new))
        now = datetime.fromtimestamp(t, UTC)
        if profiled_at is None or t - profiled_at >= DAY_S:  # before this page is stored, as the worker
            oldest = math.ceil((t - cadence.HISTORY.total_seconds()) / 3600)
            for h in [h for h in hourly if h < oldest]:
                del hourly[h]
            counts = ((datetime.fromtimestamp(h * 3600, UTC), n) for h, n in hourly.items())
            rates, profiled_at = cadence.profile(counts, now), t
        page = min(new, cadence.PAGE)
        hourly.update(int(p // 3600) for p in plays[upto - page : upto])
        seen = upto
        interval = cadence.next_interval(
            rates,
            now,
            recent_rate=cadence.page_rate(
                page, cadence.page_span(t, last, plays[upto - page] if page else None)
            ),
            cooldown_s=mech.cooldown_s,
            max_s=mech.max_s,
        )
        last = t
        if cadence.reaches_before_fanout(interval, mech.fanout_s):
            t += interval
        else:
            t = _fanout_at(t + cadence.fanout_due(interval, mech.fanout_s, mech.cooldown_s), mech, rng, phase)
    assert last is not None
    out.days = (last - start) / DAY_S
    return out


def _fanout_at(due: float, mech: Mechanism, rng: random.Random, phase: int) -> float:
    """When a user due at ``due`` is synced: the first fan-out at or after it, plus its delay."""
    period = max(1, mech.fanout_s)
    return math.ceil((due - phase) / period) * period + phase + rng.randint(0, max(0, mech.max_delay_s))


def fixed_poll_lost(plays: Sequence[float], period_s: int = FIXED_S) -> int:
    """What a poll every ``period_s`` seconds loses: the plays beyond 50 since the previous poll."""
    per_poll = Counter(math.ceil(p / period_s) for p in plays)
    return sum(max(0, n - cadence.PAGE) for n in per_poll.values())


def heavy_listener(*, days: int = 56, per_hour: int = 40, hours: int = 8, seed: int = SEED) -> list[float]:
    """``per_hour`` plays an hour, evenly spread with a jitter of a third of their spacing, for
    ``hours`` hours from 16:00 UTC, every day from 2024-01-01."""
    rng = random.Random(seed)
    first = datetime(2024, 1, 1, 16, tzinfo=UTC).timestamp()
    spacing = 3600 / per_hour
    return sorted(
        first + d * DAY_S + k * spacing + rng.uniform(-spacing / 3, spacing / 3)
        for d in range(days)
        for k in range(per_hour * hours)
    )


def histories(corpus: Path = CORPUS) -> dict[str, list[list[float]]]:
    """Each person's plays (epoch seconds, sorted), one list per download (a 2020 package's
    ``MyData/`` apart from the rest)."""
    out = {}
    for folder in sorted(p for p in corpus.iterdir() if p.is_dir()):
        spans = [s for s in (_plays(folder), _plays(folder / "MyData")) if s]
        if spans:
            out[folder.name] = spans
    return out


def _plays(folder: Path) -> list[float]:
    extended = [_extended(r) for f in sorted(folder.glob("Streaming_History_*.json")) for r in _records(f)]
    account = [_account(r) for f in sorted(folder.glob("StreamingHistory*.json")) for r in _records(f)]
    return sorted(t for t in extended + account if t is not None)


def _records(path: Path) -> list[Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, list) else []


def _extended(r: Any) -> float | None:
    if not isinstance(r, dict) or not isinstance(r.get("ts"), str) or r.get("incognito_mode") is True:
        return None
    uri, ms = r.get("spotify_track_uri"), r.get("ms_played")
    if not (isinstance(uri, str) and _TRACK_URI.match(uri) and isinstance(ms, int) and ms >= MIN_MS):
        return None
    return datetime.fromisoformat(r["ts"]).timestamp()


def _account(r: Any) -> float | None:
    if not isinstance(r, dict) or not isinstance(r.get("endTime"), str):
        return None
    if any(k in r for k in ("podcastName", "episodeName", "audiobookName", "chapterName")):
        return None
    ms = r.get("msPlayed")
    if not (isinstance(ms, int) and ms >= MIN_MS):
        return None
    return datetime.strptime(r["endTime"], "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp()


def mechanisms() -> dict[str, Mechanism]:
    """Each deployment profile's mechanism, from the settings and the infrastructure's config."""
    from devtools.local.schedule import rate_seconds
    from infra import config
    from infra.wiring import WIRING

    settings = Settings()
    wired = next(s.expression for s in WIRING.function("sync_fanout").schedules if s.rule == "sync-fanout")
    out = {}
    for name, shape in config._PROFILES.items():
        schedule = shape.get("sync_fanout_schedule") or wired
        period = rate_seconds(schedule)
        if period is None:
            raise ValueError(f"the {name} profile's sync fan-out is not a rate() schedule: {schedule!r}")
        max_s = int(shape.get("sync_max_interval_s") or settings.sync_max_interval_s)
        out[name] = Mechanism(period, settings.sync_cooldown_s, max_s, settings.sync_max_delay_s)
    return out


def _figures(prefix: str, profile: str, result: Replay) -> Iterator[Figure]:
    per_day = result.calls / result.days if result.days else 0.0
    yield Figure(f"{prefix}_lost_plays_{profile}", result.lost, "plays")
    yield Figure(f"{prefix}_calls_per_user_day_{profile}", per_day, "calls")
    yield Figure(f"{prefix}_calls_vs_fixed_15min_{profile}", per_day / (DAY_S / FIXED_S), "x")


def run(ctx: BenchContext) -> Iterator[Figure]:
    people = histories() if CORPUS.is_dir() else {}
    if not people:
        print(f"# cadence: no real exports at {CORPUS}; the heavy listener only", file=sys.stderr)
    heavy = heavy_listener()
    for profile, mech in mechanisms().items():
        results = []
        for person, spans in people.items():
            result = Replay.total(replay(span, mech, seed=SEED + i) for i, span in enumerate(spans))
            yield Figure(f"cadence_lost_plays_{profile}_{person.replace('-', '_')}", result.lost, "plays")
            results.append(result)
        if people:
            yield from _figures("cadence", profile, Replay.total(results))
        yield from _figures("cadence_heavy", profile, replay(heavy, mech))
    if people:
        lost = sum(fixed_poll_lost(span) for spans in people.values() for span in spans)
        yield Figure("cadence_fixed_15min_lost_plays", lost, "plays")
