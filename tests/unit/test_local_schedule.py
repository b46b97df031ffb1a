"""EventBridge schedule expressions as the local runtime evaluates them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devtools.local.schedule import Cron, ScheduleError, rate_seconds
from infra.wiring import WIRING


def test_rate_expressions_give_their_interval() -> None:
    assert rate_seconds("rate(15 minutes)") == 900
    assert rate_seconds("rate(1 hour)") == 3600
    assert rate_seconds("rate(2 days)") == 172800
    assert rate_seconds("cron(0 3 * * ? *)") is None


def test_daily_cron_fires_only_in_its_minute() -> None:
    cron = Cron.parse("cron(0 3 * * ? *)")
    assert cron.matches(datetime(2026, 11, 24, 3, 0, 59, tzinfo=UTC))
    assert not cron.matches(datetime(2026, 11, 24, 3, 1, tzinfo=UTC))
    assert not cron.matches(datetime(2026, 11, 24, 15, 0, tzinfo=UTC))


def test_weekday_names_ranges_and_steps() -> None:
    cron = Cron.parse("cron(0/15 8-10 ? * MON-FRI *)")
    assert cron.matches(datetime(2026, 11, 23, 8, 45, tzinfo=UTC))  # a Monday
    assert not cron.matches(datetime(2026, 11, 22, 8, 45, tzinfo=UTC))  # a Sunday
    assert not cron.matches(datetime(2026, 11, 23, 8, 50, tzinfo=UTC))
    sunday = Cron.parse("cron(0 0 ? * SUN *)")
    assert sunday.matches(datetime(2026, 11, 22, 0, 0, tzinfo=UTC))


def test_malformed_cron_is_refused() -> None:
    with pytest.raises(ScheduleError):
        Cron.parse("cron(0 3 * * *)")
    with pytest.raises(ScheduleError):
        Cron.parse("cron(0 3 1 * MON *)")
    with pytest.raises(ScheduleError):
        Cron.parse("cron(61 3 * * ? *)")


def test_every_schedule_of_the_wiring_is_understood() -> None:
    for schedule, _fn in WIRING.schedules():
        if rate_seconds(schedule.expression) is None:
            Cron.parse(schedule.expression)
