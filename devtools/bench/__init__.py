"""``make bench``: speed and memory figures, one line each: ``name value unit``.

Each module of this package (other than ``__main__``) exposes ``run(ctx: BenchContext) ->
Iterator[Figure]``. Figures that are ratios compare two measurements taken in the same run, so they
mean something on any machine. Benchmarks never run in ``make test``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str

    def line(self) -> str:
        if isinstance(self.value, int) or float(self.value).is_integer():
            shown = f"{int(self.value)}"
        elif abs(self.value) >= 100:
            shown = f"{self.value:.0f}"
        else:
            shown = f"{self.value:.3g}"
        return f"{self.name} {shown} {self.unit}"


@dataclass
class BenchContext:
    """What every benchmark shares: an embedded PostgreSQL, the AWS emulator, scratch space."""

    database_url: str
    scratch: Any  # pathlib.Path
    aws_endpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def on_close(self, fn: Callable[[], None]) -> None:
        self._cleanups.append(fn)

    def close(self) -> None:
        while self._cleanups:
            self._cleanups.pop()()


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())
