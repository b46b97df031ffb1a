"""The sync cadence's pure functions (``myi.cadence``), and the replay of the ``cadence`` benchmark
that measures them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from devtools.bench.cadence import Mechanism, fixed_poll_lost, replay
from myi import cadence

NOW = datetime(2026, 3, 4, 15, 20, tzinfo=UTC)
HEAVY = (40.0,) * 24
QUIET = (1.0,) * 24

rates = st.none() | st.tuples(*[st.floats(0, 500)] * 24)
moments = st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC))


@given(rates, moments, st.floats(0, 1000), st.integers(-100, 7200), st.integers(-100, 30_000))
def test_an_interval_stays_between_the_cooldown_and_the_maximum(
    profile: cadence.Profile | None, now: datetime, recent: float, cooldown: int, most: int
) -> None:
    interval = cadence.next_interval(profile, now, recent_rate=recent, cooldown_s=cooldown, max_s=most)
    low = max(0, cooldown)
    assert low <= interval <= max(low, most)


@given(rates, st.floats(0, 1000))
def test_no_cooldown_and_no_maximum_means_at_once(profile: cadence.Profile | None, recent: float) -> None:
    assert cadence.next_interval(profile, NOW, recent_rate=recent, cooldown_s=0, max_s=0) == 0


def test_a_heavy_listener_is_synced_sooner_than_a_quiet_one() -> None:
    heavy = cadence.next_interval(HEAVY, NOW, cooldown_s=600, max_s=7200)
    quiet = cadence.next_interval(QUIET, NOW, cooldown_s=600, max_s=7200)
    assert 600 <= heavy < quiet == 7200
    assert heavy == 30 * 3600 // 40  # the page's target of 30 plays, at 40 an hour
    # a busy page read just now shortens a quiet profile's interval too
    assert cadence.next_interval(QUIET, NOW, recent_rate=40.0, cooldown_s=600, max_s=7200) < quiet


def test_the_retry_delay_grows_and_stays_below_the_maximum() -> None:
    delays = [cadence.retry_delay(n, cooldown_s=600, max_s=7200) for n in range(1, 40)]
    assert delays[0] == 600 and delays[1] > delays[0]
    assert delays == sorted(delays) and max(delays) < 7200
    assert cadence.retry_delay(5, cooldown_s=0, max_s=7200) == 0


def test_reaches_before_fanout() -> None:
    assert cadence.reaches_before_fanout(600, 3600)
    assert cadence.reaches_before_fanout(3600, 3600)  # the fan-out could come a whole period late
    assert not cadence.reaches_before_fanout(3601, 3600)  # left to the fan-out
    assert not cadence.reaches_before_fanout(cadence.SELF_SCHEDULE_MIN_S - 1, 3600)  # too soon for a message
    assert not cadence.reaches_before_fanout(600, 0)  # the fan-out's period unknown


def test_the_profile_keeps_the_busiest_hour_of_the_last_four_weeks() -> None:
    assert cadence.profile([], NOW) is None
    old = NOW.replace(minute=0) - timedelta(days=29)
    assert cadence.profile([(old, 50)], NOW) is None
    hour = NOW.replace(minute=0) - timedelta(hours=2)
    profile = cadence.profile([(old, 50), (hour, 5), (hour - timedelta(days=1), 7), (hour, 0)], NOW)
    assert profile is not None and len(profile) == 24
    assert profile[hour.hour] == 7 and sum(profile) == 7


# --- the benchmark's replay -------------------------------------------------------------------
HOURLY = Mechanism(fanout_s=3600, cooldown_s=600, max_s=7200)
T0 = datetime(2026, 1, 5, 9, tzinfo=UTC).timestamp()


def test_the_replay_loses_nothing_of_a_quiet_history() -> None:
    plays = [T0 + k * 1800 for k in range(48)]  # a play every half hour for a day
    result = replay(plays, HOURLY)
    assert result.lost == 0 and result.losses == []
    assert 0 < result.calls <= 48 and 0.9 < result.days < 1.2


def test_the_replay_counts_the_plays_beyond_a_page_between_two_polls() -> None:
    burst = [T0 + 3 * 3600 + 100 + k * 0.01 for k in range(60)]  # 60 plays between two polls
    result = replay([T0, *burst], HOURLY)
    assert result.lost == 10 and [n for _, n in result.losses] == [60]
    assert result.calls >= 3  # the first sync, the one that reads the burst, and its read-on
    assert fixed_poll_lost([T0, *burst]) == 10


def test_a_sync_left_to_the_fan_out_is_due_a_period_early_so_it_comes_before_the_plan() -> None:
    assert cadence.fanout_due(3600, 900, 600) == 2700  # the fan-out comes between 2700 and 3600
    assert cadence.fanout_due(1000, 900, 600) == 600  # never before the cooldown
    assert cadence.fanout_due(600, 900, 600) == 600  # the worker's own message takes those
    assert cadence.fanout_due(3600, 0, 600) == 3600  # no known period: as planned
    assert cadence.fanout_due(0, 900, 0) == 0
