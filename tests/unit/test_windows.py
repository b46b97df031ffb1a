"""Window resolution (``myi.windows``): ranges, from/to as whole local days across daylight-saving
changes, refusals naming their parameter, and the split of a window into whole local months or days
and the edges around them. (The routes' answers for these windows are tested in
tests/integration/test_api_routes.py and test_api_hardening.py.)"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myi import windows
from myi.windows import Buckets, InvalidWindow, Window

NOW = datetime(2024, 6, 15, 12, 34, 56, 789_000, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
HOUR = timedelta(hours=1)


def resolve(
    range_: str | None = None, from_: str | None = None, to: str | None = None, zone: ZoneInfo = UTC_ZONE
) -> Window:
    return windows.resolve(range_=range_, from_=from_, to=to, zone=zone, now=NOW)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- ranges -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("range_", "days"), [("4w", 28), ("6m", 182), ("1y", 365)])
@pytest.mark.parametrize("zone", [UTC_ZONE, BERLIN, ZoneInfo("America/Los_Angeles")])
def test_a_range_rolls_back_from_now_whatever_the_zone(range_: str, days: int, zone: ZoneInfo) -> None:
    window = resolve(range_, zone=zone)
    assert window == Window(NOW - timedelta(days=days), NOW, zone) and window.bounded


@pytest.mark.parametrize("range_", ["all", None])
def test_all_and_no_range_are_unbounded(range_: str | None) -> None:
    window = resolve(range_, zone=BERLIN)
    assert window == Window(None, None, BERLIN) and not window.bounded


@pytest.mark.parametrize("range_", ["1w", "4W", "ALL", "12m", "1y ", "4w,6m"])
def test_an_unknown_range_is_refused_listing_the_known_ones(range_: str) -> None:
    with pytest.raises(InvalidWindow) as refused:
        resolve(range_)
    assert refused.value.parameter == "range"
    assert "4w, 6m, 1y, all" in str(refused.value)


# --- from and to ------------------------------------------------------------------------------------


def test_from_and_to_are_whole_local_days_both_inclusive() -> None:
    assert resolve(from_="2024-01-01", to="2024-01-31") == Window(utc(2024, 1, 1), utc(2024, 2, 1), UTC_ZONE)
    assert resolve(from_="2024-01-01", to="2024-01-31", zone=TOKYO) == Window(
        utc(2023, 12, 31, 15), utc(2024, 1, 31, 15), TOKYO
    )
    one_day = resolve(from_="2024-02-29", to="2024-02-29", zone=ZoneInfo("America/New_York"))
    assert (one_day.start, one_day.end) == (utc(2024, 2, 29, 5), utc(2024, 3, 1, 5))


def test_from_and_to_win_over_a_range() -> None:
    assert resolve("4w", "2024-01-01", "2024-01-01") == Window(utc(2024, 1, 1), utc(2024, 1, 2), UTC_ZONE)


@pytest.mark.parametrize(
    ("zone", "day", "start", "hours"),
    [
        ("Europe/Berlin", "2024-03-31", utc(2024, 3, 30, 23), 23),  # spring forward at 02:00
        ("Europe/Berlin", "2024-10-27", utc(2024, 10, 26, 22), 25),  # fall back at 03:00
        ("America/New_York", "2024-03-10", utc(2024, 3, 10, 5), 23),
        ("America/New_York", "2024-11-03", utc(2024, 11, 3, 4), 25),
        ("Australia/Sydney", "2024-04-07", utc(2024, 4, 6, 13), 25),  # the southern autumn
        ("Australia/Lord_Howe", "2024-10-06", utc(2024, 10, 5, 13, 30), 23.5),  # half an hour
        ("Antarctica/Troll", "2024-03-31", utc(2024, 3, 31), 22),  # two hours
        # midnight itself skipped: the day begins when the clocks jump (01:00 local)
        ("America/Sao_Paulo", "2018-11-04", utc(2018, 11, 4, 3), 23),
        # midnight itself twice: the day begins at the first
        ("America/Havana", "2023-11-05", utc(2023, 11, 5, 4), 25),
    ],
)
def test_a_day_of_a_daylight_saving_change_is_as_long_as_it_was_locally(
    zone: str, day: str, start: datetime, hours: float
) -> None:
    window = resolve(from_=day, to=day, zone=ZoneInfo(zone))
    assert window.start == start
    assert window.end is not None and window.end - start == timedelta(hours=hours)


def test_a_day_the_zone_skipped_is_an_empty_window() -> None:
    apia = ZoneInfo("Pacific/Apia")  # went from 29 to 31 December 2011, across the date line
    skipped = resolve(from_="2011-12-30", to="2011-12-30", zone=apia)
    assert skipped.start == skipped.end == utc(2011, 12, 30, 10)
    both = resolve(from_="2011-12-29", to="2011-12-31", zone=apia)
    assert both.start is not None and both.end is not None and both.end - both.start == timedelta(days=2)


@pytest.mark.parametrize(
    ("from_", "to", "missing"), [("2024-01-01", None, "to"), (None, "2024-01-31", "from")]
)
def test_from_and_to_go_together(from_: str | None, to: str | None, missing: str) -> None:
    with pytest.raises(InvalidWindow) as refused:
        resolve("4w", from_, to)
    assert refused.value.parameter == missing
    assert str(refused.value) == f"Invalid parameter {missing}: from and to go together."


@pytest.mark.parametrize(
    ("from_", "to", "parameter", "says"),
    [
        ("2024-02-30", "2024-03-01", "from", "YYYY-MM-DD"),  # no such day
        ("2024-01-01", "2023-02-29", "to", "YYYY-MM-DD"),
        ("2024-1-01", "2024-01-31", "from", "YYYY-MM-DD"),
        ("20240101", "2024-01-31", "from", "YYYY-MM-DD"),
        ("2024-01-01T00:00", "2024-01-31", "from", "YYYY-MM-DD"),
        (" 2024-01-01", "2024-01-31", "from", "YYYY-MM-DD"),
        ("2024-01-01", "2024-01-31\n", "to", "YYYY-MM-DD"),
        ("", "2024-01-31", "from", "YYYY-MM-DD"),
        ("1989-12-31", "2024-01-31", "from", "out of range"),
        ("2024-01-01", "9001-01-01", "to", "out of range"),
        ("2024-01-02", "2024-01-01", "to", "before from"),
    ],
)
def test_a_bad_day_is_refused_naming_its_parameter(from_: str, to: str, parameter: str, says: str) -> None:
    with pytest.raises(InvalidWindow) as refused:
        resolve(from_=from_, to=to, zone=BERLIN)
    assert refused.value.parameter == parameter
    assert str(refused.value).startswith(f"Invalid parameter {parameter}:") and says in str(refused.value)
    assert isinstance(refused.value, ValueError)


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_the_first_and_last_days_accepted_resolve_in_any_zone(zone: str) -> None:
    window = resolve(from_="1990-01-01", to="9000-12-31", zone=ZoneInfo(zone))
    assert window.start is not None and window.end is not None
    assert window.start.astimezone(ZoneInfo(zone)).date() == date(1990, 1, 1)
    assert window.end.astimezone(ZoneInfo(zone)).date() == date(9001, 1, 1)


# --- whole buckets and edges ----------------------------------------------------------------------


def test_a_window_splits_into_the_whole_local_months_inside_it() -> None:
    buckets = windows.months(utc(2024, 1, 15), utc(2024, 4, 15), TOKYO)
    assert buckets == Buckets(
        first=date(2024, 2, 1),
        stop=date(2024, 4, 1),
        start=utc(2024, 1, 15),
        inner_start=utc(2024, 1, 31, 15),  # 1 February in Tokyo
        inner_end=utc(2024, 3, 31, 15),
        end=utc(2024, 4, 15),
    )
    assert buckets.as_params("m") == {
        "m_first": date(2024, 2, 1),
        "m_stop": date(2024, 4, 1),
        "m_inner_start": utc(2024, 1, 31, 15),
        "m_inner_end": utc(2024, 3, 31, 15),
    }


def test_a_window_on_month_boundaries_has_no_edges() -> None:
    buckets = windows.months(utc(2023, 12, 31, 23), utc(2024, 3, 31, 22), BERLIN)
    assert (buckets.first, buckets.stop) == (date(2024, 1, 1), date(2024, 4, 1))
    assert (buckets.inner_start, buckets.inner_end) == (buckets.start, buckets.end)


def test_a_window_inside_one_month_or_day_is_all_edge() -> None:
    months = windows.months(utc(2024, 5, 3), utc(2024, 5, 20), UTC_ZONE)
    assert months.first == months.stop and months.inner_start == months.inner_end == months.end
    days = windows.days(utc(2024, 5, 3, 1), utc(2024, 5, 3, 23), UTC_ZONE)
    assert days.first == days.stop and days.inner_start == days.inner_end == days.end


def test_the_days_of_a_window_follow_the_zone_across_a_change() -> None:
    buckets = windows.days(utc(2024, 3, 30, 12), utc(2024, 4, 1, 12), BERLIN)
    assert (buckets.first, buckets.stop) == (date(2024, 3, 31), date(2024, 4, 1))
    assert buckets.inner_end - buckets.inner_start == timedelta(hours=23)


def test_next_month_rolls_over_the_year() -> None:
    assert windows.next_month(date(2024, 12, 1)) == date(2025, 1, 1)
    assert windows.next_month(date(2024, 1, 31)) == date(2024, 2, 1)


def test_the_widest_window_splits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    window = resolve(from_="1990-01-01", to="9000-12-31", zone=BERLIN)
    assert window.start is not None and window.end is not None
    calls: list[date] = []
    midnight = windows.local_midnight

    def counted(day: date, zone: ZoneInfo) -> datetime:
        calls.append(day)
        return midnight(day, zone)

    monkeypatch.setattr(windows, "local_midnight", counted)
    buckets = windows.months(window.start, window.end, BERLIN)
    assert (buckets.first, buckets.stop) == (date(1990, 1, 1), date(9001, 1, 1))
    assert (buckets.inner_start, buckets.inner_end) == (window.start, window.end)
    assert len(calls) <= 6  # not one per month of seven thousand years


ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))
instants = st.datetimes(datetime(1990, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC))


def check(buckets: Buckets, start: datetime, end: datetime, zone: ZoneInfo, step: str) -> None:
    """The invariants of a split: whole buckets inside the window, edges shorter than a bucket."""
    ahead = windows.next_month if step == "month" else (lambda d: d + timedelta(days=1))
    assert (buckets.start, buckets.end) == (start, end)
    if buckets.first == buckets.stop:  # no whole bucket inside
        assert buckets.inner_start == buckets.inner_end == end
        assert (
            windows.local_midnight(ahead(buckets.first), zone) > end
            or windows.local_midnight(buckets.first, zone) < start
        )
        return
    assert buckets.first < buckets.stop
    if step == "month":
        assert buckets.first.day == buckets.stop.day == 1
    assert buckets.inner_start == windows.local_midnight(buckets.first, zone)
    assert buckets.inner_end == windows.local_midnight(buckets.stop, zone)
    assert start <= buckets.inner_start <= buckets.inner_end <= end
    # the buckets are the most that fit: the next one out on either side does not
    assert windows.local_midnight(ahead(buckets.stop), zone) > end
    before = buckets.first - timedelta(days=1)
    assert windows.local_midnight(before.replace(day=1) if step == "month" else before, zone) < start


@settings(max_examples=300, deadline=None)
@given(instants, st.integers(1, 4000 * 3600), st.sampled_from(ZONES))
def test_any_window_splits_into_whole_local_months_and_edges(start: datetime, hours: int, zone: str) -> None:
    end = start + timedelta(hours=hours)
    check(windows.months(start, end, ZoneInfo(zone)), start, end, ZoneInfo(zone), "month")


@settings(max_examples=300, deadline=None)
@given(instants, st.integers(1, 400 * 3600), st.sampled_from(ZONES))
def test_any_window_splits_into_whole_local_days_and_edges(start: datetime, seconds: int, zone: str) -> None:
    end = start + timedelta(seconds=seconds)
    check(windows.days(start, end, ZoneInfo(zone)), start, end, ZoneInfo(zone), "day")


@settings(max_examples=200, deadline=None)
@given(st.dates(date(1990, 1, 1), date(2040, 1, 1)), st.integers(0, 800), st.sampled_from(ZONES))
def test_from_and_to_resolve_to_the_local_midnights_around_them(first: date, length: int, zone: str) -> None:
    tz = ZoneInfo(zone)
    last = first + timedelta(days=length)
    window = resolve(from_=first.isoformat(), to=last.isoformat(), zone=tz)
    assert window.start == windows.local_midnight(first, tz)
    assert window.end == windows.local_midnight(last + timedelta(days=1), tz)
    assert window.start <= window.end
    # a whole number of local days: within a day of their nominal length either way
    assert abs((window.end - window.start) - timedelta(days=length + 1)) <= timedelta(days=1)
    for day in (first, last):
        assert window.start <= windows.local_midnight(day, tz) <= window.end
