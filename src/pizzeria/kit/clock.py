"""Time is UTC and timezone-aware everywhere.

`utcnow()` reads the system clock. A deterministic simulation (tests/chaos/simulation.py) puts
a clock of its own in its place for a while with `use(clock)`, so that every timestamp the code
writes is one it chose; services never do. Code that takes a `Clock` (the embedded broker)
reads wall and monotonic time from it too."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime


class Clock:
    """Where time comes from: the system (`SYSTEM`), or a clock a simulation moves by hand."""

    def now(self) -> datetime:
        """The current time in UTC, timezone-aware."""
        return datetime.now(UTC)

    def time(self) -> float:
        """Seconds since the Unix epoch, as `time.time()`."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, as `time.monotonic()`."""
        return time.monotonic()


SYSTEM = Clock()


class _Reading:
    """What `utcnow` calls: a C-level partial on the hot path, not a method of SYSTEM."""

    now: Callable[[], datetime] = functools.partial(datetime.now, UTC)


def utcnow() -> datetime:
    """The current time in UTC, timezone-aware."""
    return _Reading.now()


@contextlib.contextmanager
def use(clock: Clock) -> Iterator[Clock]:
    """Inside the block every `utcnow()` of this process reads `clock` (for simulations)."""
    previous, _Reading.now = _Reading.now, clock.now
    try:
        yield clock
    finally:
        _Reading.now = previous


def as_utc(value: datetime) -> datetime:
    """Treat a naive datetime (as SQLite returns them) as UTC."""
    tz = value.tzinfo
    if tz is UTC:
        return value
    return value.replace(tzinfo=UTC) if tz is None else value.astimezone(UTC)
