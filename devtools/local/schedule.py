"""EventBridge schedule expressions, evaluated locally: ``rate(N unit)`` and the six-field
``cron(minutes hours day-of-month month day-of-week year)`` syntax, in UTC."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    )
}
# EventBridge numbers weekdays 1-7 from Sunday.
_DAYS = {d: i + 1 for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}


class ScheduleError(ValueError):
    pass


def rate_seconds(expression: str) -> int | None:
    """Seconds between firings of a ``rate(...)`` expression; None for other expressions."""
    m = _RATE.match(expression.strip())
    if not m:
        return None
    return int(m.group(1)) * _UNITS[m.group(2).rstrip("s")]


def _field(spec: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int] | None:
    """The values a cron field allows; None means any (``*`` or ``?``)."""
    if spec in ("*", "?"):
        return None
    values: set[int] = set()
    for part in spec.split(","):
        step = 1
        if "/" in part:
            part, step_s = part.split("/", 1)
            step = int(step_s)
        if part in ("*", ""):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, names), _value(b, names)
        else:
            start = _value(part, names)
            end = high if step > 1 else start
        if not (low <= start <= high and low <= end <= high):
            raise ScheduleError(f"cron value out of range in {spec!r}")
        values.update(range(start, end + 1, step))
    return values


def _value(token: str, names: dict[str, int] | None) -> int:
    token = token.strip().upper()
    if names and token in names:
        return names[token]
    try:
        return int(token)
    except ValueError as exc:
        raise ScheduleError(f"bad cron value {token!r}") from exc


@dataclass(frozen=True)
class Cron:
    minutes: set[int] | None
    hours: set[int] | None
    days: set[int] | None
    months: set[int] | None
    weekdays: set[int] | None  # 1 = Sunday .. 7 = Saturday
    years: set[int] | None

    @classmethod
    def parse(cls, expression: str) -> Cron:
        m = _CRON.match(expression.strip())
        if not m:
            raise ScheduleError(f"not a cron expression: {expression!r}")
        fields = m.group(1).split()
        if len(fields) != 6:
            raise ScheduleError("cron needs six fields: minutes hours day-of-month month day-of-week year")
        mi, ho, dom, mon, dow, yr = fields
        if dom != "?" and dow != "?":
            raise ScheduleError("cron: one of day-of-month and day-of-week must be '?'")
        return cls(
            _field(mi, 0, 59),
            _field(ho, 0, 23),
            _field(dom, 1, 31),
            _field(mon, 1, 12, _MONTHS),
            _field(dow, 1, 7, _DAYS),
            _field(yr, 1970, 2199),
        )

    def matches(self, when: datetime) -> bool:
        """Whether the schedule fires in the minute of ``when`` (UTC)."""
        weekday = (when.isoweekday() % 7) + 1  # Monday=1 ISO -> 2; Sunday=7 ISO -> 1
        checks = (
            (self.minutes, when.minute),
            (self.hours, when.hour),
            (self.days, when.day),
            (self.months, when.month),
            (self.weekdays, weekday),
            (self.years, when.year),
        )
        return all(allowed is None or value in allowed for allowed, value in checks)
