"""Time windows of the statistics routes, resolved in the user's time zone.

A window is a half-open UTC interval ``[start, end)``. ``range`` windows (``4w``, ``6m``, ``1y``)
roll and end now; ``from``/``to`` are whole calendar days in the user's zone, both inclusive; ``all``
is unbounded. Statistics answer a bounded window from the stored monthly (or daily) buckets that
lie wholly inside it and, for the partial buckets at its edges, from the events themselves, so the
work is bounded by the window's edges, never by the length of the history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

RANGES: dict[str, timedelta | None] = {
    "4w": timedelta(days=28),
    "6m": timedelta(days=182),
    "1y": timedelta(days=365),
    "all": None,
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class InvalidWindow(ValueError):
    """A window parameter a person got wrong; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class Window:
    start: datetime | None  # None: since the first play
    end: datetime | None  # None: until now (``all``)
    zone: ZoneInfo

    @property
    def bounded(self) -> bool:
        return self.start is not None


@dataclass(frozen=True)
class Buckets:
    """A bounded window split into whole local buckets ``[first, stop)`` (dates of the buckets'
    first days) covering the UTC interval ``[inner_start, inner_end)``, and the edges around them:
    ``[start, inner_start)`` and ``[inner_end, end)``. With no whole bucket inside, the inner
    interval is empty and the edges cover the window."""

    first: date
    stop: date
    start: datetime
    inner_start: datetime
    inner_end: datetime
    end: datetime

    def as_params(self, prefix: str) -> dict[str, object]:
        return {
            f"{prefix}_first": self.first,
            f"{prefix}_stop": self.stop,
            f"{prefix}_inner_start": self.inner_start,
            f"{prefix}_inner_end": self.inner_end,
        }


def resolve(
    *, range_: str | None, from_: str | None, to: str | None, zone: ZoneInfo, now: datetime
) -> Window:
    """The window of a request: ``from``/``to`` when given (both), else ``range`` (default ``all``)."""
    if from_ is not None or to is not None:
        if from_ is None or to is None:
            missing = "from" if from_ is None else "to"
            raise InvalidWindow(missing, f"Invalid parameter {missing}: from and to go together.")
        first, last = _day(from_, "from"), _day(to, "to")
        if last < first:
            raise InvalidWindow("to", "Invalid parameter to: it is before from.")
        return Window(local_midnight(first, zone), local_midnight(last + timedelta(days=1), zone), zone)
    key = range_ or "all"
    if key not in RANGES:
        raise InvalidWindow("range", f"Invalid parameter range: use one of {', '.join(RANGES)}.")
    span = RANGES[key]
    if span is None:
        return Window(None, None, zone)
    return Window(now - span, now, zone)


def _day(text: str, name: str) -> date:
    try:
        if not _DATE.fullmatch(text):  # fromisoformat also takes week dates (2025-W01-1)
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError:
        raise InvalidWindow(name, f"Invalid parameter {name}: expected a date as YYYY-MM-DD.") from None
    if day.year < 1990 or day.year > 9000:
        raise InvalidWindow(name, f"Invalid parameter {name}: out of range.")
    return day


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant at which ``day`` begins in ``zone`` (where midnight falls in a daylight-saving
    gap, the instant the day really begins)."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def months(start: datetime, end: datetime, zone: ZoneInfo) -> Buckets:
    """``[start, end)`` as whole local calendar months and the edges around them."""
    local = start.astimezone(zone)
    first = date(local.year, local.month, 1)
    if local_midnight(first, zone) < start:
        first = next_month(first)
    # The latest month that begins by the end: the end's own, unless its first midnight came after
    # the end (a daylight-saving change at midnight), then the one before. Found at once, not by
    # walking from the first month (seven thousand years of months for the widest window).
    last = end.astimezone(zone)
    stop = date(last.year, last.month, 1)
    if local_midnight(stop, zone) > end:
        stop = _previous_month(stop)
    return _buckets(first, max(first, stop), start, end, zone)


def _previous_month(day: date) -> date:
    return date(day.year - (day.month == 1), (day.month - 2) % 12 + 1, 1)


def days(start: datetime, end: datetime, zone: ZoneInfo) -> Buckets:
    """``[start, end)`` as whole local calendar days and the edges around them."""
    local = start.astimezone(zone)
    first = local.date()
    if local_midnight(first, zone) < start:
        first += timedelta(days=1)
    last_local = end.astimezone(zone)
    stop = last_local.date()
    if stop < first:
        stop = first
    return _buckets(first, stop, start, end, zone)


def _buckets(first: date, stop: date, start: datetime, end: datetime, zone: ZoneInfo) -> Buckets:
    if stop <= first:  # no whole bucket: the edges are the whole window
        return Buckets(first, first, start, end, end, end)
    return Buckets(first, stop, start, local_midnight(first, zone), local_midnight(stop, zone), end)
