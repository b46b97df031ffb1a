"""When to sync a user next, from their own listening: pure functions, shared by the sync worker
and the ``cadence`` benchmark that replays real histories through them.

Spotify shows only the latest 50 plays, so every poll must come before 50 new plays have piled
up. The next interval is planned so that the plays expected before it stay under ``TARGET`` (30),
leaving the rest of the page as a margin, and always lies between ``SYNC_COOLDOWN_SECONDS`` (the
least) and ``SYNC_MAX_INTERVAL_SECONDS`` (the most).

The expected plays come from the user's *profile*: for each UTC hour of the day, the most plays
they played in that hour of any day of the last four weeks (the busiest day, not the average: a
listener who plays 40 songs one evening a week must be polled for that evening), and from the page
just read: plays since the previous sync, per hour, raise the rate of the next hour. A user with no
recent plays is assumed to listen continuously (``DEFAULT_RATE``).

A full page is read on at once (by the worker, not here). A planned sync that falls before the
next fan-out is reached by a delayed message of the worker's own (:func:`reaches_before_fanout`);
one left to the fan-out is due a period early, so that the fan-out comes before the plan, not up to
a period after it (:func:`fanout_due`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta

PAGE = 50
TARGET = 30  # plays a planned interval is expected to hold at most
HISTORY = timedelta(days=28)
DEFAULT_RATE = 20.0  # plays an hour: continuous listening of three-minute songs
MIN_RATE = 0.5  # plays an hour never planned below, so that a quiet hour is not "never"
BURST_WINDOW_S = 900  # a page's rate is taken over at least this long (no spikes from a minute)
BURST_HOLD = timedelta(hours=1)  # how long a page's rate is assumed to go on
SELF_SCHEDULE_MIN_S = 60  # a worker plans no delayed message of its own sooner than this

Profile = tuple[float, ...]  # 24 rates, plays per hour, by UTC hour of day


def profile(hourly: Iterable[tuple[datetime, int]], now: datetime) -> Profile | None:
    """The listening profile from plays counted per clock hour (``(start of the hour, plays)``):
    for each UTC hour of the day, the busiest such hour of the last four weeks. None when there was
    none (nothing to go by)."""
    peak = [0.0] * 24
    seen = False
    since = now - HISTORY
    for start, plays in hourly:
        if since <= start <= now and plays > 0:
            seen = True
            peak[start.hour] = max(peak[start.hour], float(plays))
    return tuple(peak) if seen else None


def page_span(now: float, last_sync: float | None, oldest_play: float | None) -> float | None:
    """Over how many seconds a page's plays were played (unix times): since the previous sync, or,
    on a first sync, since the page's oldest play; None when neither is known."""
    if last_sync is not None:
        return now - last_sync
    return None if oldest_play is None else now - oldest_play


def page_rate(plays: int, since_last_sync_s: float | None) -> float:
    """Plays an hour that the page just read shows, over :func:`page_span` (0 for an empty page)."""
    if plays <= 0 or since_last_sync_s is None:
        return 0.0
    return plays * 3600.0 / max(float(BURST_WINDOW_S), since_last_sync_s)


def next_interval(
    rates: Profile | None,
    now: datetime,
    *,
    recent_rate: float = 0.0,
    cooldown_s: int,
    max_s: int,
    target: float = TARGET,
) -> int:
    """Seconds until the next sync: as long as the plays expected by then stay under ``target``,
    within ``[cooldown_s, max(max_s, cooldown_s)]``."""
    low = max(0, cooldown_s)
    high = max(low, max_s)
    if high == low:
        return low
    expected = 0.0
    elapsed = 0.0
    at = now
    burst_ends = now + BURST_HOLD
    while elapsed < high:
        hour_ends = at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        step_ends = min(hour_ends, burst_ends) if at < burst_ends else hour_ends
        base = DEFAULT_RATE if rates is None else rates[at.hour]
        rate = max(MIN_RATE, base, recent_rate if at < burst_ends else 0.0)
        step = (step_ends - at).total_seconds()
        more = rate * step / 3600.0
        if expected + more >= target:
            elapsed += (target - expected) / rate * 3600.0
            break
        expected += more
        elapsed += step
        at = step_ends
    return int(min(high, max(low, math.floor(elapsed))))


def retry_delay(failures: int, *, cooldown_s: int, max_s: int) -> int:
    """Seconds until a user whose last ``failures`` syncs failed transiently is due again: the
    cooldown, doubled for each failure after the first, kept below the maximum interval."""
    low = max(0, cooldown_s)
    if failures <= 1 or low == 0:
        return low
    ceiling = max(low, max(max_s, low) // 2)
    return int(min(ceiling, low * 2 ** min(failures - 1, 20)))


def reaches_before_fanout(interval_s: int, fanout_period_s: int) -> bool:
    """Whether a sync planned ``interval_s`` ahead would come too late if left to the fan-out (it
    runs every ``fanout_period_s``; 0 when unknown): the worker then sends its own delayed message.
    An interval of exactly one period is one too: the fan-out could reach it a whole period late,
    and ``SYNC_MAX_INTERVAL_SECONDS`` equal to the period would then mean two periods."""
    return fanout_period_s > 0 and SELF_SCHEDULE_MIN_S <= interval_s <= fanout_period_s


def fanout_due(interval_s: int, fanout_period_s: int, cooldown_s: int) -> int:
    """When a sync planned ``interval_s`` ahead and left to the fan-out is due (seconds from now):
    a period early, so that the first fan-out after it (at most a period later) still comes before
    the plan; never before the cooldown."""
    if fanout_period_s <= 0 or interval_s <= fanout_period_s:
        return interval_s
    return max(min(cooldown_s, interval_s), interval_s - fanout_period_s)
